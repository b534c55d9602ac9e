/*
 * host.c -- the attached-host side of docs/protocol.md: control socket, ring pairs, doorbells,
 * and a msgpack subset.  See host.h.
 */
#define _GNU_SOURCE
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct sc_pair {
    ring_t out;          /* to_worker: this host produces */
    ring_t in;           /* to_host: this host consumes */
    void *out_map, *in_map;
    size_t out_size, in_size;
    int fds[SC_RING_FDS];
};

int sc_connect(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path)
        return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int sc_recv(int fd, void *buf, int cap, int *fds, int *nfds)
{
    union { char b[CMSG_SPACE(sizeof(int) * SC_RING_FDS)]; struct cmsghdr align; } ctl;
    struct iovec iov = { buf, (size_t)cap };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = ctl.b, .msg_controllen = sizeof ctl.b };
    *nfds = 0;
    ssize_t n;
    do
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *src = (int *)CMSG_DATA(c);
        for (int i = 0; i < k; i++) {
            if (*nfds < SC_RING_FDS)
                fds[(*nfds)++] = src[i];
            else
                close(src[i]);
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return -EMSGSIZE;
    }
    return (int)n;
}

static int map_ring(int fd, void **map, size_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (size_t)st.st_size;
    *map = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*map == MAP_FAILED) {
        *map = NULL;
        return -errno;
    }
    return 0;
}

sc_pair_t *sc_pair_open(const int *fds, uint64_t gen_to_worker, uint64_t gen_to_host, int *err)
{
    sc_pair_t *p = calloc(1, sizeof *p);
    if (!p) {
        for (int i = 0; i < SC_RING_FDS; i++)
            close(fds[i]);
        *err = -ENOMEM;
        return NULL;
    }
    memcpy(p->fds, fds, sizeof p->fds);
    int rc = map_ring(fds[0], &p->out_map, &p->out_size);
    if (rc == 0)
        rc = map_ring(fds[3], &p->in_map, &p->in_size);
    if (rc == 0)
        rc = ring_attach(&p->out, p->out_map, p->out_size, gen_to_worker);
    if (rc == 0)
        rc = ring_attach(&p->in, p->in_map, p->in_size, gen_to_host);
    if (rc < 0) {
        sc_pair_close(p);
        *err = rc;
        return NULL;
    }
    *err = 0;
    return p;
}

void sc_pair_close(sc_pair_t *p)
{
    if (!p)
        return;
    if (p->out_map)
        munmap(p->out_map, p->out_size);
    if (p->in_map)
        munmap(p->in_map, p->in_size);
    for (int i = 0; i < SC_RING_FDS; i++)
        if (p->fds[i] >= 0)
            close(p->fds[i]);
    free(p);
}

int sc_pair_data_fd(sc_pair_t *p) { return p->fds[4]; }
int sc_pair_space_fd(sc_pair_t *p) { return p->fds[2]; }
uint32_t sc_pair_max_record(sc_pair_t *p) { return p->out.max_record; }

int sc_pair_write(sc_pair_t *p, const void *data, uint32_t len)
{
    int rc = ring_try_write(&p->out, 1, data, len);
    if (rc == RING_OK && ring_producer_must_wake(&p->out))
        sc_ring_bell(p->fds[1]);
    return rc;
}

/* Give consumed bytes back; wake the worker if it waits for space. */
static void release(sc_pair_t *p)
{
    ring_release(&p->in);
    if (ring_consumer_must_wake(&p->in))
        sc_ring_bell(p->fds[5]);
}

int sc_pair_read(sc_pair_t *p, void *buf, uint32_t cap)
{
    ring_view_t v;
    if (cap < p->in.max_record)
        return RING_EINVAL;  /* a record handed out cannot be put back: buf must hold any */
    for (;;) {
        int n = ring_read(&p->in, &v, 1);
        if (n <= 0) {
            release(p);
            return n;
        }
        if (v.type != 1) {     /* unknown types are skipped (docs/ring.md) */
            release(p);
            continue;
        }
        memcpy(buf, ring_data(&p->in) + v.offset, v.len);
        release(p);
        return (int)v.len;
    }
}

int sc_pair_read_many(sc_pair_t *p, void *buf, uint32_t cap)
{
    uint32_t max = p->in.max_record;
    if (cap < max + 4)
        return RING_EINVAL;
    uint8_t *out = buf;
    uint32_t used = 0;
    ring_view_t v;
    /* take records one at a time while any record surely fits in what is left */
    while (cap - used >= max + 4) {
        int n = ring_read(&p->in, &v, 1);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        if (v.type != 1)
            continue;
        memcpy(out + used, &v.len, 4);
        memcpy(out + used + 4, ring_data(&p->in) + v.offset, v.len);
        used += 4 + v.len;
    }
    release(p);
    return (int)used;
}

int sc_pair_prepare_sleep(sc_pair_t *p) { return ring_consumer_prepare_sleep(&p->in); }

int sc_pair_prepare_wait_space(sc_pair_t *p, uint32_t len)
{
    uint64_t need = ring_space_needed(&p->out, len);
    if (need > p->out.capacity)
        need = p->out.capacity;
    return ring_producer_prepare_wait(&p->out, (uint32_t)need);
}

int sc_wait(const int *fds, const uint8_t *is_eventfd, int n, int timeout_ms, uint8_t *ready)
{
    struct pollfd pfd[64];
    if (n > 64)
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        pfd[i].fd = fds[i];
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
        ready[i] = 0;
    }
    int rc;
    do
        rc = poll(pfd, (nfds_t)n, timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        if (!pfd[i].revents)
            continue;
        ready[i] = 1;
        if (is_eventfd[i]) {
            uint64_t v;
            (void)!read(fds[i], &v, sizeof v);  /* non-blocking: EAGAIN if raced */
        }
    }
    return rc;
}

int sc_eventfd(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int sc_ring_bell(int fd)
{
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == sizeof one ? 0 : -errno;
}

int sc_close(int fd) { return close(fd) < 0 ? -errno : 0; }

int sc_set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* --- msgpack ----------------------------------------------------------------------------- */

static void put(sc_mp_writer_t *w, const void *b, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = 1;
        return;
    }
    memcpy(w->buf + w->len, b, n);
    w->len += n;
}

static void put_be(sc_mp_writer_t *w, uint8_t tag, uint64_t v, int bytes)
{
    uint8_t b[9] = { tag };
    for (int i = 0; i < bytes; i++)
        b[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    put(w, b, 1 + (size_t)bytes);
}

void sc_mp_array(sc_mp_writer_t *w, uint32_t n)
{
    if (n < 16) { uint8_t b = 0x90 | (uint8_t)n; put(w, &b, 1); }
    else if (n < 65536) put_be(w, 0xdc, n, 2);
    else put_be(w, 0xdd, n, 4);
}

void sc_mp_int(sc_mp_writer_t *w, int64_t v)
{
    if (v >= 0) {
        if (v < 128) { uint8_t b = (uint8_t)v; put(w, &b, 1); }
        else if (v < 256) put_be(w, 0xcc, (uint64_t)v, 1);
        else if (v < 65536) put_be(w, 0xcd, (uint64_t)v, 2);
        else if (v <= 0xffffffffLL) put_be(w, 0xce, (uint64_t)v, 4);
        else put_be(w, 0xcf, (uint64_t)v, 8);
    } else {
        if (v >= -32) { uint8_t b = (uint8_t)(int8_t)v; put(w, &b, 1); }
        else if (v >= -128) put_be(w, 0xd0, (uint64_t)v & 0xff, 1);
        else if (v >= -32768) put_be(w, 0xd1, (uint64_t)v & 0xffff, 2);
        else if (v >= INT32_MIN) put_be(w, 0xd2, (uint64_t)v & 0xffffffff, 4);
        else put_be(w, 0xd3, (uint64_t)v, 8);
    }
}

void sc_mp_nil(sc_mp_writer_t *w) { uint8_t b = 0xc0; put(w, &b, 1); }
void sc_mp_bool(sc_mp_writer_t *w, int v) { uint8_t b = v ? 0xc3 : 0xc2; put(w, &b, 1); }

void sc_mp_str(sc_mp_writer_t *w, const char *s, uint32_t n)
{
    if (n < 32) { uint8_t b = 0xa0 | (uint8_t)n; put(w, &b, 1); }
    else if (n < 256) put_be(w, 0xd9, n, 1);
    else if (n < 65536) put_be(w, 0xda, n, 2);
    else put_be(w, 0xdb, n, 4);
    put(w, s, n);
}

void sc_mp_bin(sc_mp_writer_t *w, const void *b, uint32_t n)
{
    if (n < 256) put_be(w, 0xc4, n, 1);
    else if (n < 65536) put_be(w, 0xc5, n, 2);
    else put_be(w, 0xc6, n, 4);
    put(w, b, n);
}

static uint64_t get_be(sc_mp_reader_t *r, int bytes)
{
    if (r->end - r->p < bytes) {
        r->error = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | *r->p++;
    return v;
}

static sc_mp_value_t bytes(sc_mp_reader_t *r, int type, uint64_t n)
{
    sc_mp_value_t v = { SC_MP_NONE, 0, NULL, 0 };
    if (r->error || (uint64_t)(r->end - r->p) < n) {
        r->error = 1;
        return v;
    }
    v.type = type;
    v.p = r->p;
    v.n = (uint32_t)n;
    r->p += n;
    return v;
}

sc_mp_value_t sc_mp_next(sc_mp_reader_t *r)
{
    sc_mp_value_t v = { SC_MP_NONE, 0, NULL, 0 };
    if (r->error || r->p >= r->end)
        return v;
    uint8_t t = *r->p++;
    if (t < 0x80) { v.type = SC_MP_INT; v.i = t; }
    else if (t >= 0xe0) { v.type = SC_MP_INT; v.i = (int8_t)t; }
    else if ((t & 0xf0) == 0x90) { v.type = SC_MP_ARRAY; v.i = t & 0x0f; }
    else if ((t & 0xe0) == 0xa0) return bytes(r, SC_MP_STR, t & 0x1f);
    else switch (t) {
    case 0xc0: v.type = SC_MP_NIL; break;
    case 0xc2: case 0xc3: v.type = SC_MP_BOOL; v.i = t == 0xc3; break;
    case 0xcc: v.type = SC_MP_INT; v.i = (int64_t)get_be(r, 1); break;
    case 0xcd: v.type = SC_MP_INT; v.i = (int64_t)get_be(r, 2); break;
    case 0xce: v.type = SC_MP_INT; v.i = (int64_t)get_be(r, 4); break;
    case 0xcf: v.type = SC_MP_INT; v.i = (int64_t)get_be(r, 8); break;
    case 0xd0: v.type = SC_MP_INT; v.i = (int8_t)get_be(r, 1); break;
    case 0xd1: v.type = SC_MP_INT; v.i = (int16_t)get_be(r, 2); break;
    case 0xd2: v.type = SC_MP_INT; v.i = (int32_t)get_be(r, 4); break;
    case 0xd3: v.type = SC_MP_INT; v.i = (int64_t)get_be(r, 8); break;
    case 0xd9: return bytes(r, SC_MP_STR, get_be(r, 1));
    case 0xda: return bytes(r, SC_MP_STR, get_be(r, 2));
    case 0xdb: return bytes(r, SC_MP_STR, get_be(r, 4));
    case 0xc4: return bytes(r, SC_MP_BIN, get_be(r, 1));
    case 0xc5: return bytes(r, SC_MP_BIN, get_be(r, 2));
    case 0xc6: return bytes(r, SC_MP_BIN, get_be(r, 4));
    case 0xdc: v.type = SC_MP_ARRAY; v.i = (int64_t)get_be(r, 2); break;
    case 0xdd: v.type = SC_MP_ARRAY; v.i = (int64_t)get_be(r, 4); break;
    default: v.type = SC_MP_OTHER; r->error = 1; break;  /* maps, floats, ext: not in events */
    }
    if (r->error)
        v.type = SC_MP_NONE;
    return v;
}
