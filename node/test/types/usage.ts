// Type-checks index.d.ts against how the package is used (tsc --noEmit -p test/types, run by
// tests/hosts/test_node.py).  Nothing here runs.  The @ts-expect-error lines must stay errors.
import { Python, Pool, Request, Response, Headers, AppError, WorkerLostError, type SocketInfo } from '../..'

async function pythonNodeUser (): Promise<void> {
  const python = new Python({ docroot: './python-apps', appTarget: 'main:app' })
  const docroot: string = python.docroot
  const req = new Request({
    method: 'POST',
    url: 'https://example.com/api?x=1',
    headers: { 'Content-Type': 'application/json', Accept: ['text/html', 'application/json'] },
    body: Buffer.from('{}'),
    docroot
  })
  req.method = 'PUT'
  req.url = '/other'
  req.headers = new Headers({ 'X-A': '1' })
  req.docroot = '/srv'
  req.body = Buffer.from('x')
  const path: string = req.path
  const json = req.toJSON()
  const m: string = json.method
  const res: Response = await python.handleRequest(req)
  const status: number = res.status
  const body: Buffer | null = res.body
  const ct: string | null = res.headers.get('content-type')
  const all: string[] = res.headers.getAll('set-cookie')
  const exc: string | null = res.exception
  const log: Buffer = res.log
  const sync: Response = python.handleRequestSync(new Request({ url: '/' }))

  const ac = new AbortController()
  const stream = await python.handleStream(new Request({ url: '/sse' }), ac.signal)
  for await (const chunk of stream) console.log(chunk.toString())
  const next: Buffer | string | null = await stream.next()

  const ws = new Request({ url: '/ws', websocket: true, subprotocols: ['chat'] })
  const wsRes = await python.handleStream(ws)
  await ws.write('text')
  await ws.write(Buffer.from([1, 2]))
  await ws.end()
  const code: number | undefined = wsRes.closeCode

  const socket: SocketInfo = { localAddress: '::1', localPort: 1, localFamily: 'IPv6', remoteAddress: '::1', remotePort: 2, remoteFamily: 'IPv6' }
  await python.handleRequest(new Request({ url: '/', socket }))
  python.unref().ref()
  const n: number = python.inFlight
  const pid: number | null = python.pid
  await python.ready()
  await python.close()

  const h = new Headers(new globalThis.Headers({ a: 'b' }))
  h.add('a', 'c')
  h.set('b', ['1', '2'])
  h.forEach((value: string, name: string) => console.log(name, value))
  for (const [name, value] of h) console.log(name, value)
  const size: number = h.size
  const line: string | null = h.getLine('a')

  const made = new Response({ status: 201, headers: { a: 'b' }, body: Buffer.from('x'), exception: null })
  made.status = 202

  try {
    await python.handleRequest(new Request({ url: '/raise' }))
  } catch (err) {
    if (err instanceof AppError) console.log(err.exception, err.response?.status)
    if (err instanceof WorkerLostError) console.log(err.message)
  }
  console.log(path, m, status, body, ct, all, exc, log, sync, next, code, n, pid, size, line, made)

  // @ts-expect-error: a status is a number
  made.status = '200'
  // @ts-expect-error: handleRequest takes a Request
  await python.handleRequest({ url: '/' })
  // @ts-expect-error: docroot is a string
  new Python({ docroot: 1 })
}

async function poolUser (): Promise<void> {
  const pool = await Pool.attach('/run/sidecar/attach.sock', { reconnect: false, timeout: 1000, ref: false })
  const pids: number[] = pool.readyWorkers.map((w) => w.pid)
  const res = await pool.handleRequest(new Request({ url: '/' }))
  pool.unref()
  pool.close()
  console.log(pids, res.status, pool.inFlight)
}

void pythonNodeUser
void poolUser
