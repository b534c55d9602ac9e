/*
 * c-host: a C program attached to a running sidecar's worker pool -- no HTTP in between.
 *
 *   sidecar app:main --attach-socket /tmp/attach.sock &
 *   ./c-host /tmp/attach.sock GET /some/path
 *   ./c-host /tmp/attach.sock POST /upload 1048576     # a streamed body of that many bytes
 *
 * Prints the status, the headers and the body of the response.  The streamed POST sends the
 * body in chunks as the worker grants credit (RECV_CREDIT), i.e. as the app reads it.
 * Build: make -C examples/c-host   (ring.c + host.c, no other dependency)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

enum { HTTP_REQUEST = 1, HTTP_BODY = 2, SEND_CREDIT = 7, HELLO = 32, RESPONSE_START = 33,
       RESPONSE_BODY = 34, RECV_CREDIT = 35, APP_DONE = 39 };
#define CHUNK 65536

static uint8_t *inbuf;        /* one record from the worker (max_record bytes) */
static uint8_t out[CHUNK + 256];

static void die(const char *what, int rc)
{
    fprintf(stderr, "c-host: %s: %s\n", what,
            rc < -100 || rc > -10 ? strerror(-rc) : ring_strerror(rc));
    exit(1);
}

/* Write one event, sleeping on the space doorbell while the ring is full. */
static void put_event(sc_pair_t *w, const sc_mp_writer_t *m)
{
    if (m->overflow)
        die("event too large", -EMSGSIZE);
    for (;;) {
        int rc = sc_pair_write(w, m->buf, (uint32_t)m->len);
        if (rc == RING_OK)
            return;
        if (rc != RING_AGAIN)
            die("write", rc);
        if (sc_pair_prepare_wait_space(w, (uint32_t)m->len)) {
            int fd = sc_pair_space_fd(w);
            uint8_t yes = 1, ready;
            if (sc_wait(&fd, &yes, 1, 10000, &ready) == 0)
                die("worker does not read", -ETIMEDOUT);
        }
    }
}

/* Read one event into inbuf, sleeping on the data doorbell while there is none. */
static sc_mp_reader_t get_event(sc_pair_t *w, int block)
{
    for (;;) {
        int n = sc_pair_read(w, inbuf, sc_pair_max_record(w));
        if (n < 0)
            die("read", n);
        if (n > 0)
            return (sc_mp_reader_t){ inbuf, inbuf + n, 0 };
        if (!block)
            return (sc_mp_reader_t){ inbuf, inbuf, 0 };
        if (sc_pair_prepare_sleep(w)) {
            int fd = sc_pair_data_fd(w);
            uint8_t yes = 1, ready;
            if (sc_wait(&fd, &yes, 1, 10000, &ready) == 0)
                die("no answer from the worker", -ETIMEDOUT);
        }
    }
}

static int64_t want_int(sc_mp_reader_t *r)
{
    sc_mp_value_t v = sc_mp_next(r);
    if (v.type != SC_MP_INT)
        die("bad event from the worker", RING_ECORRUPT);
    return v.i;
}

/* One stream: send the request (and its body, as credit allows), print the response. */
static int run(sc_pair_t *w, int64_t window, const char *method, const char *path,
               long long body_len)
{
    const int64_t sid = 1;
    sc_mp_writer_t m = { out, sizeof out, 0, 0 };
    sc_mp_array(&m, 14);
    sc_mp_int(&m, HTTP_REQUEST);
    sc_mp_int(&m, sid);
    sc_mp_str(&m, method, (uint32_t)strlen(method));
    sc_mp_str(&m, "http", 4);
    sc_mp_str(&m, path, (uint32_t)strlen(path));
    sc_mp_bin(&m, path, (uint32_t)strlen(path));
    sc_mp_bin(&m, "", 0);                        /* query_string */
    sc_mp_array(&m, 1);                          /* headers */
    sc_mp_array(&m, 2);
    sc_mp_bin(&m, "host", 4);
    sc_mp_bin(&m, "c-host", 6);
    sc_mp_nil(&m);                               /* client */
    sc_mp_nil(&m);                               /* server */
    sc_mp_str(&m, "1.1", 3);
    sc_mp_str(&m, "", 0);                        /* root_path */
    sc_mp_bin(&m, "", 0);
    sc_mp_bool(&m, body_len > 0);
    put_event(w, &m);

    static uint8_t chunk[CHUNK];
    for (int i = 0; i < CHUNK; i++)
        chunk[i] = (uint8_t)('a' + i % 26);
    long long sent = 0, received = 0;
    int64_t credit = window;
    int chunks = 0;
    for (;;) {
        /* send body chunks while there is credit; the app's reading gives more */
        while (sent < body_len && credit > 0) {
            long long n = body_len - sent;
            if (n > CHUNK) n = CHUNK;
            if (n > credit) n = credit;
            m = (sc_mp_writer_t){ out, sizeof out, 0, 0 };
            sc_mp_array(&m, 4);
            sc_mp_int(&m, HTTP_BODY);
            sc_mp_int(&m, sid);
            sc_mp_bin(&m, chunk, (uint32_t)n);
            sc_mp_bool(&m, sent + n < body_len);
            put_event(w, &m);
            sent += n;
            credit -= n;
            chunks++;
        }
        sc_mp_reader_t r = get_event(w, 1);
        sc_mp_value_t a = sc_mp_next(&r);
        if (a.type != SC_MP_ARRAY || a.i < 2)
            die("bad event from the worker", RING_ECORRUPT);
        int64_t kind = want_int(&r), esid = want_int(&r);
        if (esid != sid)
            continue;
        if (kind == RECV_CREDIT) {
            credit += want_int(&r);
        } else if (kind == RESPONSE_START) {
            printf("status %lld\n", (long long)want_int(&r));
            sc_mp_value_t hs = sc_mp_next(&r);
            for (int64_t i = 0; i < hs.i; i++) {
                sc_mp_next(&r);
                sc_mp_value_t k = sc_mp_next(&r), v = sc_mp_next(&r);
                printf("header %.*s: %.*s\n", (int)k.n, k.p, (int)v.n, v.p);
            }
        } else if (kind == RESPONSE_BODY) {
            sc_mp_value_t b = sc_mp_next(&r);
            fwrite(b.p, 1, b.n, stdout);
            received += b.n;
            m = (sc_mp_writer_t){ out, sizeof out, 0, 0 };  /* the bytes are taken: credit */
            sc_mp_array(&m, 3);
            sc_mp_int(&m, SEND_CREDIT);
            sc_mp_int(&m, sid);
            sc_mp_int(&m, b.n);
            put_event(w, &m);
        } else if (kind == APP_DONE) {
            sc_mp_value_t e = sc_mp_next(&r);
            printf("\n");
            if (e.type == SC_MP_STR)
                printf("error %.*s\n", (int)e.n, e.p);
            printf("sent %lld body bytes in %d chunks, received %lld\n", sent, chunks,
                   received);
            return e.type == SC_MP_STR;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: c-host ATTACH_SOCKET METHOD PATH [BODY_BYTES]\n");
        return 2;
    }
    long long body_len = argc > 4 ? atoll(argv[4]) : 0;
    int ctl = sc_connect(argv[1]);
    if (ctl < 0)
        die(argv[1], ctl);

    /* WELCOME, then a WORKER message per worker: use the first one */
    uint8_t msg[4096];
    int fds[SC_RING_FDS], nfds;
    sc_pair_t *w = NULL;
    int64_t host_id = -1, worker_id = -1, window = 0;
    while (!w) {
        int n = sc_recv(ctl, msg, sizeof msg, fds, &nfds);
        if (n <= 0)
            die("attach socket closed", n ? n : -ECONNRESET);
        sc_mp_reader_t r = { msg, msg + n, 0 };
        sc_mp_next(&r);
        int64_t kind = want_int(&r);
        if (kind == SC_WELCOME) {
            want_int(&r);
            host_id = want_int(&r);
        } else if (kind == SC_WORKER && nfds == SC_RING_FDS) {
            worker_id = want_int(&r);
            want_int(&r);
            uint64_t g_in = (uint64_t)want_int(&r), g_out = (uint64_t)want_int(&r);
            int err;
            w = sc_pair_open(fds, g_in, g_out, &err);
            if (!w)
                die("attach rings", err);
        } else if (kind == SC_BYE) {
            sc_mp_value_t why = sc_mp_next(&r);
            fprintf(stderr, "c-host: refused: %.*s\n", (int)why.n, why.p);
            return 1;
        }
    }
    inbuf = malloc(sc_pair_max_record(w));

    /* the worker says HELLO on our rings once it serves them */
    for (;;) {
        sc_mp_reader_t r = get_event(w, 1);
        sc_mp_next(&r);
        if (want_int(&r) == HELLO) {
            want_int(&r);
            want_int(&r);
            int64_t pid = want_int(&r);
            window = want_int(&r);
            printf("attached as host %lld to worker %lld (pid %lld, window %lld)\n",
                   (long long)host_id, (long long)worker_id, (long long)pid, (long long)window);
            break;
        }
    }
    int rc = run(w, window, argv[2], argv[3], body_len);
    sc_pair_close(w);
    free(inbuf);
    sc_close(ctl);  /* detaches this host */
    return rc;
}
