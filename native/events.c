/*
 * sidecar events in C (events.h): the C twin of sidecar/events.py, beside the framing of
 * frame.c.  Today one event: HTTP_REQUEST's scope fields packed straight from a parsed
 * HTTP/1.1 head (h1_pack_request), byte for byte as sidecar.events.pack packs them
 * (tests/http/test_h1_pack.py checks both over a corpus).
 *
 * msgpack formats written here (https://github.com/msgpack/msgpack/blob/master/spec.md), in
 * their shortest forms as msgpack-python writes them: fixstr a0-bf / str8 d9 / str16 da /
 * str32 db, bin8 c4 / bin16 c5 / bin32 c6 (bin has no fix form), fixarray 90-9f / array16 dc /
 * array32 dd.  Lengths are big-endian.
 */
#include "events.h"

#include <string.h>

/* msgpack headers in their shortest forms, as msgpack-python writes them: 1 to 5 bytes. */
static size_t mp_header(uint8_t *o, size_t n, uint8_t fix, size_t fix_max, uint8_t b8,
                        uint8_t b16, uint8_t b32) {
    if (n <= fix_max) { o[0] = (uint8_t)(fix | n); return 1; }
    if (b8 && n <= 0xff) { o[0] = b8; o[1] = (uint8_t)n; return 2; }
    if (n <= 0xffff) { o[0] = b16; o[1] = (uint8_t)(n >> 8); o[2] = (uint8_t)n; return 3; }
    o[0] = b32;
    o[1] = (uint8_t)(n >> 24); o[2] = (uint8_t)(n >> 16); o[3] = (uint8_t)(n >> 8); o[4] = (uint8_t)n;
    return 5;
}
static size_t mp_str(uint8_t *o, size_t n) { return mp_header(o, n, 0xa0, 31, 0xd9, 0xda, 0xdb); }
static size_t mp_bin(uint8_t *o, size_t n) {   /* bin has no fix form: bin8 from 0 bytes */
    if (n <= 0xff) { o[0] = 0xc4; o[1] = (uint8_t)n; return 2; }
    return mp_header(o, n, 0, 0, 0, 0xc5, 0xc6);   /* n > 0xff: neither fix nor 8-bit */
}
static size_t mp_array(uint8_t *o, size_t n) { return mp_header(o, n, 0x90, 15, 0, 0xdc, 0xdd); }

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (uint8_t)(c | 0x20);   /* 'A'-'F' -> 'a'-'f'; digits were taken above */
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Percent-decode s[0:n] into o as urllib.parse.unquote_to_bytes does (a '%' not followed by
 * two hex digits stays as it is); returns the length written (at most n). */
static size_t percent_decode(const uint8_t *s, size_t n, uint8_t *o) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            o[k++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else {
            o[k++] = s[i];
        }
    }
    return k;
}

/* s[0:n] is UTF-8 as Python's strict decoder takes it: no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
static int utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;
            else if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            else if (c == 0xf4) hi = 0x8f;
        } else return 0;
        if (n - i <= k) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf) return 0;
        i += k + 1;
    }
    return 1;
}

#define ROOM(n) do { if ((size_t)(end - o) < (size_t)(n)) return H1_DECLINE; } while (0)
#define COPY(s, n) do { ROOM(n); memcpy(o, (s), (n)); o += (n); } while (0)

int64_t h1_pack_request(const char *cbuf, size_t start, const h1_head_t *head, const char *scheme,
                        size_t scheme_len, const char *addrs, size_t addrs_len,
                        const char *root, size_t root_len, char *cout, size_t out_cap) {
    const uint8_t *buf = (const uint8_t *)cbuf;
    const int64_t *facts = head->facts;
    uint8_t *o = (uint8_t *)cout;
    const uint8_t *const end = o + out_cap;
    size_t method_end = (size_t)facts[H1_METHOD_END], path_end = (size_t)facts[H1_PATH_END],
           target_end = (size_t)facts[H1_TARGET_END];
    const uint8_t *method = buf + start, *raw = buf + method_end + 1;
    size_t method_len = method_end - start, raw_len = path_end - method_end - 1;

    ROOM(6);
    o += mp_str(o, method_len);
    COPY(method, method_len);
    COPY(scheme, scheme_len);

    /* path: root + the decoded path, as a str; decoded in place after a 5-byte header gap */
    ROOM(5 + root_len + 2 * raw_len);
    uint8_t *text = o + 5;
    memcpy(text, root, root_len);
    size_t plen = root_len;
    if (facts[H1_PATH_PERCENT]) {
        uint8_t *dec = text + root_len;
        size_t dlen = percent_decode(raw, raw_len, dec);
        if (!utf8_ok(dec, dlen)) {
            /* latin-1: each byte is its code point; widen from the back, in place */
            size_t wide = dlen;
            for (size_t i = 0; i < dlen; i++) wide += dec[i] >= 0x80;
            for (size_t i = dlen, j = wide; i > 0;) {
                uint8_t c = dec[--i];
                if (c < 0x80) dec[--j] = c;
                else { dec[--j] = (uint8_t)(0x80 | (c & 0x3f)); dec[--j] = (uint8_t)(0xc0 | (c >> 6)); }
            }
            dlen = wide;
        }
        plen += dlen;
    } else {
        memcpy(text + root_len, raw, raw_len);   /* ASCII: h1_parse_head took nothing else */
        plen += raw_len;
    }
    size_t h = mp_str(o, plen);
    memmove(o + h, text, plen);
    o += h + plen;

    /* raw_path: root + the path as sent */
    ROOM(5 + root_len + raw_len);
    o += mp_bin(o, root_len + raw_len);
    memcpy(o, root, root_len);
    memcpy(o + root_len, raw, raw_len);
    o += root_len + raw_len;

    /* query_string */
    size_t qlen = target_end > path_end ? target_end - path_end - 1 : 0;
    ROOM(5 + qlen);
    o += mp_bin(o, qlen);
    memcpy(o, buf + path_end + 1, qlen);
    o += qlen;

    /* headers: [[name, value], ...], names lowercased (from head->fields), values trimmed */
    size_t nf = (size_t)facts[H1_FIELDS];
    ROOM(5);
    o += mp_array(o, nf);
    const uint8_t *f = (const uint8_t *)head->fields;
    for (size_t i = 0; i < nf; i++) {
        const uint32_t *sp = head->spans + 4 * i;
        size_t nlen = sp[1] - sp[0], vlen = sp[3] - sp[2];
        ROOM(1 + 5 + nlen + 5 + vlen);
        *o++ = 0x92;
        o += mp_bin(o, nlen);
        memcpy(o, f, nlen);
        o += nlen;
        o += mp_bin(o, vlen);
        memcpy(o, f + nlen + 1, vlen);
        o += vlen;
        f += nlen + vlen + 2;
    }

    COPY(addrs, addrs_len);
    ROOM(4 + 5 + root_len);
    memcpy(o, facts[H1_MINOR] ? "\xa3" "1.1" : "\xa3" "1.0", 4);
    o += 4;
    o += mp_str(o, root_len);
    memcpy(o, root, root_len);
    o += root_len;
    return (int64_t)(o - (uint8_t *)cout);
}

int64_t h1_parse_request(const char *buf, size_t start, size_t len, const h1_limits_t *limits,
                         h1_head_t *head, const h1_scope_t *scope, char *out, size_t out_cap) {
    int64_t size = h1_parse_head(buf, start, len, limits, head);
    head->facts[H1_PACKED] = -1;
    if (size <= 0 || scope == NULL || (scope->rescope && head->facts[H1_FORWARDED]))
        return size;
    int64_t n = h1_pack_request(buf, start, head, scope->scheme, scope->scheme_len,
                                scope->addrs, scope->addrs_len, scope->root, scope->root_len,
                                out, out_cap);
    head->facts[H1_PACKED] = n > 0 ? n : -1;
    return size;
}
