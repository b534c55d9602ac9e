/*
 * h1_unit -- tests of the request-head fast path (native/h1.c), pure C, for the ASan/UBSan
 * build: a table of heads with the result and facts they must give, every prefix of the
 * accepted ones (H1_INCOMPLETE), the limits at their exact boundaries, then random and mutated
 * heads with every input, fields and spans buffer malloc'ed to its exact size so that any
 * access past an end is caught, and the outputs of every accepted head checked against the
 * input, and each one's h1_pack_request fields found to be ten well-formed msgpack values,
 * the same bytes or declined in tighter buffers of exact size, and declined one byte short.
 * (tests/http/test_h1_speedups.py and test_h1_pack.py compare the same functions with the
 * Python parser and msgpack.)
 *
 *   h1_unit [--iterations N]   print "h1_unit OK ..." and exit 0, or FAIL lines and 1
 */
#include "h1.h"
#include "events.h"
#include "frame.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

static const h1_limits_t DEFAULT_LIMITS = {8192, 65536, 100, -1};

typedef h1_head_t out_t;

/* h1_parse_head on an exact-size copy of s[0:n], outputs in exact-size buffers */
static int64_t parse(const char *s, size_t n, size_t start, const h1_limits_t *lim, out_t *o,
                     size_t fields_cap) {
    char *copy = malloc(n ? n : 1);
    if (!copy) abort();
    memcpy(copy, s, n);
    memset(o, 0xa5, sizeof *o);   /* garbage in every output the call may not fill */
    o->fields = malloc(fields_cap ? fields_cap : 1);
    o->fields_cap = fields_cap;
    if (!o->fields) abort();
    int64_t r = h1_parse_head(copy, start, n, lim, o);
    free(copy);
    return r;
}

static void release(out_t *o) { free(o->fields); }

static uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c; }

/* Everything an accepted head's outputs promise, checked against the input. */
static void check_accepted(const char *what, const uint8_t *s, size_t n, size_t start,
                           int64_t r, const out_t *o) {
    const int64_t *f = o->facts;
    size_t end = start + (size_t)r;
    if (r < 18 || end > n || memcmp(s + end - 4, "\r\n\r\n", 4)) {
        FAIL("%s: head length %" PRId64 " of %zu", what, r, n - start);
        return;
    }
    if (!(f[H1_METHOD_END] > (int64_t)start && f[H1_PATH_END] <= f[H1_TARGET_END]
          && f[H1_METHOD_END] < f[H1_PATH_END] && f[H1_TARGET_END] < (int64_t)end
          && s[f[H1_METHOD_END]] == ' ' && s[f[H1_METHOD_END] + 1] == '/'
          && s[f[H1_TARGET_END]] == ' '))
        FAIL("%s: request line spans", what);
    if (f[H1_PATH_END] < f[H1_TARGET_END] && s[f[H1_PATH_END]] != '?')
        FAIL("%s: query span", what);
    if ((f[H1_MINOR] != 0 && f[H1_MINOR] != 1) || f[H1_FIELDS] < 0
        || f[H1_FIELDS] > H1_MAX_FIELDS || (f[H1_CHUNKED] && f[H1_CONTENT_LENGTH] >= 0))
        FAIL("%s: facts", what);
    size_t pos = 0;
    for (int64_t i = 0; i < f[H1_FIELDS]; i++) {
        const uint32_t *sp = o->spans + 4 * i;
        if (!(sp[0] > start && sp[0] < sp[1] && sp[1] < sp[2] && sp[2] <= sp[3] && sp[3] < end
              && s[sp[1]] == ':')) {
            FAIL("%s: spans of field %" PRId64, what, i);
            return;
        }
        size_t nl = sp[1] - sp[0], vl = sp[3] - sp[2];
        if (pos + nl + vl + 1 > o->fields_cap) {
            FAIL("%s: fields overflow", what);
            return;
        }
        for (size_t k = 0; k < nl; k++)
            if ((uint8_t)o->fields[pos + k] != lower(s[sp[0] + k])) FAIL("%s: lowercased name", what);
        if (o->fields[pos + nl] != 0 || memcmp(o->fields + pos + nl + 1, s + sp[2], vl))
            FAIL("%s: field %" PRId64 " value", what, i);
        if (vl && (s[sp[2]] == ' ' || s[sp[2]] == '\t' || s[sp[3] - 1] == ' ' || s[sp[3] - 1] == '\t'))
            FAIL("%s: value not trimmed", what);
        pos += nl + vl + 2;
    }
    if (f[H1_FIELDS_LEN] != (f[H1_FIELDS] ? (int64_t)pos - 1 : 0)) FAIL("%s: fields length", what);
    if (f[H1_UPGRADE_START] >= 0 && !(f[H1_UPGRADE_START] <= f[H1_UPGRADE_END]
                                      && f[H1_UPGRADE_END] < (int64_t)end))
        FAIL("%s: upgrade span", what);
}

/* h1_pack_request for an accepted head: with the input and the output each in a buffer of
 * its exact size, the same bytes as with room to spare, ten msgpack values (an array header
 * in front makes it one value), declined with one byte less. */
static void check_packed(const char *what, const uint8_t *s, size_t n, size_t start,
                         const out_t *o) {
    static const char *const ROOTS[] = {"", "/api", "/r\xc3\xa9", "/x%41"};
    static const char SCHEME[] = "\xa4http";
    static const char ADDRS[] = "\x92\xa9" "127.0.0.1" "\xcd\x13\x88\xc0";   /* [..., 5000], nil */
    const char *root = ROOTS[next() % 4];
    char *copy = malloc(n ? n : 1);
    char *big = malloc(1 << 17);
    if (!copy || !big) abort();
    memcpy(copy, s, n);
    int64_t len = h1_pack_request(copy, start, o, SCHEME, sizeof SCHEME - 1, ADDRS,
                                  sizeof ADDRS - 1, root, strlen(root), big + 1, (1 << 17) - 1);
    if (len <= 0) {
        FAIL("%s: h1_pack_request declined with room: %" PRId64, what, len);
    } else {
        big[0] = (char)0x9a;   /* array of 10 */
        if (frame_value_len((const uint8_t *)big, (uint32_t)len + 1) != (uint32_t)len + 1)
            FAIL("%s: packed fields are not ten msgpack values", what);
        /* tighter buffers: the same bytes or a decline (it wants slack to decode the path
         * in place), never a write past the end (ASan) */
        for (size_t cap = (size_t)len + 8; cap + 1 > (size_t)len; cap--) {
            char *tight = malloc(cap ? cap : 1);
            if (!tight) abort();
            int64_t r = h1_pack_request(copy, start, o, SCHEME, sizeof SCHEME - 1, ADDRS,
                                        sizeof ADDRS - 1, root, strlen(root), tight, cap);
            if (r != H1_DECLINE && (r != len || memcmp(tight, big + 1, (size_t)len)))
                FAIL("%s: packed differently into %zu bytes", what, cap);
            free(tight);
            if (cap == 0) break;
        }
        char *short_ = malloc((size_t)len - 1 ? (size_t)len - 1 : 1);
        if (!short_) abort();
        if (h1_pack_request(copy, start, o, SCHEME, sizeof SCHEME - 1, ADDRS, sizeof ADDRS - 1,
                            root, strlen(root), short_, (size_t)len - 1) != H1_DECLINE)
            FAIL("%s: packed into a buffer one byte short", what);
        free(short_);
    }
    free(big);
    free(copy);
}

/* ---- the table ---- */

enum { ACCEPT, INCOMPLETE, DECLINE };
typedef struct {
    const char *name;
    const char *head;
    int want;
    int64_t cl, chunked, keep_alive, expect, upgrade, minor; /* ACCEPT only; -2: don't care */
} case_t;

#define H "Host: a\r\n"
#define X -2
static const case_t CASES[] = {
    {"wrk", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n", ACCEPT, -1, 0, 1, 0, 0, 1},
    {"http/1.0 no host", "GET / HTTP/1.0\r\n\r\n", ACCEPT, -1, 0, 0, 0, 0, 0},
    {"1.0 keep-alive", "HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", ACCEPT, -1, 0, 1, 0, 0, 0},
    {"close", "GET / HTTP/1.1\r\n" H "Connection: keep-alive, close\r\n\r\n", ACCEPT, -1, 0, 0, 0, 0, 1},
    {"content-length", "POST / HTTP/1.1\r\n" H "Content-Length: 0012\r\n\r\n", ACCEPT, 12, 0, 1, 0, 0, 1},
    {"chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: Chunked\r\n\r\n", ACCEPT, -1, 1, 1, 0, 0, 1},
    {"expect", "PUT / HTTP/1.1\r\n" H "Expect:  100-CONTINUE \t\r\n\r\n", ACCEPT, -1, 0, 1, 1, 0, 1},
    {"expect twice", "PUT / HTTP/1.1\r\n" H "Expect: 100-continue\r\nExpect: 100-continue\r\n\r\n", ACCEPT, -1, 0, 1, 0, 0, 1},
    {"expect on 1.0", "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", ACCEPT, -1, 0, 0, 0, 0, 0},
    {"websocket", "GET /ws HTTP/1.1\r\n" H "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", ACCEPT, -1, 0, 1, 0, 1, 1},
    {"upgrade without connection", "GET / HTTP/1.1\r\n" H "Upgrade: websocket\r\n\r\n", ACCEPT, -1, 0, 1, 0, 0, 1},
    {"upgrade with body", "POST / HTTP/1.1\r\n" H "Connection: upgrade\r\nUpgrade: x\r\nContent-Length: 1\r\n\r\n", ACCEPT, 1, 0, 1, 0, 0, 1},
    {"upgrade, empty body", "POST / HTTP/1.1\r\n" H "Connection: upgrade\r\nUpgrade: x\r\nContent-Length: 0\r\n\r\n", ACCEPT, 0, 0, 1, 0, 1, 1},
    {"ipv6 host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", ACCEPT, X, X, X, X, X, X},
    {"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", ACCEPT, X, X, X, X, X, X},
    {"obs-text value", "GET / HTTP/1.1\r\n" H "X: \xc3\xa9\x80\xff\r\n\r\n", ACCEPT, X, X, X, X, X, X},
    {"query and percent", "GET /a%20b?c=%41?d HTTP/1.1\r\n" H "\r\n", ACCEPT, X, X, X, X, X, X},
    {"18-digit length", "POST / HTTP/1.1\r\n" H "Content-Length: 999999999999999999\r\n\r\n", ACCEPT, 999999999999999999LL, 0, 1, 0, 0, 1},
    {"partial line", "GET / HTTP/1.1\r\nHo", INCOMPLETE, X, X, X, X, X, X},
    {"partial version", "GET / HTTP/1.", INCOMPLETE, X, X, X, X, X, X},
    {"empty", "", INCOMPLETE, X, X, X, X, X, X},
    {"leading CRLF", "\r\nGET / HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"unknown method", "PROPFIND / HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"lowercase method", "get / HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"CONNECT", "CONNECT a:1 HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"asterisk", "OPTIONS * HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"absolute-form", "GET http://a/ HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"fragment", "GET /#a HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"non-ascii target", "GET /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"http/1.2", "GET / HTTP/1.2\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"double space", "GET  / HTTP/1.1\r\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"no host", "GET / HTTP/1.1\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"two hosts", "GET / HTTP/1.1\r\n" H H "\r\n", DECLINE, X, X, X, X, X, X},
    {"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"host userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"unclosed ipv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"two lengths", "POST / HTTP/1.1\r\n" H "Content-Length: 1\r\nContent-Length: 1\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"length list", "POST / HTTP/1.1\r\n" H "Content-Length: 1, 1\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"19-digit length", "POST / HTTP/1.1\r\n" H "Content-Length: 1000000000000000000\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"signed length", "POST / HTTP/1.1\r\n" H "Content-Length: +1\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"te and cl", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"te gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"te on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"two upgrades", "GET / HTTP/1.1\r\n" H "Upgrade: a\r\nUpgrade: b\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"obs-fold", "GET / HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"empty name", "GET / HTTP/1.1\r\n" H ": a\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"no colon", "GET / HTTP/1.1\r\n" H "X\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"bare CR", "GET / HTTP/1.1\r\n" H "X: a\rb\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"bare LF", "GET / HTTP/1.1\n" H "\r\n", DECLINE, X, X, X, X, X, X},
    {"bare LF in value", "GET / HTTP/1.1\r\n" H "X: a\nb\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"DEL in value", "GET / HTTP/1.1\r\n" H "X: \x7f\r\n\r\n", DECLINE, X, X, X, X, X, X},
    {"CR CR", "GET / HTTP/1.1\r\n" H "\r\r\n", DECLINE, X, X, X, X, X, X},
    {"TLS", "\x16\x03\x01\x02\x01\x01\x05\x01\xfc\x03\x03", DECLINE, X, X, X, X, X, X},
};

static void table(void) {
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const case_t *k = &CASES[c];
        size_t n = strlen(k->head);
        out_t o;
        int64_t r = parse(k->head, n, 0, &DEFAULT_LIMITS, &o, 1 << 16);
        int got = r > 0 ? ACCEPT : r == H1_INCOMPLETE ? INCOMPLETE : DECLINE;
        if (got != k->want) {
            FAIL("%s: result %" PRId64, k->name, r);
        } else if (got == ACCEPT) {
            check_accepted(k->name, (const uint8_t *)k->head, n, 0, r, &o);
            check_packed(k->name, (const uint8_t *)k->head, n, 0, &o);
            const int64_t *f = o.facts;
            int64_t up = f[H1_UPGRADE_START] >= 0;
            if ((k->cl != X && f[H1_CONTENT_LENGTH] != k->cl)
                || (k->chunked != X && f[H1_CHUNKED] != k->chunked)
                || (k->keep_alive != X && f[H1_KEEP_ALIVE] != k->keep_alive)
                || (k->expect != X && f[H1_EXPECT_CONTINUE] != k->expect)
                || (k->upgrade != X && up != k->upgrade)
                || (k->minor != X && f[H1_MINOR] != k->minor))
                FAIL("%s: facts cl=%" PRId64 " chunked=%" PRId64 " keep_alive=%" PRId64
                     " expect=%" PRId64 " upgrade=%" PRId64, k->name, f[H1_CONTENT_LENGTH],
                     f[H1_CHUNKED], f[H1_KEEP_ALIVE], f[H1_EXPECT_CONTINUE], up);
            release(&o);
            /* every proper prefix: wait for more */
            for (size_t cut = 0; cut < (size_t)r; cut++) {
                out_t p;
                int64_t rp = parse(k->head, cut, 0, &DEFAULT_LIMITS, &p, 1 << 16);
                if (rp != H1_INCOMPLETE) FAIL("%s: prefix %zu gives %" PRId64, k->name, cut, rp);
                release(&p);
            }
            continue;
        }
        release(&o);
    }
}

/* The limits, each at its boundary: within it accepted, one past it declined. */
static void limits(void) {
    const char *head = "GET /abc HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n";
    size_t n = strlen(head);
    size_t fields_len = 4 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1; /* host a x 1 y 2 + NULs */
    struct { const char *name; h1_limits_t lim; size_t cap; int accept; } rows[] = {
        {"request line at the limit", {17, 65536, 100, -1}, 1 << 16, 1},
        {"request line over", {16, 65536, 100, -1}, 1 << 16, 0},
        {"head at the limit", {8192, (uint32_t)n, 100, -1}, 1 << 16, 1},
        {"head over", {8192, (uint32_t)n - 1, 100, -1}, 1 << 16, 0},
        {"fields at the limit", {8192, 65536, 3, -1}, 1 << 16, 1},
        {"fields over", {8192, 65536, 2, -1}, 1 << 16, 0},
        {"no fields allowed", {8192, 65536, 0, -1}, 1 << 16, 0},
        {"fields buffer exact", {8192, 65536, 100, -1}, fields_len + 1, 1},
        {"fields buffer short", {8192, 65536, 100, -1}, fields_len, 0},
        {"fields buffer empty", {8192, 65536, 100, -1}, 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        out_t o;
        int64_t r = parse(head, n, 0, &rows[i].lim, &o, rows[i].cap);
        if ((r > 0) != rows[i].accept) FAIL("%s: %" PRId64, rows[i].name, r);
        if (r > 0) check_accepted(rows[i].name, (const uint8_t *)head, n, 0, r, &o);
        release(&o);
    }
    /* a body over max_body, or exactly at it */
    const char *post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
    h1_limits_t at = {8192, 65536, 100, 10}, over = {8192, 65536, 100, 9};
    out_t o;
    if (parse(post, strlen(post), 0, &at, &o, 1 << 16) <= 0) FAIL("max_body at the limit");
    release(&o);
    if (parse(post, strlen(post), 0, &over, &o, 1 << 16) != H1_DECLINE) FAIL("max_body over");
    release(&o);
    /* more fields than H1_MAX_FIELDS: declined whatever max_headers says */
    size_t cap = 64 + 8 * (H1_MAX_FIELDS + 1);
    char *many = malloc(cap);
    if (!many) abort();
    size_t m = (size_t)sprintf(many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= H1_MAX_FIELDS; i++) m += (size_t)sprintf(many + m, "%c: v\r\n", i ? 'x' : 'h');
    m += (size_t)sprintf(many + m, "\r\n");
    h1_limits_t lots = {8192, 65536, 1000, -1};
    if (parse(many, m, 0, &lots, &o, 1 << 16) != H1_DECLINE) FAIL("H1_MAX_FIELDS + 1 fields");
    release(&o);
    free(many);
}

/* Random bytes and mutated heads: never a crash, an overread (ASan) or a broken promise. */
static const char *SEEDS[] = {
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "POST /api?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "GET /ws HTTP/1.1\r\nHost: [::1]\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "PUT /a%20b HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
    "PATCH /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX:\t \r\n\r\n0\r\n\r\n",
};
static const char ALPHABET[] = "\r\n \t:;,0aAzZ9-\x00\x80\xff\x7f\"=/?%#[]@";

static void fuzz(long iterations, long *accepted) {
    uint8_t buf[512];
    for (long it = 0; it < iterations; it++) {
        size_t n;
        if (next() % 8 == 0) {   /* random bytes */
            n = next() % 64;
            for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)next();
        } else {
            const char *s = SEEDS[next() % (sizeof SEEDS / sizeof SEEDS[0])];
            n = strlen(s);
            memcpy(buf, s, n);
            for (int m = (int)(next() % 4); m > 0; m--) {
                size_t i = n ? next() % n : 0;
                switch (next() % 4) {
                case 0: buf[i] = (uint8_t)ALPHABET[next() % (sizeof ALPHABET - 1)]; break;
                case 1: buf[i] = (uint8_t)next(); break;
                case 2:   /* insert */
                    if (n < sizeof buf) {
                        memmove(buf + i + 1, buf + i, n - i);
                        buf[i] = (uint8_t)ALPHABET[next() % (sizeof ALPHABET - 1)];
                        n++;
                    }
                    break;
                default:  /* delete */
                    if (n) {
                        memmove(buf + i, buf + i + 1, n - i - 1);
                        n--;
                    }
                }
            }
            if (next() % 4 == 0) n = next() % (n + 1);   /* truncated */
        }
        size_t start = (next() % 8 == 0 && n) ? next() % n : 0;
        h1_limits_t lim = {(uint32_t)(next() % 80), (uint32_t)(next() % 200), (uint32_t)(next() % 6),
                           (int64_t)(next() % 12) - 1};
        if (next() % 2) lim = DEFAULT_LIMITS;
        size_t cap = next() % 2 ? 1 << 16 : next() % 64;
        out_t o;
        int64_t r = parse((const char *)buf, n, start, &lim, &o, cap);
        if (r > 0) {
            ++*accepted;
            check_accepted("fuzz", buf, n, start, r, &o);
            check_packed("fuzz", buf, n, start, &o);
            if ((size_t)r > lim.max_header_bytes || o.facts[H1_FIELDS] > lim.max_headers)
                FAIL("fuzz: limits not applied");
        } else if (r != H1_INCOMPLETE && r != H1_DECLINE) {
            FAIL("fuzz: result %" PRId64, r);
        }
        release(&o);
        if (g_failed) {
            fprintf(stderr, "input (%zu bytes, start %zu):", n, start);
            for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", buf[i]);
            fprintf(stderr, "\n");
            return;
        }
    }
}

/* h1_response_head: a few exact heads, then random inputs in buffers of their exact size (so
 * the sanitizers see any read or write past them), each either declined or a well-formed
 * head: the status line, "name: value" lines with no CR or LF inside, CRLF CRLF at the end. */
static int64_t response(const char *fields, size_t n, size_t nfields, unsigned flags,
                        const char *date, const char *server, char *out, size_t cap,
                        int64_t *resp) {
    static const char line[] = "HTTP/1.1 200 OK\r\n";
    return h1_response_head(200, line, sizeof line - 1, fields, n, nfields, flags, date,
                            date ? strlen(date) : 0, server, server ? strlen(server) : 0, out,
                            cap, resp);
}

static void response_table(void) {
    char out[512];
    int64_t resp[H1_RESP_NFACTS];
    static const char f1[] = "content-type\0text/plain\ncontent-length\0 2 ";
    int64_t r = response(f1, sizeof f1 - 1, 2, H1_RESP_KEEP_ALIVE, "D", "sidecar", out,
                         sizeof out, resp);
    static const char want1[] = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                                "content-length:  2 \r\nserver: sidecar\r\ndate: D\r\n\r\n";
    if (r != (int64_t)sizeof want1 - 1 || memcmp(out, want1, sizeof want1 - 1))
        FAIL("response: content-length head (%" PRId64 ")", r);
    if (resp[H1_RESP_CHUNKED] != 0 || resp[H1_RESP_LENGTH] != 2 || resp[H1_RESP_KEEP] != 1)
        FAIL("response: content-length facts");
    static const char f2[] = "Connection\0x, Close\ntransfer-encoding\0gzip";
    r = response(f2, sizeof f2 - 1, 2, H1_RESP_KEEP_ALIVE, NULL, NULL, out, sizeof out, resp);
    static const char want2[] = "HTTP/1.1 200 OK\r\nconnection: close\r\n"
                                "transfer-encoding: chunked\r\n\r\n";
    if (r != (int64_t)sizeof want2 - 1 || memcmp(out, want2, sizeof want2 - 1))
        FAIL("response: app close, chunked (%" PRId64 ")", r);
    if (resp[H1_RESP_CHUNKED] != 1 || resp[H1_RESP_LENGTH] != -1 || resp[H1_RESP_KEEP] != 0)
        FAIL("response: app close facts");
    r = response("", 0, 0, H1_RESP_KEEP_ALIVE | H1_RESP_HTTP10, NULL, NULL, out, sizeof out,
                 resp);
    if (r <= 0 || resp[H1_RESP_KEEP] != 0 || !strstr(out, "connection: close"))
        FAIL("response: HTTP/1.0 close-delimited");
    static const struct { const char *s; size_t n; } bad[] = {
        {"x y\0v", 5}, {"x\0a\rb", 5}, {"\0v", 2}, {"x\0v\0w", 5}, {"x", 1}, {"x\0v\ny", 5},
        {"content-length\0-1", 17}, {"x\0v\n", 4}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (response(bad[i].s, bad[i].n, 1, 0, NULL, NULL, out, sizeof out, resp) != H1_DECLINE)
            FAIL("response: bad row %zu accepted", i);
    if (response(f1, sizeof f1 - 1, 2, 0, NULL, NULL, out, 20, resp) != H1_DECLINE)
        FAIL("response: head over out_cap accepted");
}

static const char RALPHABET[] = "\n\r\0 \t:aZ-0C";

static void response_fuzz(long iterations, long *accepted) {
    static const char *names[] = {"content-length", "Content-Length", "connection", "date",
                                  "server", "transfer-encoding", "x", "set-cookie"};
    static const char *values[] = {"1", " 12 ", "close", "keep-alive", "", "text/plain", "x y"};
    int64_t resp[H1_RESP_NFACTS];
    for (long it = 0; it < iterations; it++) {
        char tmp[256];   /* name NUL value, LF between pairs; at most 4 x 40 bytes */
        size_t n = 0, nfields = next() % 5;
        for (size_t k = 0; k < nfields; k++) {
            const char *a = names[next() % 8], *b = values[next() % 7];
            if (k) tmp[n++] = '\n';
            memcpy(tmp + n, a, strlen(a)); n += strlen(a);
            tmp[n++] = 0;
            memcpy(tmp + n, b, strlen(b)); n += strlen(b);
        }
        for (int m = (int)(next() % 3); m > 0 && n; m--)
            tmp[next() % n] = RALPHABET[next() % (sizeof RALPHABET - 1)];
        if (next() % 8 == 0) nfields = next() % 6;
        if (next() % 8 == 0) n = next() % (n + 1);
        char *fields = malloc(n ? n : 1);
        memcpy(fields, tmp, n);
        size_t cap = next() % 2 ? 512 : next() % 160;
        char *out = malloc(cap ? cap : 1);
        unsigned flags = (unsigned)(next() % 8);
        int64_t r = response(fields, n, nfields, flags, next() % 2 ? "D" : NULL,
                             next() % 2 ? "sidecar" : NULL, out, cap, resp);
        if (r > 0) {
            ++*accepted;
            if ((size_t)r > cap || r < 19 || memcmp(out, "HTTP/1.1 200 OK\r\n", 17) ||
                memcmp(out + r - 4, "\r\n\r\n", 4))
                FAIL("response fuzz: malformed head");
            for (int64_t i = 17; i < r - 2; i++)
                if ((out[i] == '\r' && out[i + 1] != '\n') ||
                    (out[i] == '\n' && out[i - 1] != '\r') || out[i] == 0)
                    FAIL("response fuzz: bare CR, LF or NUL at %" PRId64, i);
            if (resp[H1_RESP_CHUNKED] && resp[H1_RESP_LENGTH] != -1)
                FAIL("response fuzz: chunked with a length");
        } else if (r != H1_DECLINE) {
            FAIL("response fuzz: result %" PRId64, r);
        }
        free(fields);
        free(out);
        if (g_failed) return;
    }
}

int main(int argc, char **argv) {
    long iterations = 100000;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = atol(argv[++i]);
    table();
    limits();
    response_table();
    long accepted = 0, responses = 0;
    if (!g_failed) fuzz(iterations, &accepted);
    if (!g_failed) response_fuzz(iterations, &responses);
    if (g_failed) return 1;
    printf("h1_unit OK cases=%zu iterations=%ld accepted=%ld responses=%ld\n",
           sizeof CASES / sizeof CASES[0], iterations, accepted, responses);
    return 0;
}
