'use strict'
// Python: @platformatic/python-node's handler class over a sidecar worker pool.
//
//   new Python({ docroot, appTarget })        starts a private sidecar (lib/launcher.py)
//   new Python({ attach: '/run/x/attach.sock' })   attaches to a running one
//
// The constructor returns at once; the first request waits until the pool serves.  Handlers
// with the same options share one sidecar (python-node users create handlers freely).  The
// private sidecar runs in a directory of its own under os.tmpdir() and dies with this
// process, however it ends (launcher.py: a pipe on its stdin).
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Pool } = require('./pool')

const LAUNCHER = path.join(__dirname, 'launcher.py')
const START_TIMEOUT_MS = 60000
const GRACE_S = 3 // graceful shutdown of a private sidecar (its host is gone or closing)
const LOG_TAIL = 8192 // stderr kept for a startup error

/** The Python that runs the sidecar: `python` option, $SIDECAR_PYTHON, $VIRTUAL_ENV's, or
 * python3 on PATH (python-node reads VIRTUAL_ENV the same way). */
function findPython (explicit) {
  if (explicit) return explicit
  if (process.env.SIDECAR_PYTHON) return process.env.SIDECAR_PYTHON
  if (process.env.VIRTUAL_ENV) {
    const p = path.join(process.env.VIRTUAL_ENV, 'bin', 'python')
    if (fs.existsSync(p)) return p
  }
  return 'python3'
}

function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function sleepSync (ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** One private sidecar (child process) or attached one, and the pool attached to it. */
class Backend {
  constructor (key, opts) {
    this.key = key
    this.refs = 0
    this.pool = null
    this.error = null
    this.log = ''
    this.child = null
    this.dir = null
    this.attachPath = opts.attach || null
    this.rootPath = opts.rootPath
    this.served = false // a worker was ready once: requests go straight to the pool
    if (!this.attachPath) this._launch(opts)
    this.ready = this._start()
    this.ready.catch(() => {}) // reported to each request; not an unhandled rejection
  }

  _launch (opts) {
    const python = findPython(opts.python)
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidecar-node-'))
    this.attachPath = path.join(this.dir, 'attach.sock')
    const args = [LAUNCHER, this.dir, String(GRACE_S), '--', opts.appTarget,
      '--uds', path.join(this.dir, 'http.sock'), '--attach-socket', this.attachPath,
      '--workers', String(opts.workers), '--app-dir', opts.docroot, '--no-control',
      '--no-access-log', '--log-level', opts.logLevel, '--timeout-graceful-shutdown', String(GRACE_S),
      ...opts.args]
    // stdin: the pipe whose end tells the launcher that Node is gone; stdout: the app's
    // print()s land in ours, as with python-node; stderr: ours too, and a tail for errors
    this.child = spawn(python, args, { stdio: ['pipe', 'inherit', 'pipe'], env: { ...process.env, ...opts.env } })
    this.child.on('error', (err) => {
      this.error = new Error(`cannot start the sidecar with ${python}: ${err.message}`)
    })
    this.child.stderr.on('data', (d) => {
      this.log = (this.log + d).slice(-LOG_TAIL)
      process.stderr.write(d)
    })
    this.child.on('exit', (code, sig) => {
      this.exited = true
      this.error = this.error || new Error(`the sidecar exited (${code ?? sig}) ${this.refs ? 'while in use' : ''}: ${lastLines(this.log)}`.trim())
      if (this._failStart) this._failStart(this._startError())
      if (this.pool) this.pool.close()
      fs.rmSync(this.dir, { recursive: true, force: true })
    })
    this.child.stdin.on('error', () => {}) // EPIPE once it is gone
    // nothing of the child holds Node open: Node exiting is what stops it
    this.child.unref()
    this.child.stdin.unref()
    this.child.stderr.unref()
  }

  _childGone () {
    if (!this.child) return false
    if (this.exited || this.error) return true
    try { // a zombie (not yet reaped by libuv) counts as gone
      return fs.readFileSync(`/proc/${this.child.pid}/stat`, 'utf8').split(') ')[1][0] === 'Z'
    } catch {
      return true
    }
  }

  _startError () {
    return this.error || new Error(`the sidecar exited before it was ready: ${lastLines(this.log)}`)
  }

  /** Attach as soon as the attach socket is there (sync: one try). */
  _tryAttach () {
    if (this.pool) return true
    if (!fs.existsSync(this.attachPath)) return false
    const pool = new Pool(this.attachPath, { reconnect: !this.child, rootPath: this.rootPath, ref: false })
    try {
      pool._connect()
    } catch (err) {
      if (!this.child) throw err
      return false // the socket is bound but not yet listening
    }
    this.pool = pool
    return true
  }

  async _start () {
    const deadline = Date.now() + START_TIMEOUT_MS
    while (!this._tryAttach()) {
      if (this._childGone()) throw this._startError()
      if (Date.now() > deadline) throw new Error(`no attach socket at ${this.attachPath} after ${START_TIMEOUT_MS} ms`)
      await sleep(10)
    }
    if (this._childGone()) throw this._startError()
    await new Promise((resolve, reject) => {
      this._failStart = reject // the child's exit handler
      this.pool._ready(Math.max(deadline - Date.now(), 1)).then(resolve, reject)
    })
    this._failStart = null
    this.served = true
  }

  /** The same, blocking this thread (handleRequestSync before the pool served once). */
  startSync () {
    const deadline = Date.now() + START_TIMEOUT_MS
    for (;;) {
      if (this._tryAttach()) {
        this.pool._poll()
        if (this.pool.readyWorkers.length) {
          this.served = true
          return
        }
      }
      if (this._childGone()) throw this._startError()
      if (Date.now() > deadline) throw new Error('the sidecar did not become ready')
      sleepSync(10)
    }
  }

  async stop () {
    if (this.pool) this.pool.close()
    if (this.child && !this.exited) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve))
      this.child.ref() // close() is awaited: hold Node until the sidecar is gone
      this.child.kill('SIGTERM')
      await exited
    }
  }
}

function lastLines (text, n = 6) {
  return text.trim().split('\n').slice(-n).join(' | ')
}

const backends = new Map() // options key -> Backend, shared by handlers with equal options

/** A Python ASGI app, served by a sidecar worker pool: python-node's Python class. */
class Python {
  /**
   * @param {object} [o]
   * @param {string} [o.docroot] the app's directory: on sys.path, and the ASGI root_path as
   *   python-node sets it (default: the current directory)
   * @param {string} [o.appTarget] 'module:attribute' (default 'main:app')
   * @param {number} [o.workers] worker processes (default: $PYTHON_NODE_WORKERS, else
   *   os.availableParallelism())
   * @param {string} [o.attach] attach to this running sidecar instead of starting one
   * @param {string} [o.python] the interpreter with sidecar installed (default: $SIDECAR_PYTHON,
   *   $VIRTUAL_ENV/bin/python, python3)
   * @param {string} [o.rootPath] an ASGI root_path for requests without a docroot, instead of
   *   the docroot
   * @param {string[]} [o.args] more sidecar command-line flags (e.g. ['--window', '1048576'])
   * @param {object} [o.env] more environment for the sidecar
   * @param {string} [o.logLevel] sidecar's log level (default 'warning')
   */
  constructor ({ docroot, appTarget = 'main:app', workers, attach, python, rootPath, args = [],
    env = {}, logLevel = 'warning' } = {}) {
    this._docroot = path.resolve(docroot || process.cwd())
    const opts = { docroot: this._docroot, appTarget: String(appTarget),
      workers: workers || Number(process.env.PYTHON_NODE_WORKERS) || os.availableParallelism(), attach: attach ? path.resolve(attach) : null,
      python: python || null, rootPath: rootPath ?? this._docroot, args: [...args], env, logLevel }
    if (!/^[\w.]+:[\w.]+$/.test(opts.appTarget)) {
      throw new TypeError(`appTarget must be "module:attribute", not ${JSON.stringify(appTarget)}`)
    }
    const key = JSON.stringify(opts.attach ? [opts.attach, opts.rootPath] : [findPython(opts.python), opts])
    this._backend = backends.get(key)
    if (!this._backend) {
      this._backend = new Backend(key, opts)
      backends.set(key, this._backend)
    }
    this._backend.refs++
    this._closed = false
  }

  /** The document root (absolute). */
  get docroot () { return this._docroot }

  /** The pid of the private sidecar's front-end (null when attached to a running one). */
  get pid () { return this._backend.child ? this._backend.child.pid : null }

  /** The pool, once the sidecar serves (null before). */
  get pool () { return this._backend.pool }

  /** Streams in flight on this handler's pool. */
  get inFlight () { return this._backend.pool ? this._backend.pool.inFlight : 0 }

  /** Resolves once the sidecar serves (rejects if it could not start). */
  ready () {
    return this._backend.ready
  }

  /** The pool once it served (the hot path: no scan of the workers), else null. */
  _pool () {
    if (this._closed) throw new Error('this Python handler is closed')
    const b = this._backend
    if (b.error) throw b.error
    return b.served ? b.pool : null
  }

  /** Handle a request, the whole response buffered.  Rejects with the app's exception
   * (an AppError) if it raised before the response was complete. */
  handleRequest (request, signal) {
    return this._handle('handleRequest', request, signal)
  }

  /** Handle a request; resolves with the response head, whose body is an async iterator
   * (or `await res.next()`: a chunk, null at the end).  WebSocket: `websocket: true`. */
  handleStream (request, signal) {
    return this._handle('handleStream', request, signal)
  }

  _handle (method, request, signal) {
    try {
      request = request._claim()
      const pool = this._pool()
      if (pool) return pool[method](request, signal, true) // at once: write() goes on the ring
    } catch (err) {
      return Promise.reject(err)
    }
    return this._backend.ready.then(() => this._pool()[method](request, signal, true))
  }

  /** Handle a request, blocking this thread until the whole response is there. */
  handleRequestSync (request) {
    let pool = this._pool()
    if (!pool) {
      this._backend.startSync()
      pool = this._pool()
    }
    request = request._claim()
    return pool.handleRequestSync(request, { claimed: true })
  }

  /** Idle handlers never keep Node alive (python-node's behaviour, the default); ref() makes
   * this handler's pool hold Node open until close(). */
  ref () {
    this._backend.ready.then(() => this._backend.pool && this._backend.pool.ref(), () => {})
    return this
  }

  unref () {
    if (this._backend.pool) this._backend.pool.unref()
    return this
  }

  /** Let go of the pool; the last handler of a private sidecar stops it (SIGTERM, graceful). */
  async close () {
    if (this._closed) return
    this._closed = true
    const b = this._backend
    if (--b.refs > 0) return
    if (backends.get(b.key) === b) backends.delete(b.key)
    await b.stop()
  }
}

module.exports = { Python }
