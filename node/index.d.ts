// Type declarations of @sidecar/host: @platformatic/python-node's API (Python, Request,
// Response, Headers) plus the pool underneath (Pool).  Checked by `npm run types`
// (test/types/usage.ts, run by the repository's tests).

/// <reference types="node" />

/** Header values: one string, or several (separate fields). */
export type HeaderMapValue = string | Array<string>
/** Headers as a plain object. */
export type HeaderMap = Record<string, HeaderMapValue>
/** Anything a Request or Response takes as headers. */
export type HeadersInit = Headers | HeaderMap | Iterable<[string, string]> | globalThis.Headers

/** The connection a request came on: becomes the ASGI `client` and `server`. */
export interface SocketInfo {
  localAddress: string
  localPort: number
  localFamily: string
  remoteAddress: string
  remotePort: number
  remoteFamily: string
}

/** A multi-value header map.  Names are lower-case; the per-name views (size, keys, values,
 * entries, forEach) join a name's values with ','. */
export declare class Headers implements Iterable<[string, string]> {
  constructor (init?: HeadersInit | null)
  /** The last value of `key`, or null. */
  get (key: string): string | null
  /** Every value of `key`, in order. */
  getAll (key: string): Array<string>
  /** The values of `key` joined with ',', or null. */
  getLine (key: string): string | null
  has (key: string): boolean
  /** Replace the values of `key`. */
  set (key: string, value: HeaderMapValue): boolean
  /** Add a field `key: value`. */
  add (key: string, value: HeaderMapValue): boolean
  /** Remove every value of `key`; true if there was one. */
  delete (key: string): boolean
  clear (): void
  /** The number of distinct names. */
  readonly size: number
  entries (): Array<[string, string]>
  keys (): Array<string>
  values (): Array<string>
  forEach (callback: (value: string, name: string, headers: this) => void, thisArg?: unknown): void
  [Symbol.iterator] (): Iterator<[string, string]>
  /** A single value as a string, several as an array. */
  toJSON (): HeaderMap
  /** Every field as its own [name, value] pair. */
  pairs (): Array<[string, string]>
}

export type Body = Buffer | string | Uint8Array | ArrayBuffer

export interface RequestOptions {
  /** 'GET' by default. */
  method?: string
  /** Absolute ('https://host/path?q') or relative ('/path?q'). */
  url?: string
  headers?: HeadersInit
  /** The whole body.  Without it, methods other than GET, HEAD, OPTIONS, DELETE and TRACE
   * stream their body with write() until end(). */
  body?: Body | null
  socket?: SocketInfo | null
  /** This request's document root: the ASGI root_path. */
  docroot?: string | null
  websocket?: boolean
  /** Added to those of a Sec-WebSocket-Protocol header. */
  subprotocols?: Array<string>
  /** Overrides the scheme of the URL. */
  scheme?: string
}

export declare class Request {
  constructor (options?: RequestOptions)
  method: string
  url: string
  /** The path of the URL, without the query. */
  readonly path: string
  get headers (): Headers
  set headers (headers: HeadersInit)
  get body (): Buffer | null
  set body (body: Body | null)
  get docroot (): string | null
  set docroot (docroot: string | null)
  socket: SocketInfo | null
  websocket: boolean
  subprotocols: Array<string>
  toJSON (): {
    method: string
    url: string
    path: string
    headers: HeaderMap
    docroot: string | null
    body: Buffer | null
    socket: SocketInfo | null
    websocket: boolean
  }
  /** A body chunk, or a WebSocket message (string: text, Buffer: binary).  Resolves once it
   * is on the ring; before handleRequest()/handleStream(), buffered up to 256 KiB. */
  write (chunk: Body): Promise<void>
  /** The body is complete; a WebSocket closes with 1000. */
  end (chunk?: Body): Promise<void>
}

export interface ResponseOptions {
  status?: number
  headers?: HeadersInit
  body?: Body | null
  log?: Body | null
  exception?: string | null
}

export declare class Response implements AsyncIterable<Buffer | string> {
  constructor (options?: ResponseOptions)
  status: number
  get headers (): Headers
  set headers (headers: HeadersInit)
  /** The app's trailers (ASGI http.response.trailers), offered to it when the request has
   * `TE: trailers`; complete once the body has ended. */
  trailers: Headers
  /** The whole body after handleRequest(); null for a streamed response. */
  get body (): Buffer | null
  set body (body: Body | null)
  /** Always empty: the app's output goes to this process's stdout and stderr. */
  readonly log: Buffer
  /** The app's exception text when it raised after the response started, else null. */
  readonly exception: string | null
  /** WebSocket: the close code the app sent. */
  closeCode: number | undefined
  toJSON (): { status: number, headers: HeaderMap, body: Buffer | null, log: Buffer, exception: string | null }
  /** The next chunk (a WebSocket message: string or Buffer), null at the end. */
  next (): Promise<Buffer | string | null>
  [Symbol.asyncIterator] (): AsyncIterator<Buffer | string>
}

/** The app raised: `exception` is its text ("ExcType: message"). */
export declare class AppError extends Error {
  readonly exception: string
  /** What had come of the response, when it had started. */
  response?: Response
}

/** The worker running a stream died. */
export declare class WorkerLostError extends Error {}

export interface PythonOptions {
  /** The app's directory: on sys.path, and the ASGI root_path (python-node's rule).  Default:
   * the current directory. */
  docroot?: string
  /** 'module:attribute', default 'main:app'. */
  appTarget?: string
  /** Worker processes; default $PYTHON_NODE_WORKERS, else the number of cores. */
  workers?: number
  /** Attach to a sidecar started with --attach-socket PATH instead of starting one. */
  attach?: string
  /** The Python with sidecar installed; default $SIDECAR_PYTHON, $VIRTUAL_ENV/bin/python,
   * python3. */
  python?: string
  /** The ASGI root_path of requests without a docroot (default: the docroot). */
  rootPath?: string
  /** More sidecar command-line flags. */
  args?: Array<string>
  /** More environment for the sidecar. */
  env?: Record<string, string>
  /** sidecar's log level; default 'warning'. */
  logLevel?: 'critical' | 'error' | 'warning' | 'info' | 'debug'
}

/** python-node's handler: an ASGI app served by a sidecar worker pool. */
export declare class Python {
  constructor (options?: PythonOptions)
  readonly docroot: string
  /** The private sidecar's pid; null when attached to a running one. */
  readonly pid: number | null
  /** The pool once the sidecar serves, else null. */
  readonly pool: Pool | null
  /** Streams in flight. */
  readonly inFlight: number
  /** Resolves once the sidecar serves. */
  ready (): Promise<void>
  handleRequest (request: Request, signal?: AbortSignal | null): Promise<Response>
  handleStream (request: Request, signal?: AbortSignal | null): Promise<Response>
  handleRequestSync (request: Request): Response
  /** Hold Node open while the pool is open (not the default). */
  ref (): this
  unref (): this
  /** The last handler of a private sidecar stops it. */
  close (): Promise<void>
}

export interface PoolAttachOptions {
  /** Attach again when the sidecar restarts (default true). */
  reconnect?: boolean
  /** ms to wait for a ready worker (default 30000). */
  timeout?: number
  /** The ASGI root_path of requests without a docroot (default ''). */
  rootPath?: string
  /** false: an idle pool does not hold Node open (default true). */
  ref?: boolean
}

export interface PoolWorker {
  readonly pid: number
  readonly index: number
  readonly ready: boolean
  readonly draining: boolean
}

/** A host attached to a running sidecar's worker pool. */
export declare class Pool {
  static attach (path: string, options?: PoolAttachOptions): Promise<Pool>
  readonly path: string
  readonly readyWorkers: Array<PoolWorker>
  readonly inFlight: number
  onWorkersChanged: (() => void) | null
  handleRequest (request: Request, signal?: AbortSignal | null): Promise<Response>
  handleStream (request: Request, signal?: AbortSignal | null): Promise<Response>
  handleRequestSync (request: Request, options?: { timeout?: number }): Response
  ref (): this
  unref (): this
  close (): void
}
