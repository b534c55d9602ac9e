'use strict'
// The C host library (native/host.h + ring.c, built by build.js) through koffi.  Buffers and
// typed arrays are passed as pointers to their memory; the C side never keeps them.
const koffi = require('koffi')
const libPath = require('../build.js')

const lib = koffi.load(libPath)
koffi.opaque('sc_pair_t')

module.exports = {
  RING_OK: 0,
  RING_AGAIN: -1,
  WELCOME: 16,
  WORKER: 17,
  WORKER_GONE: 18,
  BYE: 19,
  WORKER_DRAINING: 20,
  connect: lib.func('int sc_connect(const char *path)'),
  recv: lib.func('int sc_recv(int fd, void *buf, int cap, void *fds, void *nfds)'),
  setNonblocking: lib.func('int sc_set_nonblocking(int fd)'),
  pairOpen: lib.func('sc_pair_t *sc_pair_open(void *fds, uint64_t gin, uint64_t gout, void *err)'),
  pairClose: lib.func('void sc_pair_close(sc_pair_t *p)'),
  dataFd: lib.func('int sc_pair_data_fd(sc_pair_t *p)'),
  spaceFd: lib.func('int sc_pair_space_fd(sc_pair_t *p)'),
  maxRecord: lib.func('uint32_t sc_pair_max_record(sc_pair_t *p)'),
  write: lib.func('int sc_pair_write(sc_pair_t *p, const void *data, uint32_t len)'),
  readMany: lib.func('int sc_pair_read_many(sc_pair_t *p, void *buf, uint32_t cap)'),
  prepareSleep: lib.func('int sc_pair_prepare_sleep(sc_pair_t *p)'),
  prepareWaitSpace: lib.func('int sc_pair_prepare_wait_space(sc_pair_t *p, uint32_t len)'),
  wait: lib.func('int sc_wait(const void *fds, const void *isEventfd, int n, int timeout, void *ready)'),
  eventfd: lib.func('int sc_eventfd(void)'),
  ringBell: lib.func('int sc_ring_bell(int fd)'),
  close: lib.func('int sc_close(int fd)'),
  strerror: lib.func('const char *ring_strerror(int code)')
}
