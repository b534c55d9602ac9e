/*
 * sidecar HTTP/1.1 request heads, fast path (h1.h); response heads at the end of the file.
 * One pass over the head: request line, then field lines, then the framing decisions
 * sidecar/http/h1.py makes in _on_head.  The rule throughout: when in doubt, H1_DECLINE.
 * A decline costs one Python parse; a wrong accept would be a request the Python path
 * refuses, or one it reads differently.
 *
 * The Python parser's rules these mirror are in the docstring of sidecar/http/h1.py; the
 * differential test (tests/http/test_h1_speedups.py) checks that every head accepted here
 * gives the Request the Python path gives.
 */
#include "h1.h"

#include <string.h>

/* Byte classes (one table, a bit per class). */
#define TCHAR 1   /* token (RFC 9110 5.6.2): field names */
#define TARGET 2  /* origin-form target: unreserved sub-delims : @ / ? % (RFC 3986) */
#define VALUE 4   /* field value byte: HTAB, SP, VCHAR, obs-text */
#define HOST 8    /* reg-name (and IP-literal, with ':') of a Host value */

static const uint8_t CLASS[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0,  /* 00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10 */
     4, 15,  4,  5, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15,  6,  /* 20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6, 14,  4, 14,  4,  6,  /* 30 */
     6, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  /* 40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  4,  4,  4,  5, 15,  /* 50 */
     5, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  /* 60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  4,  5,  4, 15,  0,  /* 70 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 80 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 90 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* a0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* b0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* c0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* d0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* e0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* f0 */
};

static inline uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c; }
static inline int ows(uint8_t c) { return c == ' ' || c == '\t'; }

/* s[0:n] equals the lowercase word w (ASCII case-insensitively, as bytes.lower() compares). */
static int eq_lower(const uint8_t *s, size_t n, const char *w) {
    size_t k = strlen(w);
    if (n != k) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != (uint8_t)w[i]) return 0;
    return 1;
}

/* Methods llhttp knows and the Python path serves (not CONNECT: 501 there). */
static int known_method(const uint8_t *m, size_t n) {
    switch (n) {
    case 3: return !memcmp(m, "GET", 3) || !memcmp(m, "PUT", 3);
    case 4: return !memcmp(m, "HEAD", 4) || !memcmp(m, "POST", 4);
    case 5: return !memcmp(m, "PATCH", 5);
    case 6: return !memcmp(m, "DELETE", 6);
    case 7: return !memcmp(m, "OPTIONS", 7);
    default: return 0;
    }
}

/* uri-host [":" port], the Python path's _HOST regex, whole value. */
static int host_ok(const uint8_t *v, size_t n) {
    size_t i = 0;
    if (n && v[0] == '[') {  /* IP-literal: 1+ of the reg-name bytes or ':', then ']' */
        for (i = 1; i < n && ((CLASS[v[i]] & HOST) || v[i] == ':'); i++) {}
        if (i == 1 || i == n || v[i] != ']') return 0;
        i++;
    } else {
        while (i < n && (CLASS[v[i]] & HOST)) i++;
    }
    if (i < n && v[i] == ':')
        for (i++; i < n && v[i] >= '0' && v[i] <= '9'; i++) {}
    return i == n;
}

/* Connection tokens (comma-separated, SP/HTAB around each, any case). */
#define CONN_CLOSE 1
#define CONN_KEEP_ALIVE 2
#define CONN_UPGRADE 4
static int connection_tokens(const uint8_t *v, size_t n) {
    int seen = 0;
    size_t i = 0;
    for (;;) {
        size_t a = i;
        while (i < n && v[i] != ',') i++;
        size_t b = i;
        while (a < b && ows(v[a])) a++;
        while (b > a && ows(v[b - 1])) b--;
        if (eq_lower(v + a, b - a, "close")) seen |= CONN_CLOSE;
        else if (eq_lower(v + a, b - a, "keep-alive")) seen |= CONN_KEEP_ALIVE;
        else if (eq_lower(v + a, b - a, "upgrade")) seen |= CONN_UPGRADE;
        if (i == n) return seen;
        i++;
    }
}

int64_t h1_parse_head(const char *cbuf, size_t start, size_t len, const h1_limits_t *limits,
                      h1_head_t *parsed) {
    const uint8_t *buf = (const uint8_t *)cbuf;
    int64_t *facts = parsed->facts;
    uint32_t *spans = parsed->spans;
    char *fields = parsed->fields;
    size_t fields_cap = parsed->fields_cap;
    if (start > len || len > UINT32_MAX) return H1_DECLINE;
    /* Only the first max_header_bytes may be the head; running out of bytes there is a
     * limit the Python path applies (decline), before it just means "wait for more". */
    size_t avail = len - start;
    int capped = avail > limits->max_header_bytes;
    const int64_t short_ = capped ? H1_DECLINE : H1_INCOMPLETE;
    const uint8_t *const head = buf + start;
    const uint8_t *const end = head + (capped ? limits->max_header_bytes : avail);
    const uint8_t *p = head;

    /* request line: method SP */
    while (p < end && p - head < 8 && *p != ' ') p++;
    if (p == end) return short_;
    if (*p != ' ' || !known_method(head, (size_t)(p - head))) return H1_DECLINE;
    facts[H1_METHOD_END] = (int64_t)(p - buf);
    p++;

    /* origin-form target SP */
    const uint8_t *target = p, *query = NULL;
    int percent = 0;
    if (p < end && *p != '/') return H1_DECLINE;
    for (; p < end && (CLASS[*p] & TARGET); p++) {
        if (*p == '?') {
            if (!query) query = p;
        } else if (*p == '%' && !query) {
            percent = 1;
        }
    }
    if (p == end) return (size_t)(p - head) > limits->max_request_line ? H1_DECLINE : short_;
    if (*p != ' ' || p == target) return H1_DECLINE;
    facts[H1_TARGET_END] = (int64_t)(p - buf);
    facts[H1_PATH_END] = (int64_t)((query ? query : p) - buf);
    facts[H1_PATH_PERCENT] = percent;
    p++;

    /* HTTP/1.1 or HTTP/1.0, CRLF */
    if (end - p < 10) {
        /* whatever arrived must be a prefix of a version we take */
        size_t have = (size_t)(end - p);
        if (memcmp(p, "HTTP/1.1\r\n", have < 7 ? have : 7)) return H1_DECLINE;
        return short_;
    }
    if (memcmp(p, "HTTP/1.", 7) || (p[7] != '1' && p[7] != '0') || p[8] != '\r' || p[9] != '\n')
        return H1_DECLINE;
    int minor = p[7] - '0';
    if ((size_t)(p + 8 - head) > limits->max_request_line) return H1_DECLINE;
    p += 10;

    /* field lines */
    uint32_t max_fields = limits->max_headers < H1_MAX_FIELDS ? limits->max_headers : H1_MAX_FIELDS;
    uint32_t nf = 0;
    size_t out = 0;
    int hosts = 0, te = 0, expects = 0, expect100 = 0, conn = 0, forwarded = 0;
    int64_t content_length = -1;
    const uint8_t *upgrade = NULL, *upgrade_end = NULL;
    for (;;) {
        if (p == end) return short_;
        if (*p == '\r') {   /* the empty line ends the head */
            if (end - p < 2) return short_;
            if (p[1] != '\n') return H1_DECLINE;
            p += 2;
            break;
        }
        const uint8_t *name = p;
        while (p < end && (CLASS[*p] & TCHAR)) p++;
        if (p == end) return short_;
        if (*p != ':' || p == name) return H1_DECLINE;  /* obs-fold, SP before ':', bare LF */
        const uint8_t *name_end = p++;
        while (p < end && ows(*p)) p++;
        const uint8_t *value = p;
        while (p < end && (CLASS[*p] & VALUE)) p++;
        if (end - p < 2) return (p < end && *p != '\r') ? H1_DECLINE : short_;
        if (p[0] != '\r' || p[1] != '\n') return H1_DECLINE;  /* CTL, bare CR */
        const uint8_t *value_end = p;
        while (value_end > value && ows(value_end[-1])) value_end--;
        p += 2;

        if (nf == max_fields) return H1_DECLINE;
        size_t nlen = (size_t)(name_end - name), vlen = (size_t)(value_end - value);
        if (fields_cap - out < nlen + vlen + 2 || fields_cap < out) return H1_DECLINE;
        uint8_t *lname = (uint8_t *)fields + out;
        for (size_t i = 0; i < nlen; i++) lname[i] = lower(name[i]);
        lname[nlen] = 0;
        memcpy(lname + nlen + 1, value, vlen);
        lname[nlen + 1 + vlen] = 0;
        out += nlen + vlen + 2;
        spans[4 * nf] = (uint32_t)(name - buf);
        spans[4 * nf + 1] = (uint32_t)(name_end - buf);
        spans[4 * nf + 2] = (uint32_t)(value - buf);
        spans[4 * nf + 3] = (uint32_t)(value_end - buf);
        nf++;

        /* the fields the Python path acts on (its _FRAMING_FIELDS) */
        switch (nlen) {
        case 4:
            if (!memcmp(lname, "host", 4)) {
                if (++hosts > 1 || !host_ok(value, vlen)) return H1_DECLINE;
            }
            break;
        case 6:
            if (!memcmp(lname, "expect", 6)) {
                expects++;
                expect100 = eq_lower(value, vlen, "100-continue");
            }
            break;
        case 7:
            if (!memcmp(lname, "upgrade", 7)) {
                if (upgrade) return H1_DECLINE;   /* the Python path joins them */
                upgrade = value;
                upgrade_end = value_end;
            }
            break;
        case 9:
            if (!memcmp(lname, "forwarded", 9)) forwarded = 1;
            break;
        case 10:
            if (!memcmp(lname, "connection", 10)) conn |= connection_tokens(value, vlen);
            break;
        case 15:
            if (!memcmp(lname, "x-forwarded-for", 15)) forwarded = 1;
            break;
        case 14:
            if (!memcmp(lname, "content-length", 14)) {
                if (content_length >= 0 || vlen < 1 || vlen > 18) return H1_DECLINE;
                content_length = 0;
                for (size_t i = 0; i < vlen; i++) {
                    if (value[i] < '0' || value[i] > '9') return H1_DECLINE;
                    content_length = content_length * 10 + (value[i] - '0');
                }
            }
            break;
        case 17:
            if (!memcmp(lname, "transfer-encoding", 17)) {
                if (te || !eq_lower(value, vlen, "chunked")) return H1_DECLINE;
                te = 1;
            } else if (!memcmp(lname, "x-forwarded-proto", 17)) {
                forwarded = 1;
            }
            break;
        default:
            break;
        }
    }

    if (hosts != 1 && (hosts || minor == 1)) return H1_DECLINE;
    if (te && (content_length >= 0 || minor == 0)) return H1_DECLINE;
    if (limits->max_body >= 0 && content_length > limits->max_body) return H1_DECLINE;

    facts[H1_MINOR] = minor;
    facts[H1_FIELDS] = nf;
    facts[H1_FIELDS_LEN] = nf ? (int64_t)out - 1 : 0;   /* no NUL after the last value */
    facts[H1_CONTENT_LENGTH] = content_length;
    facts[H1_CHUNKED] = te;
    facts[H1_KEEP_ALIVE] = !(conn & CONN_CLOSE) && (minor == 1 || (conn & CONN_KEEP_ALIVE));
    facts[H1_EXPECT_CONTINUE] = minor == 1 && expects == 1 && expect100;
    if (upgrade && (conn & CONN_UPGRADE) && minor == 1 && !te && content_length <= 0) {
        facts[H1_UPGRADE_START] = (int64_t)(upgrade - buf);
        facts[H1_UPGRADE_END] = (int64_t)(upgrade_end - buf);
    } else {
        facts[H1_UPGRADE_START] = facts[H1_UPGRADE_END] = -1;
    }
    facts[H1_HOSTS] = hosts;
    facts[H1_FORWARDED] = forwarded;
    return (int64_t)(p - head);
}

/* --- response heads (h1.h: h1_response_head) ------------------------------------------- */

/* s[0:n] holds "close" in any case (the Python twin: b"close" in value.lower()). */
static int has_close(const uint8_t *s, size_t n) {
    for (size_t i = 0; i + 5 <= n; i++)
        if (lower(s[i]) == 'c' && eq_lower(s + i, 5, "close")) return 1;
    return 0;
}

/* No CR, LF or NUL in s[0:n]: what a field value we write may not hold. */
static int value_ok(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == 0) return 0;
    return 1;
}

/* Append s[0:n] at *o if it fits before end; 0 when it does not. */
static int put(char **o, const char *end, const void *s, size_t n) {
    if ((size_t)(end - *o) < n) return 0;
    memcpy(*o, s, n);
    *o += n;
    return 1;
}

#define PUT(s, n) do { if (!put(&o, end, (s), (n))) return H1_DECLINE; } while (0)
#define PUTS(lit) PUT(lit, sizeof(lit) - 1)

int64_t h1_response_head(int status, const char *status_line, size_t status_line_len,
                         const char *fields, size_t fields_len, size_t nfields,
                         unsigned flags, const char *date, size_t date_len,
                         const char *server, size_t server_len,
                         char *out, size_t out_cap, int64_t *resp) {
    const uint8_t *p = (const uint8_t *)fields, *fend = p + fields_len;
    char *o = out;
    const char *end = out + out_cap;
    int switching = status == 101;
    int keep = (flags & H1_RESP_KEEP_ALIVE) != 0;
    int has_date = date == NULL, has_server = server == NULL;
    int64_t content_length = -1;

    if (status < 100 || status > 599) return H1_DECLINE;
    if ((date && !value_ok((const uint8_t *)date, date_len)) ||
        (server && !value_ok((const uint8_t *)server, server_len)))
        return H1_DECLINE;
    PUT(status_line, status_line_len);
    for (size_t k = 0; k < nfields; k++) {
        /* a field line: name NUL value, then LF unless it is the last */
        const uint8_t *name = p, *value, *vend;
        while (p < fend && *p && *p != '\n') p++;
        if (p == fend || *p != 0) return H1_DECLINE;   /* no NUL in this pair */
        size_t nlen = (size_t)(p - name);
        value = ++p;
        while (p < fend && *p && *p != '\n') p++;
        vend = p;
        if (k + 1 < nfields) {
            if (p == fend || *p != '\n') return H1_DECLINE;   /* fewer pairs, or 2 NULs */
            p++;
        } else if (p != fend) {
            return H1_DECLINE;                  /* more pairs than nfields, or a NUL */
        }
        size_t vlen = (size_t)(vend - value);
        if (nlen == 0) return H1_DECLINE;
        for (size_t i = 0; i < nlen; i++)
            if (!(CLASS[name[i]] & TCHAR)) return H1_DECLINE;
        if (!value_ok(value, vlen)) return H1_DECLINE;   /* CR (NUL, LF: split above) */
        int special = 0;   /* 1: the server writes this field itself */
        switch (nlen) {
        case 4:
            if (eq_lower(name, 4, "date")) has_date = 1;
            break;
        case 6:
            if (eq_lower(name, 6, "server")) has_server = 1;
            break;
        case 10:
            if (!switching && eq_lower(name, 10, "connection")) {
                special = 1;
                if (has_close(value, vlen)) keep = 0;
            }
            break;
        case 14:
            if (eq_lower(name, 14, "content-length")) {
                const uint8_t *v = value, *ve = vend;
                while (v < ve && ows(*v)) v++;
                while (ve > v && ows(ve[-1])) ve--;
                size_t n = (size_t)(ve - v);
                if (n < 1 || n > 18) return H1_DECLINE;
                int64_t cl = 0;
                for (size_t i = 0; i < n; i++) {
                    if (v[i] < '0' || v[i] > '9') return H1_DECLINE;
                    cl = cl * 10 + (v[i] - '0');
                }
                if (content_length >= 0 && cl != content_length) return H1_DECLINE;
                content_length = cl;
            }
            break;
        case 17:
            if (!switching && eq_lower(name, 17, "transfer-encoding")) special = 1;
            break;
        default:
            break;
        }
        if (special) continue;
        PUT(name, nlen);
        PUTS(": ");
        PUT(value, vlen);
        PUTS("\r\n");
    }
    if (p != fend) return H1_DECLINE;   /* nfields == 0 with fields given */

    /* framing (the twin: response_framing) */
    int chunked = 0;
    int64_t length;
    if ((flags & H1_RESP_HEAD_REQUEST) || status < 200 || status == 204 || status == 304) {
        length = 0;
    } else if (content_length >= 0) {
        length = content_length;
    } else {
        chunked = !(flags & H1_RESP_HTTP10);
        length = -1;
        if (!chunked) keep = 0;   /* HTTP/1.0 without a length: the close ends the body */
    }

    if (!has_server) {
        PUTS("server: ");
        PUT(server, server_len);
        PUTS("\r\n");
    }
    if (!has_date) {
        PUTS("date: ");
        PUT(date, date_len);
        PUTS("\r\n");
    }
    if (!switching) {
        if (!keep)
            PUTS("connection: close\r\n");
        else if (flags & H1_RESP_HTTP10)
            PUTS("connection: keep-alive\r\n");
        if (chunked && !(flags & H1_RESP_HEAD_REQUEST))
            PUTS("transfer-encoding: chunked\r\n");
    }
    PUTS("\r\n");
    resp[H1_RESP_CHUNKED] = chunked;
    resp[H1_RESP_LENGTH] = length;
    resp[H1_RESP_KEEP] = keep;
    return (int64_t)(o - out);
}

int64_t h1_response(int status, const char *status_line, size_t status_line_len,
                    const char *fields, size_t fields_len, size_t nfields,
                    unsigned flags, const char *date, size_t date_len,
                    const char *server, size_t server_len, const char *body, size_t body_len,
                    char *out, size_t out_cap, int64_t *resp) {
    int64_t n = h1_response_head(status, status_line, status_line_len, fields, fields_len,
                                 nfields, flags, date, date_len, server, server_len, out,
                                 out_cap, resp);
    if (n <= 0 || (flags & H1_RESP_HEAD_REQUEST)) return n;   /* a HEAD answer has no body */
    char *o = out + n;
    const char *end = out + out_cap;
    if (resp[H1_RESP_CHUNKED]) {
        if (body_len) {   /* the twin: encode_chunk, "%x\r\n" data "\r\n" */
            char hex[16];
            int k = 0;
            for (size_t v = body_len; v; v >>= 4) hex[k++] = "0123456789abcdef"[v & 15];
            char size[18];
            for (int i = 0; i < k; i++) size[i] = hex[k - 1 - i];
            size[k] = '\r';
            size[k + 1] = '\n';
            PUT(size, (size_t)k + 2);
            PUT(body, body_len);
            PUTS("\r\n");
        }
        PUTS("0\r\n\r\n");
    } else {
        PUT(body, body_len);
    }
    return (int64_t)(o - out);
}
