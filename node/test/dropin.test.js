'use strict'
// @sidecar/host as a drop-in for @platformatic/python-node (issue 26): one test (or more) per
// gap, through `new Python()`, which starts a real private sidecar.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Python, Request, Response, Headers, AppError } = require('..')
const { ROOT, Sidecar, waitFor } = require('./support/sidecar')

process.env.SIDECAR_PYTHON ||= path.join(ROOT, '.venv', 'bin', 'python')
const FIXTURES = path.join(__dirname, 'fixtures')
let python, tmp

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'scn-dropin-'))
  python = new Python({ docroot: FIXTURES, appTarget: 'dropin_app:app', workers: 2, logLevel: 'critical' })
  await python.ready()
  await waitFor(() => python.pool.readyWorkers.length === 2, 20000, 'two workers')
})

after(async () => {
  await python.close()
  fs.rmSync(tmp, { recursive: true, force: true })
})

const json = (res) => JSON.parse(res.body.toString())

test('new Python(): a private sidecar sized as asked, docroot absolute, shared by equal handlers', async () => {
  assert.equal(python.docroot, FIXTURES)
  assert.equal(python.pool.readyWorkers.length, 2)
  const twin = new Python({ docroot: FIXTURES, appTarget: 'dropin_app:app', workers: 2, logLevel: 'critical' })
  assert.equal(twin.pool, python.pool)
  await twin.close() // the other handler still uses it
  assert.equal((await python.handleRequest(new Request({ url: '/echo', body: 'x' }))).status, 200)
})

test('new Python({ attach }): a running sidecar\'s pool, no process of its own', async () => {
  const sc = await new Sidecar({ workers: 1, app: 'dropin_app:app', appDir: FIXTURES }).start()
  const attached = new Python({ attach: sc.attach, docroot: FIXTURES })
  try {
    const s = json(await attached.handleRequest(new Request({ url: '/scope' })))
    assert.equal(s.root_path, FIXTURES)
    assert.equal(attached.pid, null)
    assert.deepEqual(attached.pool.readyWorkers.map((w) => w.pid), sc.workerPids())
  } finally {
    await attached.close()
    await sc.stop()
    sc.cleanup()
  }
})

test('gap 1: an app exception rejects handleRequest and handleStream with its text', async () => {
  await assert.rejects(python.handleRequest(new Request({ url: '/raise-before' })),
    (err) => err instanceof AppError && err.message.includes('ValueError: no such widget: 42'))
  await assert.rejects(python.handleStream(new Request({ url: '/raise-before' })),
    (err) => err.exception === 'ValueError: no such widget: 42')
  // after response.start: the head arrives, the iterator throws, response.exception keeps it
  const res = await python.handleStream(new Request({ url: '/raise-during' }))
  assert.equal(res.status, 200)
  const chunks = []
  await assert.rejects(async () => { for await (const c of res) chunks.push(c.toString()) },
    /RuntimeError: Error during streaming/)
  assert.equal(chunks.join(''), 'Chunk 1\nChunk 2\n')
  assert.equal(res.exception, 'RuntimeError: Error during streaming')
  await assert.rejects(python.handleRequest(new Request({ url: '/raise-during' })),
    (err) => err.response.status === 200 && err.response.body.toString() === 'Chunk 1\nChunk 2\n')
})

test('gap 1: under concurrency, each failing request rejects and the others succeed', async () => {
  const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) =>
    python.handleRequest(new Request({ url: i % 4 === 0 ? '/raise-before' : '/echo', method: 'POST', body: `n${i}` }))))
  results.forEach((r, i) => {
    if (i % 4 === 0) assert.match(r.reason.message, /no such widget/)
    else assert.equal(r.value.body.toString(), `n${i}`)
  })
})

test('gap 2: write() before handleStream() is buffered; beyond one window it rejects at once', async () => {
  const req = new Request({ method: 'POST', url: '/echo' })
  await req.write('Hello ')
  await req.write(Buffer.from('from '))
  await req.write('streaming!')
  await req.end()
  const res = await python.handleStream(req)
  let body = ''
  for await (const chunk of res) body += chunk
  assert.equal(body, 'Hello from streaming!')

  const big = new Request({ method: 'POST', url: '/echo' })
  await big.write(Buffer.alloc(200 * 1024))
  const t0 = Date.now()
  await assert.rejects(big.write(Buffer.alloc(100 * 1024)), /at most 262144 bytes/)
  assert.ok(Date.now() - t0 < 100)
  // once handleRequest() took it, write() waits for credit instead
  const resP = python.handleRequest(big)
  await big.write(Buffer.alloc(300 * 1024))
  await big.end()
  assert.equal((await resP).body.length, 500 * 1024)
})

test('gap 3: an absolute URL gives the scope its scheme, path and query', async () => {
  const s = json(await python.handleRequest(new Request({ url: 'https://example.com:8443/scope/a%20b?x=1&y=2#frag' })))
  assert.deepEqual([s.scheme, s.path, s.raw_path, s.query_string], ['https', '/scope/a b', '/scope/a%20b', 'x=1&y=2'])
  const r = json(await python.handleRequest(new Request({ url: '/scope/p?q=1' })))
  assert.deepEqual([r.scheme, r.path, r.query_string], ['http', '/scope/p', 'q=1'])
  const req = new Request({ url: 'https://example.com/ws/scope', websocket: true })
  const ws = await python.handleStream(req)
  const w = JSON.parse(await ws.next())
  assert.deepEqual([w.type, w.scheme, w.path], ['websocket', 'wss', '/ws/scope'])
  await req.end()
  assert.equal(new Request({ url: 'http://h/api/users?id=1' }).path, '/api/users')
})

test('gap 4: Headers has python-node\'s multi-value methods', () => {
  const h = new Headers({ 'Content-Type': 'application/json', Accept: ['text/html', 'application/json'] })
  assert.equal(h.size, 2)
  assert.equal(h.get('accept'), 'application/json') // the last value
  assert.deepEqual(h.getAll('Accept'), ['text/html', 'application/json'])
  assert.equal(h.getLine('accept'), 'text/html,application/json')
  assert.equal(h.getLine('nope'), null)
  assert.equal(h.get('nope'), null)
  assert.equal(h.add('Accept', 'text/xml'), true)
  assert.deepEqual(h.getAll('accept'), ['text/html', 'application/json', 'text/xml'])
  assert.equal(h.set('X-A', '1'), true)
  assert.equal(h.has('x-a'), true)
  assert.equal(h.delete('X-A'), true)
  assert.equal(h.has('x-a'), false)
  assert.deepEqual(h.keys(), ['content-type', 'accept'])
  assert.deepEqual(h.values(), ['application/json', 'text/html,application/json,text/xml'])
  assert.deepEqual(h.entries()[0], ['content-type', 'application/json'])
  const seen = []
  h.forEach((v, k, self) => { assert.equal(self, h); seen.push(k) })
  assert.deepEqual(seen, ['content-type', 'accept'])
  assert.deepEqual(h.toJSON(), { 'content-type': 'application/json', accept: ['text/html', 'application/json', 'text/xml'] })
  assert.deepEqual(new Headers(h.toJSON()).toJSON(), h.toJSON())
  h.clear()
  assert.equal(h.size, 0)
})

test('gap 4: a Headers instance and array values reach the app as separate fields', async () => {
  const headers = new Headers({ Accept: ['text/html', 'application/json'] })
  headers.add('X-Trace', 'a')
  const s = json(await python.handleRequest(new Request({ url: '/scope', headers })))
  assert.deepEqual(s.headers, [['accept', 'text/html'], ['accept', 'application/json'], ['x-trace', 'a']])
  const t = json(await python.handleRequest(new Request({ url: '/scope', headers: { 'X-Many': ['1', '2'], 'X-One': 'v' } })))
  assert.deepEqual(t.headers, [['x-many', '1'], ['x-many', '2'], ['x-one', 'v']])
  const fetchHeaders = new globalThis.Headers([['x-f', '1']])
  const u = json(await python.handleRequest(new Request({ url: '/scope', headers: fetchHeaders })))
  assert.deepEqual(u.headers, [['x-f', '1']])
  const c = await python.handleRequest(new Request({ url: '/cookies' }))
  assert.deepEqual(c.headers.getAll('set-cookie'), ['a=1', 'b=2'])
})

/** Runs a Node script in a child process; resolves {code, ms, out} when it exits. */
// killAfterMs: SIGKILL the child that long after it started; killAfterOutputMs: that long
// after its first output (a start slowed by a busy machine does not count against it)
function runNode (source, { killAfterMs, killAfterOutputMs } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now()
    const child = spawn(process.execPath, ['-e', source], { stdio: ['ignore', 'pipe', 'inherit'], env: process.env })
    let out = ''
    let afterOutput = null
    child.stdout.on('data', (d) => {
      out += d
      if (killAfterOutputMs && !afterOutput) afterOutput = setTimeout(() => child.kill('SIGKILL'), killAfterOutputMs)
    })
    const timer = killAfterMs && setTimeout(() => child.kill('SIGKILL'), killAfterMs)
    child.on('exit', (code, sig) => {
      clearTimeout(timer)
      clearTimeout(afterOutput)
      resolve({ code: code ?? sig, ms: Date.now() - t0, out })
    })
  })
}

const CHILD_PRELUDE = `const { Python, Request } = require(${JSON.stringify(path.join(__dirname, '..'))});
const py = new Python({ docroot: ${JSON.stringify(FIXTURES)}, appTarget: 'dropin_app:app', workers: 1, logLevel: 'critical' });`

test('gap 5: an idle handler does not keep Node alive; ref() does; inFlight counts streams', async () => {
  const free = await runNode(`${CHILD_PRELUDE}
    py.handleRequest(new Request({ url: '/echo', method: 'POST', body: 'x' })).then((r) => console.log(r.body.toString()))`, { killAfterMs: 15000 })
  assert.equal(free.code, 0, 'exits by itself once idle')
  assert.equal(free.out.trim(), 'x')
  const held = await runNode(`${CHILD_PRELUDE}
    py.ref(); py.handleRequest(new Request({ url: '/echo', method: 'POST', body: 'x' })).then(() => console.log('done'))`, { killAfterMs: 30000, killAfterOutputMs: 1500 })
  assert.equal(held.code, 'SIGKILL', 'a ref()ed handler holds Node open')
  assert.equal(held.out.trim(), 'done')

  assert.equal(python.inFlight, 0)
  const slow = python.handleRequest(new Request({ url: '/slow?0.3' }))
  assert.equal(python.inFlight, 1)
  await slow
  assert.equal(python.inFlight, 0)
})

test('gap 6: handleRequestSync, also as the very first call of a new handler', async () => {
  const fresh = new Python({ docroot: FIXTURES, appTarget: 'dropin_app:app', workers: 1, logLevel: 'critical', args: ['--window', '131072'] })
  try {
    const r = fresh.handleRequestSync(new Request({ method: 'POST', url: '/echo', body: 'sync body' }))
    assert.equal(r.status, 200)
    assert.equal(r.body.toString(), 'sync body')
    const big = Buffer.alloc(1024 * 1024, 7) // more than a window each way
    assert.ok(fresh.handleRequestSync(new Request({ method: 'POST', url: '/echo', body: big })).body.equals(big))
    assert.throws(() => fresh.handleRequestSync(new Request({ url: '/raise-before' })), /no such widget/)
  } finally {
    const pid = fresh.pid
    await fresh.close() // the last handler of a private sidecar: resolves once it exited
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' })
  }
})

test('gap 6: an AbortSignal reaches the app as http.disconnect', async () => {
  const marker = path.join(tmp, 'disconnected')
  const ac = new AbortController()
  const p = python.handleRequest(new Request({ url: `/wait-disconnect?${marker}` }), ac.signal)
  setTimeout(() => ac.abort(), 100)
  await assert.rejects(p, { name: 'AbortError' })
  await waitFor(() => fs.existsSync(marker), 5000, 'the app to see http.disconnect')
  assert.equal(fs.readFileSync(marker, 'utf8'), 'http.disconnect')
  assert.equal(python.inFlight, 0)
  // already aborted: rejects without running anything; handleStream: the iterator throws
  await assert.rejects(python.handleRequest(new Request({ url: '/echo' }), AbortSignal.abort()), { name: 'AbortError' })
  const ac2 = new AbortController()
  const res = await python.handleStream(new Request({ url: '/forever' }), ac2.signal)
  assert.equal((await res.next()).toString(), 'first')
  ac2.abort()
  await assert.rejects(res.next(), { name: 'AbortError' })
})

test('gap 7: subprotocols come from a Sec-WebSocket-Protocol header too', async () => {
  const req = new Request({ url: '/ws/scope', websocket: true, headers: { 'Sec-WebSocket-Protocol': 'chat, superchat' } })
  const res = await python.handleStream(req)
  assert.equal(res.status, 101)
  assert.equal(res.headers.get('sec-websocket-protocol'), 'chat')
  assert.deepEqual(JSON.parse(await res.next()).subprotocols, ['chat', 'superchat'])
  await req.write('hi')
  assert.equal(await res.next(), 'hi')
  await req.end()
  const closed = new Request({ url: '/ws/close', websocket: true })
  assert.equal(await (await python.handleStream(closed)).next(), null)
})

test('gap 8: socket info, per-request docroot, request fields, response surface', async () => {
  const socket = { localAddress: '10.0.0.1', localPort: 8080, localFamily: 'IPv4', remoteAddress: '10.0.0.2', remotePort: 51000, remoteFamily: 'IPv4' }
  const s = json(await python.handleRequest(new Request({ url: '/scope', socket })))
  assert.deepEqual([s.client, s.server], [['10.0.0.2', 51000], ['10.0.0.1', 8080]])
  assert.equal(s.root_path, FIXTURES) // python-node's root_path: the docroot
  const none = json(await python.handleRequest(new Request({ url: '/scope' })))
  assert.deepEqual([none.client, none.server], [null, null])

  const req = new Request({ url: '/nope' })
  req.method = 'put'
  req.url = 'https://example.com/scope?a=1'
  req.headers = new Headers({ 'X-Set': 'yes' })
  req.docroot = '/srv/app'
  req.body = Buffer.from('payload')
  assert.equal(req.path, '/scope')
  const j = req.toJSON()
  assert.deepEqual([j.method, j.url, j.headers, j.docroot], ['PUT', 'https://example.com/scope?a=1', { 'x-set': 'yes' }, '/srv/app'])
  const res = await python.handleRequest(req)
  const t = json(res)
  assert.deepEqual([t.method, t.scheme, t.root_path, t.headers], ['PUT', 'https', '/srv/app', [['x-set', 'yes']]])
  assert.ok(Buffer.isBuffer(res.log) && res.log.length === 0)
  assert.equal(res.exception, null)
  assert.equal(res.toJSON().status, 200)

  const made = new Response({ status: 201, headers: { 'Content-Type': 'application/json' }, body: Buffer.from('{}'), exception: 'E' })
  made.status = 202
  assert.deepEqual([made.status, made.headers.get('content-type'), made.body.toString(), made.exception], [202, 'application/json', '{}', 'E'])
  assert.equal((await made.next()).toString(), '{}')
  assert.equal(await made.next(), null)
})
