'use strict'
// @sidecar/host: hand requests from Node.js straight to a sidecar's Python worker pool through
// shared-memory rings (docs/protocol.md, "Attaching a host").  The API follows
// @platformatic/python-node: Request with write()/end(), handleRequest() -> buffered Response,
// handleStream() -> headers first, then an async iterator of body chunks; websocket: true.
//
// Doorbells: eventfds are not pollable from plain Node, so one koffi async call of sc_wait()
// (poll(2) on the eventfds + the control socket) sits on a libuv pool thread while there is
// nothing to read.  It returns when a worker rings, and the rings are then drained on the main
// thread until empty.  Idle costs nothing (the thread is blocked in the kernel); under load
// the ring protocol sends no doorbell at all while the reader keeps up.
const { Encoder, Decoder } = require('@msgpack/msgpack')
const native = require('./native')
const { Request, Response, AppError, Headers } = require('./request')

const K = {
  HTTP_REQUEST: 1, HTTP_BODY: 2, DISCONNECT: 3, WS_CONNECT: 4, WS_RECEIVE: 5, WS_DISCONNECT: 6,
  SEND_CREDIT: 7, HELLO: 32, RESPONSE_START: 33, RESPONSE_BODY: 34, RECV_CREDIT: 35,
  WS_ACCEPT: 36, WS_SEND: 37, WS_CLOSE: 38, APP_DONE: 39, RESPONSE_TRAILERS: 41
}
const CHUNK = 64 * 1024 // body bytes per record, as the Python front-end (events.MAX_CHUNK)
const EAGAIN = -11
const WAIT_SAFETY_MS = 5000 // the wait returns at least this often (a net under the doorbells)
const PARKED_POLL_MS = 250 // an idle unref'd pool reads its control socket and rings this often
const DISPATCH_TIMEOUT_MS = 30000 // as sidecar's dispatch_timeout: no ready worker by then

// One of each for the process: a fresh Encoder per event (what encode() does) costs more
// than the event.  encodeSharedRef's bytes are valid until the next encode: written to the
// ring at once, or copied into the backlog.
const encoder = new Encoder()
const decoder = new Decoder()
const decode = (bytes) => decoder.decode(bytes)

class WorkerLostError extends Error {}

function toHeaders (raw, into) {
  for (const [k, v] of raw) into.add(Buffer.from(k).toString('latin1'), Buffer.from(v).toString('latin1'))
}

class Stream {
  constructor (worker, sid, req) {
    this.worker = worker
    this.sid = sid
    this.req = req
    this.credit = worker.window // request body bytes the worker will take
    this.res = new Response({ status: 0 })
    this.res._stream = this
    this.chunks = [] // response body chunks not yet pulled
    this.ended = false // no more chunks will come
    this.trailersDue = false // RESPONSE_START announced trailers: they end the body
    this.error = null
    this.done = false // APP_DONE or lost
    this.puller = null // resolve of a pending next()
    this.headDeferred = deferred()
    this.headError = null
    this.onDone = null
    this.textParts = null // a WebSocket message in fragments
    this.accepted = false
  }

  open () {
    const r = this.req
    const w = r._wire()
    r._stream = this
    const rootPath = r.docroot ?? this.worker.pool.rootPath
    if (r.websocket) {
      this.worker.send([K.WS_CONNECT, this.sid, w.scheme, w.path, w.rawPath, w.query, w.headers,
        w.client, w.server, '1.1', rootPath, w.subprotocols])
      if (r._queue.length) this.pump()
      return
    }
    const q = r._queue
    if (q.length === 1 && q[0].end && q[0].data === null) q.pop().resolve() // end() alone: no body
    let body = Buffer.alloc(0)
    let more = !r._ended || q.length > 0
    if (r.body !== null && r.body.length <= Math.min(CHUNK, this.credit)) {
      body = r.body
      more = false
      this.credit -= body.length
    } else if (r.body !== null) {
      more = true
      q.push({ data: r.body, end: true, resolve () {}, reject () {} })
    }
    this.worker.send([K.HTTP_REQUEST, this.sid, r.method, w.scheme, w.path, w.rawPath, w.query,
      w.headers, w.client, w.server, '1.1', rootPath, body, more])
    if (more) this.pump()
  }

  /** Move queued writes onto the ring as credit allows. */
  pump () {
    const q = this.req._queue
    while (q.length && !this.done) {
      const item = q[0]
      if (this.req.websocket) {
        if (item.end) {
          this.worker.send([K.WS_DISCONNECT, this.sid, 1000, ''])
        } else {
          // a message larger than the credit goes in chunks of one type (more: true), text
          // cut on character boundaries, as the Python front-end does
          if (typeof item.data !== 'string' && !Buffer.isBuffer(item.data)) item.data = Buffer.from(item.data)
          if (this.credit <= 0) return // RECV_CREDIT will call pump() again
          let piece = item.data.slice(0, Math.min(CHUNK, this.credit))
          if (typeof piece === 'string' && piece.length < item.data.length &&
              /[\uD800-\uDBFF]$/.test(piece)) piece = piece.slice(0, -1)
          const rest = item.data.slice(piece.length)
          this.credit -= units(piece)
          this.worker.send([K.WS_RECEIVE, this.sid, piece, rest.length > 0])
          if (rest.length) {
            item.data = rest
            continue
          }
        }
        q.shift()
        item.resolve()
        continue
      }
      const data = item.data === null ? Buffer.alloc(0) : Buffer.from(item.data)
      if (data.length && this.credit <= 0) return // RECV_CREDIT will call pump() again
      const n = Math.min(data.length, CHUNK, this.credit)
      const rest = data.subarray(n)
      const last = item.end && rest.length === 0
      this.credit -= n
      this.worker.send([K.HTTP_BODY, this.sid, data.subarray(0, n), !last])
      if (rest.length) {
        item.data = rest
        continue
      }
      q.shift()
      item.resolve()
    }
    if (this.done) this.failQueue(this.error || new Error('stream is over'))
  }

  failQueue (err) {
    for (const item of this.req._queue.splice(0)) item.reject(err)
  }

  onEvent (ev) {
    switch (ev[0]) {
      case K.RESPONSE_START:
        this.res.status = ev[2]
        toHeaders(ev[3], this.res.headers)
        this.trailersDue = ev[4] === true // the body ends with the last RESPONSE_TRAILERS then
        this.headDeferred.resolve(this.res)
        break
      case K.RESPONSE_BODY:
        if (ev[2].length) this.chunks.push({ v: Buffer.from(ev[2].buffer, ev[2].byteOffset, ev[2].length), c: ev[2].length })
        if (!ev[3] && !this.trailersDue) this.ended = true
        this.wake()
        break
      case K.RESPONSE_TRAILERS: // after the last body; the worker offers them for `TE: trailers`
        toHeaders(ev[2], this.res.trailers)
        if (!ev[3]) {
          this.trailersDue = false
          this.ended = true
          this.wake()
        }
        break
      case K.RECV_CREDIT:
        this.credit += ev[2]
        this.pump()
        break
      case K.WS_ACCEPT:
        this.accepted = true
        this.res.status = 101
        toHeaders(ev[3], this.res.headers)
        if (ev[2]) this.res.headers.set('sec-websocket-protocol', ev[2])
        this.headDeferred.resolve(this.res)
        break
      case K.WS_SEND: {
        const data = typeof ev[2] === 'string' ? ev[2] : Buffer.from(ev[2].buffer, ev[2].byteOffset, ev[2].length)
        if (ev[3]) {
          (this.textParts ||= []).push(data)
          this.worker.send([K.SEND_CREDIT, this.sid, units(data)])
        } else if (this.textParts) {
          this.textParts.push(data)
          const parts = this.textParts
          this.textParts = null
          // earlier parts were credited as they came: only the last one is left
          this.chunks.push({ v: typeof data === 'string' ? parts.join('') : Buffer.concat(parts), c: units(data) })
          this.wake()
        } else {
          this.chunks.push({ v: data, c: units(data) })
          this.wake()
        }
        break
      }
      case K.WS_CLOSE:
        this.res.closeCode = ev[2]
        if (!this.accepted) {
          this.res.status = 403
          this.headDeferred.resolve(this.res)
        }
        this.ended = true
        this.wake()
        break
      case K.APP_DONE:
        this.finish(ev[2] ? new AppError(ev[2]) : null)
        break
    }
  }

  /** The stream is over: APP_DONE (err: the app's exception, or null), the worker lost, or
   * the caller aborted.  python-node's rules: no response yet -> the head rejects (an
   * HTTP app that returned without one: "No response sent"; a WebSocket closed before
   * accept: 403); a body cut short -> the iterator throws; the app's exception text stays on
   * the response either way. */
  finish (err) {
    if (this.done) return
    this.done = true
    this.worker.streams.delete(this.sid)
    if (err instanceof AppError) this.res._exception = err.exception
    if (err && this.res.status && !this.ended) this.error = err
    if (!this.res.status) {
      if (!err && this.req.websocket) {
        this.res.status = 403
        this.headDeferred.resolve(this.res)
      } else {
        this.headError = err || new Error('No response sent: the app returned without http.response.start')
        this.headDeferred.reject(this.headError)
      }
    }
    this.ended = true
    this.failQueue(err || new Error('stream is over'))
    this.wake()
    this.worker.pool._streamDone(this)
  }

  /** The caller gave up (an AbortSignal): the app sees http.disconnect (websocket.disconnect
   * 1006), every promise of this stream rejects with `reason`. */
  abort (reason) {
    if (this.done) return
    this.worker.send(this.req.websocket ? [K.WS_DISCONNECT, this.sid, 1006, ''] : [K.DISCONNECT, this.sid])
    this.error = reason
    this.ended = false // so that finish() keeps the error for the iterator
    this.finish(reason)
  }

  wake () {
    if (this.puller) {
      const p = this.puller
      this.puller = null
      p()
    }
  }

  /** The iterator pulls: credit goes back to the worker only as chunks are taken. */
  async next () {
    for (;;) {
      if (this.chunks.length) {
        const { v, c } = this.chunks.shift()
        if (!this.done && c) this.worker.send([K.SEND_CREDIT, this.sid, c])
        return { value: v, done: false }
      }
      if (this.error) throw this.error
      if (this.ended) return { value: undefined, done: true }
      await new Promise((resolve) => { this.puller = resolve })
    }
  }

  cancel () {
    if (!this.done) {
      this.worker.send(this.req.websocket ? [K.WS_DISCONNECT, this.sid, 1005, ''] : [K.DISCONNECT, this.sid])
    }
  }
}

class Worker {
  constructor (pool, id, index, pair) {
    this.pool = pool
    this.id = id
    this.index = index
    this.pair = pair
    this.dataFd = native.dataFd(pair)
    this.spaceFd = native.spaceFd(pair)
    this.maxRecord = native.maxRecord(pair)
    this.ready = false
    this.pid = 0
    this.window = 256 * 1024
    this.streams = new Map()
    this.nextSid = 1
    this.backlog = [] // encoded events waiting for ring space, in order
    this.gone = false
    this.draining = false // WORKER_DRAINING: no new streams
  }

  send (ev) {
    if (this.gone) return
    const bytes = encoder.encodeSharedRef(ev)
    if (this.backlog.length || !this.tryWrite(bytes)) {
      this.backlog.push(bytes.slice())
      this.pool._rearm()
    }
  }

  tryWrite (bytes) {
    const rc = native.write(this.pair, bytes, bytes.length)
    if (rc === native.RING_OK) return true
    if (rc === native.RING_AGAIN) return false
    this.pool._workerBroken(this, `ring write: ${native.strerror(rc)}`)
    return true
  }

  flush () {
    while (this.backlog.length && !this.gone) {
      if (!this.tryWrite(this.backlog[0])) return false
      this.backlog.shift()
    }
    return true
  }

  lose () {
    if (this.gone) return
    this.gone = true
    for (const s of [...this.streams.values()]) s.finish(new WorkerLostError(`worker ${this.index} (pid ${this.pid}) is gone`))
    native.pairClose(this.pair)
    this.pair = null
  }
}

/** An attached host: `await Pool.attach(path)`, then `handleRequest` / `handleStream`. */
class Pool {
  constructor (path, opts) {
    this.path = path
    this.reconnect = opts.reconnect !== false
    this.workers = new Map()
    this.hostId = 0
    this.closed = false
    this.ctl = -1
    this.interrupt = native.eventfd()
    this.msg = Buffer.alloc(4096)
    this.fds = new Int32Array(6)
    this.nfds = new Int32Array(1)
    this.rbuf = null
    this.waiting = false
    this.readyWaiters = []
    this._immediate = null
    this.onWorkersChanged = null
    this.rootPath = opts.rootPath || '' // the ASGI root_path of requests without a docroot
    this.inFlight = 0 // streams open on this pool (public)
    this.refed = opts.ref !== false
    this.parked = false // idle, unref'd: no wait armed
  }

  /** Connect to a sidecar started with --attach-socket PATH.  Resolves once at least one
   * worker serves the ring pair given to this host.  `reconnect` (default true): when the
   * sidecar goes away, keep trying to attach again (a restart). */
  static async attach (path, opts = {}) {
    const pool = new Pool(path, opts)
    pool._connect()
    await pool._ready(opts.timeout || 30000)
    return pool
  }

  _connect () {
    if (typeof this.path !== 'string') throw new TypeError('attach socket path must be a string')
    const fd = native.connect(this.path)
    if (fd < 0) throw new Error(`cannot attach to ${this.path}: errno ${-fd}`)
    native.setNonblocking(fd)
    this.ctl = fd
    this._pump()
  }

  get readyWorkers () {
    return [...this.workers.values()].filter((w) => w.ready && !w.gone && !w.draining)
  }

  _ready (timeout) {
    if (this.readyWorkers.length) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((f) => f !== waiter)
        reject(new Error('no worker ready'))
      }, timeout)
      const waiter = () => { clearTimeout(timer); resolve() }
      waiter.fail = (err) => { clearTimeout(timer); reject(err) }
      this.readyWaiters.push(waiter)
      if (this.parked) this._soon() // the read loop must run to see HELLO
    })
  }

  /** The ready worker with the fewest streams in flight (null: none ready). */
  _pick () {
    let best = null
    for (const w of this.workers.values()) {
      if (w.ready && !w.gone && !w.draining && (!best || w.streams.size < best.streams.size)) best = w
    }
    return best
  }

  async _open (req, signal, claimed = false) {
    if (!(req instanceof Request)) throw new TypeError('handleRequest()/handleStream() take a Request')
    if (!claimed) req = req._claim()
    if (signal && signal.aborted) throw signal.reason
    if (this.parked) this._poll() // idle and unref'd: nothing read the control socket meanwhile
    let w = this._pick() // synchronously: concurrent requests see each other's streams
    while (!w) {
      if (this.closed) throw new Error('pool is closed')
      await this._ready(DISPATCH_TIMEOUT_MS)
      if (signal && signal.aborted) throw signal.reason
      w = this._pick()
    }
    const s = new Stream(w, w.nextSid++, req)
    w.streams.set(s.sid, s)
    this.inFlight++
    if (signal) {
      const onAbort = () => s.abort(signal.reason)
      signal.addEventListener('abort', onAbort, { once: true })
      s.onDone = () => signal.removeEventListener('abort', onAbort)
    }
    s.open()
    if (this.parked) this._soon() // wake the read loop for this stream
    return s
  }

  /** Send the request, collect the whole response: { status, headers, body: Buffer }.
   * Rejects with an AppError (its `exception` is the app's text) if the app raised before
   * the body was complete; `err.response` then holds what had come. */
  async handleRequest (req, signal, claimed = false) {
    const s = await this._open(req, signal, claimed)
    const res = await s.headDeferred.promise
    const parts = []
    try {
      for await (const chunk of res) parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
    } catch (err) {
      res.body = Buffer.concat(parts)
      if (err && typeof err === 'object') err.response = res
      throw err
    }
    res.body = Buffer.concat(parts)
    return res
  }

  /** Send the request; resolves with the response head, whose body is an async iterator
   * (or `await res.next()`: a chunk, null at the end). */
  async handleStream (req, signal, claimed = false) {
    const s = await this._open(req, signal, claimed)
    return s.headDeferred.promise
  }

  /** handleRequest() that blocks this thread until the whole response is there (python-node's
   * handleRequestSync).  The request body must be whole (`body`, or none for GET & co):
   * nothing else can run to write() more while this thread waits. */
  handleRequestSync (req, { timeout = DISPATCH_TIMEOUT_MS, claimed = false } = {}) {
    if (!(req instanceof Request)) throw new TypeError('handleRequestSync() takes a Request')
    if (req.websocket) throw new Error('handleRequestSync() cannot hold a WebSocket')
    const deadline = Date.now() + timeout
    let w = this._pick()
    while (!w) {
      this._poll()
      w = this._pick()
      if (w) break
      if (this.closed) throw new Error('pool is closed')
      if (Date.now() > deadline) throw new Error('no worker ready')
      this._waitSync(10)
    }
    if (!claimed) req = req._claim()
    const s = new Stream(w, w.nextSid++, req)
    w.streams.set(s.sid, s)
    this.inFlight++
    s.open()
    if (!req._ended) {
      s.abort(new Error('handleRequestSync() needs the whole body: pass `body`, or call end() first'))
      throw s.error
    }
    const parts = []
    for (;;) {
      this._poll()
      while (s.chunks.length) { // take chunks as they come, so credit keeps flowing
        const { v, c } = s.chunks.shift()
        if (!s.done && c) s.worker.send([K.SEND_CREDIT, s.sid, c])
        parts.push(v)
      }
      if (s.res.status && s.ended) break
      if (s.done) break
      if (Date.now() > deadline) {
        s.abort(new Error(`handleRequestSync(): no complete response within ${timeout} ms`))
        break
      }
      this._waitSync(20)
    }
    s.headDeferred.promise.catch(() => {})
    const err = s.error || (!s.res.status && s.headError)
    if (err) {
      s.res.body = Buffer.concat(parts)
      if (typeof err === 'object') err.response = s.res
      throw err
    }
    s.res.body = Buffer.concat(parts)
    if (this.parked || !this.waiting) this._soon()
    return s.res
  }

  /** Read whatever is there now, on this thread: the control socket and every ring. */
  _poll () {
    this._readControl()
    for (const w of [...this.workers.values()]) {
      if (w.gone) continue
      if (w.backlog.length) w.flush()
      this._readWorker(w)
    }
  }

  /** Block this thread until a doorbell rings or `ms` pass.  The short timeout is the net:
   * the async wait on the pool thread may take a doorbell meant for us. */
  _waitSync (ms) {
    const fds = []
    const ev = []
    if (this.ctl >= 0) { fds.push(this.ctl); ev.push(0) }
    for (const w of this.workers.values()) {
      if (w.gone) continue
      if (!native.prepareSleep(w.pair)) return // records arrived meanwhile
      fds.push(w.dataFd); ev.push(1)
      if (w.backlog.length) {
        if (!native.prepareWaitSpace(w.pair, w.backlog[0].length)) return
        fds.push(w.spaceFd); ev.push(1)
      }
    }
    if (!fds.length) return sleepSync(ms)
    native.wait(new Int32Array(fds), new Uint8Array(ev), fds.length, ms, new Uint8Array(fds.length))
  }

  /** Let Node exit while no request is in flight (the read loop then sleeps in no thread at
   * all; it resumes with the next request).  python-node's handlers never hold Node open. */
  unref () {
    this.refed = false
    if (this.waiting && this.inFlight === 0) native.ringBell(this.interrupt) // re-arm: park
    return this
  }

  /** Keep Node alive while the pool is open (the default for Pool.attach). */
  ref () {
    this.refed = true
    if (this.parked) this._soon()
    return this
  }

  close () {
    this.closed = true
    for (const f of this.readyWaiters.splice(0)) f.fail(new Error('pool is closed'))
    if (this._parkTimer) clearInterval(this._parkTimer)
    for (const w of this.workers.values()) w.lose()
    this.workers.clear()
    if (this.ctl >= 0) native.close(this.ctl)
    this.ctl = -1
    native.ringBell(this.interrupt)
    if (!this.waiting) this._closeInterrupt()
  }

  _closeInterrupt () {
    if (this.interrupt >= 0) native.close(this.interrupt)
    this.interrupt = -1
  }

  _streamDone (s) {
    this.inFlight--
    if (s.onDone) s.onDone()
    // idle and unref'd: end the pending wait so that it does not hold Node for its timeout
    if (!this.refed && this.inFlight === 0 && this.waiting) native.ringBell(this.interrupt)
  }

  // --- the read loop ---------------------------------------------------------------------

  _pump () {
    this._immediate = null
    if (this.closed) return
    this._readControl()
    let busy = false
    for (const w of [...this.workers.values()]) {
      if (w.gone) continue
      if (w.backlog.length) w.flush()
      if (this._readWorker(w)) busy = true
    }
    if (busy) this._soon()
    else this._arm()
  }

  _soon () {
    if (!this._immediate) this._immediate = setImmediate(() => this._pump())
  }

  _readWorker (w) {
    if (!this.rbuf || this.rbuf.length < w.maxRecord + 4) this.rbuf = Buffer.allocUnsafe(w.maxRecord + 4 + 256 * 1024)
    const n = native.readMany(w.pair, this.rbuf, this.rbuf.length)
    if (n < 0) {
      this._workerBroken(w, `ring read: ${native.strerror(n)}`)
      return false
    }
    if (n === 0) return false
    const data = Buffer.from(this.rbuf.subarray(0, n)) // events keep views into it
    let off = 0
    while (off < n && !w.gone) {
      const len = data.readUInt32LE(off)
      const ev = decode(data.subarray(off + 4, off + 4 + len))
      off += 4 + len
      this._onEvent(w, ev)
    }
    return true
  }

  _onEvent (w, ev) {
    if (!Array.isArray(ev) || ev.length < 2) return this._workerBroken(w, 'not an event')
    if (ev[1] === 0) {
      if (ev[0] === K.HELLO) {
        w.pid = ev[3]
        w.window = Math.min(Math.max(ev[4], 4096), 16 << 20)
        w.ready = true
        for (const f of this.readyWaiters.splice(0)) f()
        if (this.onWorkersChanged) this.onWorkersChanged()
      }
      return
    }
    const s = w.streams.get(ev[1])
    if (s) s.onEvent(ev)
  }

  _workerBroken (w, why) {
    console.error(`@sidecar/host: worker ${w.index}: ${why}; dropping its rings`)
    w.lose()
    this.workers.delete(w.id)
  }

  _readControl () {
    while (this.ctl >= 0) {
      const n = native.recv(this.ctl, this.msg, this.msg.length, this.fds, this.nfds)
      if (n === EAGAIN) return
      if (n <= 0) return this._lostControl(n === 0 ? 'the sidecar closed the attach connection' : `errno ${-n}`)
      const msg = decode(this.msg.subarray(0, n))
      const kind = Number(msg[0])
      if (kind === native.WELCOME) {
        this.hostId = msg[2]
      } else if (kind === native.WORKER && this.nfds[0] === 6) {
        const err = new Int32Array(1)
        const pair = native.pairOpen(this.fds, BigInt(msg[3]), BigInt(msg[4]), err)
        if (!pair) {
          console.error(`@sidecar/host: cannot map the rings of worker ${msg[2]}: ${native.strerror(err[0])}`)
          continue
        }
        this.workers.set(msg[1], new Worker(this, msg[1], msg[2], pair))
      } else if (kind === native.WORKER_GONE) {
        const w = this.workers.get(msg[1])
        if (w) {
          this.workers.delete(msg[1])
          w.lose()
          if (this.onWorkersChanged) this.onWorkersChanged()
        }
      } else if (kind === native.WORKER_DRAINING) {
        const w = this.workers.get(msg[1])
        if (w) w.draining = true // _pick() passes it over; its streams go on
      } else if (kind === native.BYE) {
        this.byeReason = msg[1]
      }
    }
  }

  _lostControl (why) {
    native.close(this.ctl)
    this.ctl = -1
    for (const w of this.workers.values()) w.lose()
    this.workers.clear()
    if (this.onWorkersChanged) this.onWorkersChanged()
    if (this.reconnect && !this.closed) this._retry(50)
  }

  _retry (delay) {
    setTimeout(() => {
      if (this.closed) return
      try {
        this._connect()
      } catch {
        this._retry(Math.min(delay * 2, 1000))
      }
    }, delay).unref()
  }

  _rearm () {
    if (this.waiting) native.ringBell(this.interrupt) // the wait set changed
    else this._soon()
  }

  /** Sleep on every doorbell (koffi async call: a pool thread blocks in poll). */
  _arm () {
    if (this.waiting || this.closed) return
    this.parked = !this.refed && this.inFlight === 0 && !this.readyWaiters.length &&
      ![...this.workers.values()].some((w) => w.backlog.length)
    if (this.parked) {
      // no thread waits, so look now and then (an unref'd timer): new workers' HELLO, a
      // worker gone, and the control socket must not fill up
      this._parkTimer ||= setInterval(() => { if (this.parked && !this.closed) this._pump() }, PARKED_POLL_MS).unref()
      return
    }
    if (this._parkTimer) { clearInterval(this._parkTimer); this._parkTimer = null }
    const fds = [this.interrupt]
    const ev = [1]
    if (this.ctl >= 0) { fds.push(this.ctl); ev.push(0) }
    for (const w of this.workers.values()) {
      if (w.gone) continue
      if (!native.prepareSleep(w.pair)) return this._soon() // records arrived meanwhile
      fds.push(w.dataFd); ev.push(1)
      if (w.backlog.length) {
        if (!native.prepareWaitSpace(w.pair, w.backlog[0].length)) return this._soon()
        fds.push(w.spaceFd); ev.push(1)
      }
    }
    if (!this.workers.size && this.ctl < 0) return // reconnecting: the timer will pump
    const fdArr = new Int32Array(fds)
    const evArr = new Uint8Array(ev)
    const ready = new Uint8Array(fds.length)
    this.waiting = true
    this._waitArgs = [fdArr, evArr, ready] // the pool thread uses them: keep them alive
    native.wait.async(fdArr, evArr, fds.length, WAIT_SAFETY_MS, ready, () => {
      this.waiting = false
      this._waitArgs = null
      if (this.closed) return this._closeInterrupt()
      this._pump()
    })
  }
}

// Window accounting counts characters (code points) of text, bytes of binary (protocol.md)
function units (data) {
  if (typeof data !== 'string') return data.length
  let n = data.length
  for (let i = 0; i < data.length; i++) {
    const c = data.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) { n--; i++ }
  }
  return n
}

function sleepSync (ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

function deferred () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => {}) // a head nobody awaited must not be an unhandled rejection
  return { promise, resolve, reject }
}

module.exports = { Pool, Request, Response, Headers, AppError, WorkerLostError }
