/*
 * sidecar event framing (frame.h): msgpack value lengths without decoding.
 *
 * msgpack formats by first byte (https://github.com/msgpack/msgpack/blob/master/spec.md):
 *
 *   00-7f positive fixint      80-8f fixmap (n pairs)      90-9f fixarray (n values)
 *   a0-bf fixstr (n bytes)     c0 nil   c1 never used      c2 false   c3 true
 *   c4/c5/c6 bin 8/16/32       c7/c8/c9 ext 8/16/32 (+1 type byte)
 *   ca float32   cb float64    cc-cf uint 8/16/32/64       d0-d3 int 8/16/32/64
 *   d4-d8 fixext 1/2/4/8/16 (+1 type byte)                 d9/da/db str 8/16/32
 *   dc/dd array 16/32          de/df map 16/32             e0-ff negative fixint
 *
 * Lengths are big-endian.  A value is its header, its payload bytes, and (arrays, maps) the
 * values it contains; skipping one needs only a count of the values still owed.
 */
#include "frame.h"

#include <string.h>

static inline uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t frame_value_len(const uint8_t *buf, uint32_t len) {
    uint64_t pos = 0, owed = 1; /* 64-bit: a u32 count of pairs doubles past 2^32 */
    while (owed) {
        if (pos >= len) return 0;
        uint8_t b = buf[pos];
        uint64_t head = 1, body = 0, items = 0; /* header bytes, payload bytes, values inside */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* one byte */
        } else if (b <= 0x8f) {
            items = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            items = b & 0x0f;
        } else if (b <= 0xbf) {
            body = b & 0x1f;
        } else {
            const uint8_t *p = buf + pos + 1;
            uint64_t left = len - pos - 1; /* bytes after the type byte */
            switch (b) {
            case 0xc4: case 0xd9: head = 2; if (left < 1) return 0; body = p[0]; break;
            case 0xc5: case 0xda: head = 3; if (left < 2) return 0; body = be16(p); break;
            case 0xc6: case 0xdb: head = 5; if (left < 4) return 0; body = be32(p); break;
            case 0xc7: head = 3; if (left < 1) return 0; body = p[0]; break;
            case 0xc8: head = 4; if (left < 2) return 0; body = be16(p); break;
            case 0xc9: head = 6; if (left < 4) return 0; body = be32(p); break;
            case 0xca: body = 4; break;
            case 0xcb: body = 8; break;
            case 0xcc: case 0xd0: body = 1; break;
            case 0xcd: case 0xd1: body = 2; break;
            case 0xce: case 0xd2: body = 4; break;
            case 0xcf: case 0xd3: body = 8; break;
            case 0xd4: body = 2; break; /* type byte + data */
            case 0xd5: body = 3; break;
            case 0xd6: body = 5; break;
            case 0xd7: body = 9; break;
            case 0xd8: body = 17; break;
            case 0xdc: head = 3; if (left < 2) return 0; items = be16(p); break;
            case 0xdd: head = 5; if (left < 4) return 0; items = be32(p); break;
            case 0xde: head = 3; if (left < 2) return 0; items = 2ull * be16(p); break;
            case 0xdf: head = 5; if (left < 4) return 0; items = 2ull * be32(p); break;
            default: return 0; /* 0xc1: never used */
            }
        }
        pos += head + body;
        if (pos > len) return 0;
        owed += items - 1;
    }
    return (uint32_t)pos;
}

/* Bytes of the integer whose first byte is b, or 0 if b does not start an integer. */
static inline uint32_t int_len(uint8_t b) {
    if (b <= 0x7f || b >= 0xe0) return 1;
    switch (b) {
    case 0xcc: case 0xd0: return 2;
    case 0xcd: case 0xd1: return 3;
    case 0xce: case 0xd2: return 5;
    case 0xcf: case 0xd3: return 9;
    default: return 0;
    }
}

/* If buf starts with an array header: its element count in *count, its length returned;
 * else 0. */
static uint32_t array_head(const uint8_t *buf, uint32_t len, uint32_t *count) {
    if (len < 1) return 0;
    uint8_t b = buf[0];
    if (b >= 0x90 && b <= 0x9f) {
        *count = b & 0x0f;
        return 1;
    }
    if (b == 0xdc && len >= 3) {
        *count = be16(buf + 1);
        return 3;
    }
    if (b == 0xdd && len >= 5) {
        *count = be32(buf + 1);
        return 5;
    }
    return 0;
}

/* The head of an event: an array of >= 2 elements whose first two are integers (the rest of
 * the value is not looked at). */
static int event_head(const uint8_t *buf, uint32_t len) {
    uint32_t count, at = array_head(buf, len, &count);
    if (!at || count < 2 || at >= len) return 0;
    uint32_t kind = int_len(buf[at]);
    return kind && at + kind < len && int_len(buf[at + kind]) != 0;
}

int frame_is_event(const uint8_t *buf, uint32_t len) {
    return event_head(buf, len) && frame_value_len(buf, len) == len;
}

int frame_check_events(const uint8_t *buf, const uint32_t *ends, int n) {
    uint32_t start = 0;
    for (int i = 0; i < n; i++) {
        if (ends[i] < start || !frame_is_event(buf + start, ends[i] - start)) return i;
        start = ends[i];
    }
    return n;
}

int frame_gather_events(ring_t *r, uint32_t type, uint8_t *buf, uint32_t cap, uint32_t *ends,
                        int max, uint32_t *out) {
    out[0] = 0;
    out[1] = FRAME_BATCH_HEADER;
    if (cap < FRAME_BATCH_HEADER) return RING_EINVAL;
    uint8_t *payloads = buf + FRAME_BATCH_HEADER;
    int n = ring_read_gather(r, type, payloads, cap - FRAME_BATCH_HEADER, ends, max);
    if (n <= 0) return n;
    int good = frame_check_events(payloads, ends, n);
    out[0] = (uint32_t)good;
    out[1] = FRAME_BATCH_HEADER + ends[n - 1];
    if (good == n) {
        buf[0] = 0xdd;
        buf[1] = (uint8_t)((uint32_t)n >> 24);
        buf[2] = (uint8_t)((uint32_t)n >> 16);
        buf[3] = (uint8_t)((uint32_t)n >> 8);
        buf[4] = (uint8_t)n;
    }
    return n;
}

int frame_split_events(const uint8_t *buf, uint32_t len, uint32_t *lens, int max,
                       uint32_t *header) {
    uint32_t count, at = array_head(buf, len, &count);
    if (!at || max < 0 || count > (uint32_t)max) return -1;
    *header = at;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t n = frame_value_len(buf + at, len - at);
        if (!n || !event_head(buf + at, n)) return -1;
        lens[i] = n;
        at += n;
    }
    return at == len ? (int)count : -1;
}

/* If buf[0:len] is exactly one msgpack bin, the length of its header (its payload is the
 * rest), else 0. */
static uint32_t bin_head(const uint8_t *buf, uint32_t len) {
    if (len < 2) return 0;
    uint32_t h, n;
    switch (buf[0]) {
    case 0xc4: h = 2; n = buf[1]; break;
    case 0xc5: h = 3; if (len < 3) return 0; n = be16(buf + 1); break;
    case 0xc6: h = 5; if (len < 5) return 0; n = be32(buf + 1); break;
    default: return 0;
    }
    return len - h == n ? h : 0;
}

int frame_write_events(ring_t *r, uint32_t type, const uint8_t *buf, uint32_t len,
                       uint32_t *lens, int max, int *wake) {
    *wake = 0;
    uint32_t count, at = array_head(buf, len, &count);
    if (!at || max < 0 || count > (uint32_t)max) return FRAME_ENOTEVENTS;
    const uint32_t header = at;
    int packed = 0;   /* some element is a bin holding a record packed beforehand */
    for (uint32_t i = 0; i < count; i++) {
        uint32_t n = frame_value_len(buf + at, len - at);
        if (!n) return FRAME_ENOTEVENTS;
        if (!event_head(buf + at, n)) {
            uint32_t h = bin_head(buf + at, n);
            if (!h || !frame_is_event(buf + at + h, n - h)) return FRAME_ENOTEVENTS;
            packed = 1;
        }
        lens[i] = n;
        at += n;
    }
    if (at != len) return FRAME_ENOTEVENTS;
    int written = 0, rc = 0;
    if (!packed) {
        rc = ring_try_write_many(r, type, buf + header, lens, (int)count);
        written = rc > 0 ? rc : 0;
    } else {
        /* runs of events are written as they lie, each bin's payload as one record; the
         * first short write ends it (the rest is retried by the caller, in order) */
        const uint8_t *p = buf + header;
        uint32_t i = 0;
        while (i < count) {
            uint32_t j = i, plen, h = 0;
            const uint8_t *q = p;
            while (j < count && !bin_head(q, lens[j])) q += lens[j++];
            if (j > i) {
                rc = ring_try_write_many(r, type, p, lens + i, (int)(j - i));
            } else {
                h = bin_head(p, lens[i]);
                plen = lens[i] - h;
                j = i + 1;
                q = p + lens[i];
                rc = ring_try_write_many(r, type, p + h, &plen, 1);
            }
            if (rc > 0) written += rc;
            if (rc != (int)(j - i)) break;
            p = q;
            i = j;
        }
    }
    if (written > 0) {
        *wake = ring_producer_must_wake(r);
        return written;
    }
    return rc == RING_AGAIN ? 0 : rc;
}
