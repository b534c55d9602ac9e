'use strict'
// Request and Response as @platformatic/python-node shapes them, plus what the rings need:
// a request's ASGI target (scheme, path, raw_path, query_string) and its header fields.
const { Headers } = require('./headers')

const BODYLESS = new Set(['GET', 'HEAD', 'OPTIONS', 'DELETE', 'TRACE'])
// What write() may buffer before handleRequest()/handleStream() opened the stream: one
// default stream window.  More than that rejects at once instead of waiting for credit that
// cannot come (the stream is not open yet).
const PRE_OPEN_LIMIT = 256 * 1024

/** An app's exception, as the worker reported it ("ExcType: message"). */
class AppError extends Error {
  constructor (exception) {
    super(exception)
    this.name = 'AppError'
    this.exception = exception
  }
}

function toBuffer (data) {
  if (Buffer.isBuffer(data)) return data
  if (typeof data === 'string') return Buffer.from(data)
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (data instanceof ArrayBuffer) return Buffer.from(data)
  throw new TypeError('a body is a Buffer, a string, a typed array or an ArrayBuffer')
}

function decodePath (raw) {
  try {
    return decodeURIComponent(raw)
  } catch { // a stray '%': keep the bytes as they are, as a server would
    return raw
  }
}

/** The ASGI parts of a URL: an absolute one gives its scheme, path and query; a relative
 * one ('/a/b?c=d') its path and query. */
function parseTarget (url) {
  const s = String(url)
  let scheme = null
  let raw
  let query
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(s)) {
    const u = new URL(s)
    scheme = u.protocol.slice(0, -1).toLowerCase()
    raw = u.pathname || '/'
    query = u.search.slice(1)
  } else {
    const noFragment = s.split('#', 1)[0]
    const q = noFragment.indexOf('?')
    raw = q < 0 ? noFragment : noFragment.slice(0, q)
    query = q < 0 ? '' : noFragment.slice(q + 1)
    if (!raw.startsWith('/')) raw = '/' + raw
  }
  return { scheme, raw, path: decodePath(raw), query }
}

/** A request, buffered (`body`) or streamed (`write()` ... `end()`). */
class Request {
  /**
   * @param {object} [o]
   * @param {string} [o.method] 'GET' by default
   * @param {string} [o.url] absolute ('https://h/p?q') or relative ('/p?q')
   * @param {Headers|object|Iterable} [o.headers] a Headers, a HeaderMap or [name, value] pairs
   * @param {Buffer|string|Uint8Array} [o.body] the whole body; without it the body is streamed
   * @param {object} [o.socket] SocketInfo: becomes the ASGI client and server
   * @param {string} [o.docroot] this request's document root (the ASGI root_path)
   * @param {boolean} [o.websocket]
   * @param {string[]} [o.subprotocols] added to those of a Sec-WebSocket-Protocol header
   * @param {string} [o.scheme] overrides the scheme taken from the URL
   */
  constructor ({ method = 'GET', url = '/', headers, body, socket = null, docroot = null,
    websocket = false, subprotocols = [], scheme } = {}) {
    this.method = method
    this.url = url
    this.headers = headers
    this._body = body == null ? null : toBuffer(body)
    this.socket = socket
    this.docroot = docroot
    this.websocket = Boolean(websocket)
    this.subprotocols = [...subprotocols]
    this._scheme = scheme
    this._queue = [] // {data, end, resolve, reject} written before the stream can take them
    this._preBytes = 0
    this._endCalled = false
    this._ended = false // no more body can come: end() was called, or the body was given whole
    this._claimed = false
    this._stream = null
  }

  get method () { return this._method }
  set method (m) { this._method = String(m).toUpperCase() }

  get url () { return this._url }
  set url (u) {
    this._target = parseTarget(u) // throws at once on a malformed absolute URL
    this._url = String(u)
  }

  /** The path of the URL, without its query. */
  get path () { return this._target.raw }

  get headers () { return this._headers }
  set headers (h) { this._headers = h instanceof Headers ? h : new Headers(h) }

  get body () { return this._body }
  set body (b) {
    if (this._stream) throw new Error('the request is already being handled')
    this._body = b == null ? null : toBuffer(b)
  }

  get docroot () { return this._docroot }
  set docroot (d) { this._docroot = d == null ? null : String(d) }

  toJSON () {
    return { method: this.method, url: this.url, path: this.path, headers: this.headers.toJSON(),
      docroot: this.docroot, body: this.body, socket: this.socket, websocket: this.websocket }
  }

  /** Send a body chunk (or, for a WebSocket, a message: string = text, Buffer = binary).
   * Once the stream is open: resolves when the worker has granted credit for it and it is on
   * the ring.  Before handleRequest()/handleStream(): buffered, up to 256 KiB; beyond that it
   * rejects at once. */
  write (data) {
    if (this._ended || this._endCalled) return Promise.reject(new Error('write() after end()'))
    if (this._body !== null) return Promise.reject(new Error('write() on a request with a body'))
    if (data === undefined || data === null) return Promise.resolve()
    if (!this.websocket || typeof data !== 'string') data = toBuffer(data)
    if (!this._stream && !this._claimed) {
      const n = typeof data === 'string' ? Buffer.byteLength(data) : data.length
      if (this._preBytes + n > PRE_OPEN_LIMIT) {
        return Promise.reject(new Error(`write() before handleRequest()/handleStream() buffers at most ${PRE_OPEN_LIMIT} bytes: start handling the request first`))
      }
      this._preBytes += n
      this._queue.push({ data, end: false, resolve () {}, reject () {} })
      return Promise.resolve()
    }
    return this._push(data, false)
  }

  /** The body is complete (a WebSocket: close it with 1000). */
  end (data) {
    if (this._ended || this._endCalled) return Promise.resolve()
    if (data !== undefined && data !== null) this.write(data).catch(() => {})
    this._endCalled = true
    if (!this._stream && !this._claimed) {
      this._queue.push({ data: null, end: true, resolve () {}, reject () {} })
      return Promise.resolve()
    }
    if (this._stream) this._ended = true
    return this._push(null, true)
  }

  _push (data, end) {
    return new Promise((resolve, reject) => {
      this._queue.push({ data, end, resolve, reject })
      if (this._stream) this._stream.pump() // else: the stream is about to open
    })
  }

  /** A handler takes the request: from then on write() waits for the stream instead of
   * buffering.  Returns the Request to run: this one, or, when this one was handled before
   * and its body is whole (python-node lets such a request be handled again), a copy. */
  _claim () {
    if (!this._claimed) {
      this._claimed = true
      return this
    }
    const whole = this._body !== null || (!this.websocket && !this._endCalled &&
      !this._queue.length && BODYLESS.has(this.method))
    if (!whole) throw new Error('a streamed Request can be handled once')
    const copy = new Request({ method: this.method, url: this.url, headers: new Headers(this.headers),
      body: this._body, socket: this.socket, docroot: this.docroot, subprotocols: this.subprotocols,
      scheme: this._scheme })
    copy._claimed = true
    return copy
  }

  /** Called once, when a stream takes the request: what the wire needs. */
  _wire () {
    const t = this._target
    let scheme = this._scheme || t.scheme || 'http'
    if (this.websocket) scheme = { http: 'ws', https: 'wss' }[scheme] || scheme
    else scheme = { ws: 'http', wss: 'https' }[scheme] || scheme
    const headers = this.headers.pairs().map(([k, v]) => [Buffer.from(k, 'latin1'), Buffer.from(v, 'latin1')])
    const s = this.socket
    const client = s && s.remoteAddress != null ? [String(s.remoteAddress), Number(s.remotePort) || 0] : null
    const server = s && s.localAddress != null ? [String(s.localAddress), Number(s.localPort) || 0] : null
    let subprotocols = this.subprotocols
    if (this.websocket) {
      const offered = this.headers.getAll('sec-websocket-protocol')
        .flatMap((line) => line.split(',')).map((p) => p.trim()).filter(Boolean)
      subprotocols = [...new Set([...offered, ...subprotocols])]
    }
    // the body: whole, or streamed until end(); GET-like requests without any have none
    if (this._body === null && !this._endCalled && !this._queue.length && !this.websocket &&
        BODYLESS.has(this.method)) this._ended = true
    if (this._body !== null || this._endCalled) this._ended = true
    return { scheme, path: t.path, rawPath: Buffer.from(t.raw), query: Buffer.from(t.query),
      headers, client, server, subprotocols }
  }
}

const EMPTY = Buffer.alloc(0)

/** A response: `status`, `headers` (a Headers), and `body` (buffered) or an async iterator of
 * chunks (streamed; WebSocket messages are strings or Buffers). */
class Response {
  constructor ({ status = 200, headers, body, log, exception = null } = {}) {
    this.status = status
    this.headers = headers
    this.trailers = new Headers() // ASGI http.response.trailers, for a request with `TE: trailers`
    this._body = body == null ? null : toBuffer(body)
    this._log = log == null ? EMPTY : toBuffer(log)
    this._exception = exception
    this._stream = null // set when a stream feeds it
    this._given = false // a constructed response's body was handed to next()
    this.closeCode = undefined // WebSocket: the code the app closed with
  }

  get headers () { return this._headers }
  set headers (h) { this._headers = h instanceof Headers ? h : new Headers(h) }

  get body () { return this._body }
  set body (b) { this._body = b == null ? null : toBuffer(b) }

  /** The app's output for this request: always empty here (the workers' stdout and stderr
   * go to this process's stdout and stderr instead; see README). */
  get log () { return this._log }

  /** The app's exception text when it raised after the response had started (live: it can
   * appear later, e.g. from a background task), else null. */
  get exception () { return this._exception }

  toJSON () {
    return { status: this.status, headers: this.headers.toJSON(), body: this.body,
      log: this.log, exception: this.exception }
  }

  /** python-node's pull: the next chunk (or WebSocket message), null at the end. */
  async next () {
    if (!this._stream) {
      if (this._given || !this._body || !this._body.length) return null
      this._given = true
      return this._body
    }
    const r = await this._stream.next()
    return r.done ? null : r.value
  }

  [Symbol.asyncIterator] () {
    const s = this._stream
    if (!s) {
      return { next: async () => { const v = await this.next(); return v === null ? { done: true, value: undefined } : { done: false, value: v } } }
    }
    return { next: () => s.next(), return: async () => { s.cancel(); return { done: true, value: undefined } } }
  }
}

module.exports = { Request, Response, AppError, Headers, parseTarget, BODYLESS }
