/*
 * frame_unit -- tests of the event framing checks (native/frame.c), pure C, for the ASan/UBSan
 * build: a table of msgpack encodings with their lengths, then random and mutated bytes, each
 * buffer malloc'ed to its exact size so that any read past its end is caught.  (The Python
 * tests in tests/ring/test_read_events.py compare the same functions against msgpack itself.)
 *
 *   frame_unit [--iterations N]   print "frame_unit OK ..." and exit 0, or FAIL lines and 1
 */
#include "frame.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

/* length of the value at p in a well-formed buffer, via a copy of exactly n bytes */
static uint32_t vlen(const uint8_t *p, uint32_t n) {
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) abort();
    memcpy(copy, p, n);
    uint32_t r = frame_value_len(copy, n);
    free(copy);
    return r;
}

typedef struct { const char *name; const char *bytes; uint32_t len; uint32_t want; int event; } case_t;

static const case_t CASES[] = {
    {"fixint", "\x05", 1, 1, 0},
    {"negative fixint", "\xff", 1, 1, 0},
    {"nil true false", "\xc0", 1, 1, 0},
    {"never used", "\xc1", 1, 0, 0},
    {"fixstr", "\xa3" "abc", 4, 4, 0},
    {"fixstr truncated", "\xa3" "ab", 3, 0, 0},
    {"str8", "\xd9\x02" "ab", 4, 4, 0},
    {"str16", "\xda\x00\x01" "a", 4, 4, 0},
    {"str32", "\xdb\x00\x00\x00\x01" "a", 6, 6, 0},
    {"str32 huge claim", "\xdb\xff\xff\xff\xff" "a", 6, 0, 0},
    {"bin8", "\xc4\x01" "x", 3, 3, 0},
    {"bin16 header cut", "\xc5\x00", 2, 0, 0},
    {"ext8", "\xc7\x01\x05" "x", 4, 4, 0},
    {"ext16", "\xc8\x00\x01\x05" "x", 5, 5, 0},
    {"ext32", "\xc9\x00\x00\x00\x01\x05" "x", 7, 7, 0},
    {"fixext1", "\xd4\x05" "x", 3, 3, 0},
    {"fixext16", "\xd8\x05" "0123456789abcdef", 18, 18, 0},
    {"float32", "\xca" "1234", 5, 5, 0},
    {"float64", "\xcb" "12345678", 9, 9, 0},
    {"uint64", "\xcf" "12345678", 9, 9, 0},
    {"int64 cut", "\xd3" "1234567", 8, 0, 0},
    {"fixarray event", "\x92\x01\x02", 3, 3, 1},
    {"array16 event", "\xdc\x00\x03\x01\xcc\xff\xc3", 7, 7, 1},
    {"array32 event", "\xdd\x00\x00\x00\x02\xd0\x80\xcf" "12345678", 16, 16, 1},
    {"event with map", "\x93\x01\x02\x81\xa1" "k\x90", 7, 7, 1},
    {"one element", "\x91\x01", 2, 2, 0},
    {"str kind", "\x92\xa1" "k\x01", 4, 4, 0},
    {"bool sid", "\x92\x01\xc3", 3, 3, 0},
    {"array32 huge claim", "\xdd\xff\xff\xff\xff\x01\x02", 7, 0, 0},
    {"map32 huge claim", "\xdf\xff\xff\xff\xff\x01\x02", 7, 0, 0},
    {"nested", "\x93\x01\x02\x91\x91\x91\x91\xc0", 8, 8, 1},
    {"nested cut", "\x93\x01\x02\x91\x91\x91\x91", 7, 0, 0},
};

int main(int argc, char **argv) {
    long iterations = 200000;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = strtol(argv[++i], NULL, 0);
    int ncases = (int)(sizeof CASES / sizeof CASES[0]);
    for (int i = 0; i < ncases; i++) {
        const case_t *c = &CASES[i];
        uint32_t got = vlen((const uint8_t *)c->bytes, c->len);
        if (got != c->want) FAIL("%s: frame_value_len %u, expected %u", c->name, got, c->want);
        uint8_t *copy = malloc(c->len);
        memcpy(copy, c->bytes, c->len);
        int ev = frame_is_event(copy, c->len);
        if (ev != c->event) FAIL("%s: frame_is_event %d, expected %d", c->name, ev, c->event);
        free(copy);
    }
    /* back to back: frame_check_events finds the first record that is not an event */
    static const uint8_t recs[] = "\x92\x01\x02" "\x92\x03\x04" "\x92\x05";
    uint32_t ends[3] = {3, 6, 8};
    if (frame_check_events(recs, ends, 3) != 2) FAIL("frame_check_events: bad record not found");
    if (frame_check_events(recs, ends, 2) != 2) FAIL("frame_check_events: good records refused");
    uint32_t lens[4], header = 0;
    static const uint8_t arr[] = "\x92" "\x92\x01\x02" "\x93\x03\x04\xc0";
    if (frame_split_events(arr, 8, lens, 4, &header) != 2 || header != 1 || lens[0] != 3 || lens[1] != 4)
        FAIL("frame_split_events: [[1, 2], [3, 4, nil]]");
    if (frame_split_events(arr, 8, lens, 1, &header) != -1) FAIL("frame_split_events: max ignored");
    if (frame_split_events(arr, 7, lens, 4, &header) != -1) FAIL("frame_split_events: cut accepted");

    /* frame_write_events: split, write, and whether to wake the consumer, in one call */
    size_t region_size = ring_region_size(RING_MIN_CAPACITY);
    void *region = calloc(1, region_size);
    ring_t prod, cons;
    uint32_t flat[3 * 4];
    int wake = -1;
    if (ring_init(&prod, region, region_size, RING_MIN_CAPACITY, 7) != RING_OK ||
        ring_attach(&cons, region, region_size, 7) != RING_OK)
        FAIL("frame_write_events: ring_init/ring_attach");
    if (frame_write_events(&prod, 1, arr, 8, lens, 4, &wake) != 2 || wake != 0)
        FAIL("frame_write_events: [[1, 2], [3, 4, nil]] to an awake consumer");
    if (ring_read_flat(&cons, flat, 4) != 2 || flat[0] != 1 || flat[1] != 3 || flat[4] != 4)
        FAIL("frame_write_events: records read back");
    ring_release(&cons);
    if (frame_write_events(&prod, 1, arr, 7, lens, 4, &wake) != FRAME_ENOTEVENTS || wake != 0)
        FAIL("frame_write_events: cut accepted");
    if (!ring_consumer_prepare_sleep(&cons)) FAIL("frame_write_events: consumer cannot sleep");
    if (frame_write_events(&prod, 1, arr, 8, lens, 4, &wake) != 2 || wake != 1)
        FAIL("frame_write_events: a sleeping consumer is not woken");
    if (ring_read_flat(&cons, flat, 4) != 2) FAIL("frame_write_events: records not there");
    ring_release(&cons);

    /* an element packed beforehand, as a bin holding one event, is written as that record */
    static const uint8_t mixed[] = "\x93" "\x92\x01\x02" "\xc4\x04\x93\x03\x04\xc0" "\x92\x05\x06";
    if (frame_write_events(&prod, 1, mixed, 13, lens, 4, &wake) != 3)
        FAIL("frame_write_events: [[1, 2], bin([3, 4, nil]), [5, 6]]");
    if (ring_read_flat(&cons, flat, 4) != 3 || flat[1] != 3 || flat[4] != 4 || flat[7] != 3
        || memcmp(ring_data(&cons) + flat[5], "\x93\x03\x04\xc0", 4)
        || memcmp(ring_data(&cons) + flat[8], "\x92\x05\x06", 3))
        FAIL("frame_write_events: the bin's payload is not the record");
    ring_release(&cons);
    static const uint8_t not_event[] = "\x91" "\xc4\x02\x01\x02";          /* bin(1, 2) */
    static const uint8_t short_bin[] = "\x91" "\xc4\x04\x92\x01\x02";     /* a byte short */
    static const uint8_t two_events[] = "\x91" "\xc4\x06\x92\x01\x02\x92\x03\x04";
    if (frame_write_events(&prod, 1, not_event, 5, lens, 4, &wake) != FRAME_ENOTEVENTS
        || frame_write_events(&prod, 1, short_bin, 6, lens, 4, &wake) != FRAME_ENOTEVENTS
        || frame_write_events(&prod, 1, two_events, 9, lens, 4, &wake) != FRAME_ENOTEVENTS)
        FAIL("frame_write_events: a bin that is not exactly one event accepted");
    free(region);

    /* random and mutated bytes: never a read outside the buffer (ASan), a length within it */
    long found = 0;
    uint8_t tmp[64];
    for (long it = 0; it < iterations && !g_failed; it++) {
        uint32_t n = (uint32_t)(next() % 48);
        if (it & 1) {
            for (uint32_t k = 0; k < n; k++) tmp[k] = (uint8_t)next();
        } else { /* mostly container and length bytes: the interesting paths */
            static const uint8_t pick[] = {0x92, 0x93, 0xdc, 0xdd, 0xde, 0xdf, 0x81, 0xc4, 0xc5,
                                           0xc6, 0xc7, 0xc8, 0xc9, 0xd9, 0xda, 0xdb, 0xd4, 0xd8,
                                           0x00, 0x01, 0xff, 0xc0, 0xcf, 0xa1};
            for (uint32_t k = 0; k < n; k++) tmp[k] = pick[next() % sizeof pick];
        }
        uint8_t *buf = malloc(n ? n : 1);
        memcpy(buf, tmp, n);
        uint32_t len = frame_value_len(buf, n);
        if (len > n) FAIL("frame_value_len %u > %u bytes", len, n);
        found += len > 0;
        (void)frame_is_event(buf, n);
        uint32_t e[2] = {n / 2, n};
        int k = frame_check_events(buf, e, 2);
        if (k < 0 || k > 2) FAIL("frame_check_events returned %d", k);
        int m = frame_split_events(buf, n, lens, 4, &header);
        if (m > 4) FAIL("frame_split_events returned %d > max", m);
        free(buf);
    }
    if (found < iterations / 10) FAIL("only %ld of %ld random buffers held a value", found, iterations);
    if (g_failed) return 1;
    printf("frame_unit OK cases=%d iterations=%ld values=%ld\n", ncases, iterations, found);
    return 0;
}
