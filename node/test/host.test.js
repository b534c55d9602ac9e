'use strict'
// The Node.js host against a live sidecar: node --test node/test/
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const { Pool, Request, WorkerLostError } = require('..')
const { Sidecar, waitFor } = require('./support/sidecar')

let sc, pool

before(async () => {
  sc = await new Sidecar({ workers: 2 }).start()
  pool = await Pool.attach(sc.attach)
  await waitFor(() => pool.readyWorkers.length === 2, 20000, 'two workers')
})

after(async () => {
  pool.close()
  await sc.stop()
  sc.cleanup()
})

test('buffered requests: GET, POST echo larger than the window, 404, an app error rejects', async () => {
  const r = await pool.handleRequest(new Request({ url: '/hello' }))
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('content-type'), 'text/plain')
  assert.equal(r.body.toString(), 'hello, world')
  const body = crypto.randomBytes(3 * 1024 * 1024 + 17)
  const e = await pool.handleRequest(new Request({ method: 'POST', url: '/echo', body }))
  assert.equal(e.status, 200)
  assert.ok(e.body.equals(body))
  assert.equal((await pool.handleRequest(new Request({ url: '/nope' }))).status, 404)
  await assert.rejects(pool.handleRequest(new Request({ url: '/raise' })), /RuntimeError: boom/)
})

test('trailers: offered for TE: trailers, on res.trailers once the body has ended', async () => {
  const r = await pool.handleRequest(new Request({ url: '/trailers', headers: { te: 'trailers' } }))
  assert.equal(r.body.toString(), 'part 1, part 2')
  assert.deepEqual(r.trailers.toJSON(), { 'grpc-status': '0', 'grpc-message': 'fine', 'x-sum': '14' })
  const s = await pool.handleStream(new Request({ url: '/trailers', headers: { te: 'trailers' } }))
  const parts = []
  for await (const chunk of s) parts.push(chunk)
  assert.equal(Buffer.concat(parts).toString(), 'part 1, part 2')
  assert.equal(s.trailers.get('x-sum'), '14')
  const plain = await pool.handleRequest(new Request({ url: '/trailers' }))
  assert.equal(plain.body.toString(), 'part 1, part 2')
  assert.deepEqual(plain.trailers.toJSON(), {})
})

test('requests spread over every worker', async () => {
  const rs = await Promise.all(Array.from({ length: 32 }, () =>
    pool.handleRequest(new Request({ url: '/pid' }))))
  const pids = new Set(rs.map((r) => JSON.parse(r.body).pid))
  assert.deepEqual([...pids].sort(), sc.workerPids().sort())
})

test('SSE: each event arrives before the app sends the next', async () => {
  const res = await pool.handleStream(new Request({ url: '/sse?n=4' }))
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'text/event-stream')
  const events = []
  for await (const chunk of res) {
    for (const line of chunk.toString().split('\n\n')) {
      if (line.startsWith('data: ')) events.push({ ...JSON.parse(line.slice(6)), got: Date.now() / 1000 })
    }
  }
  assert.deepEqual(events.map((e) => e.i), [0, 1, 2, 3])
  for (let i = 0; i + 1 < events.length; i++) {
    assert.ok(events[i].got < events[i + 1].sent, `event ${i} arrived only with event ${i + 1}`)
  }
})

test('streamed upload: write() waits for credit while the app does not read', async () => {
  const req = new Request({ method: 'POST', url: '/slow-upload' })
  const resP = pool.handleRequest(req)
  const chunk = Buffer.alloc(64 * 1024, 'x')
  const hash = crypto.createHash('sha256')
  let resolved = 0
  const writes = []
  for (let i = 0; i < 32; i++) { // 2 MiB: eight windows of 256 KiB
    hash.update(chunk)
    writes.push(req.write(chunk).then(() => { resolved++ }))
  }
  writes.push(req.end())
  // the app sleeps 1 s before its first receive(): only one window can be on its way
  await new Promise((resolve) => setTimeout(resolve, 500))
  assert.ok(resolved >= 1 && resolved <= 4, `${resolved} writes resolved before the app read`)
  await Promise.all(writes)
  const res = await resP
  assert.equal(res.status, 200)
  assert.deepEqual(JSON.parse(res.body), { bytes: 32 * 65536, sha256: hash.digest('hex') })
})

test('streamed download: the iterator pulls, credit follows', async () => {
  const res = await pool.handleStream(new Request({ url: '/zeros?n=4194304' }))
  let n = 0
  for await (const chunk of res) n += chunk.length
  assert.equal(n, 4194304)
})

test('WebSocket conversation: text, binary, app closes; a rejected one is 403', async () => {
  const req = new Request({ url: '/ws', websocket: true })
  const res = await pool.handleStream(req)
  assert.equal(res.status, 101)
  const it = res[Symbol.asyncIterator]()
  await req.write('hi')
  assert.equal((await it.next()).value, 'echo:hi')
  await req.write(Buffer.from([1, 2, 3]))
  assert.deepEqual([...(await it.next()).value], [3, 2, 1])
  await req.write('x'.repeat(300000)) // more than one window
  assert.equal((await it.next()).value, 'echo:' + 'x'.repeat(300000))
  await req.write('bye')
  assert.equal((await it.next()).done, true)
  assert.equal(res.closeCode, 4000)
  const denied = await pool.handleStream(new Request({ url: '/ws/reject', websocket: true }))
  assert.equal(denied.status, 403)
})

test('a worker killed mid-stream: that stream fails, the pool goes on', async () => {
  const res = await pool.handleStream(new Request({ url: '/forever' }))
  const it = res[Symbol.asyncIterator]()
  assert.equal((await it.next()).value.toString(), 'first')
  const pid = Number(res.headers.get('x-pid'))
  process.kill(pid, 'SIGKILL')
  await assert.rejects(it.next(), WorkerLostError)
  await waitFor(() => pool.readyWorkers.length === 2 && pool.readyWorkers.every((w) => w.pid !== pid),
    20000, 'the replacement worker')
  const rs = await Promise.all(Array.from({ length: 8 }, () => pool.handleRequest(new Request({ url: '/hello' }))))
  assert.ok(rs.every((r) => r.status === 200))
})

test('an idle pool costs no CPU (the doorbell wait blocks in the kernel)', async () => {
  await pool.handleRequest(new Request({ url: '/hello' }))
  const before = process.cpuUsage()
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const used = process.cpuUsage(before)
  // polling would cost a core; a blocked poll(2) costs nothing but the timer above
  assert.ok(used.user + used.system < 100000, `${used.user + used.system} µs of CPU in 1 s idle`)
})

test('SIGHUP reload: streams in flight finish on the old workers, new ones take over', async () => {
  const old = new Set(pool.readyWorkers.map((w) => w.pid))
  const res = await pool.handleStream(new Request({ url: '/sse?n=6' })) // ~1.2 s
  sc.proc.kill('SIGHUP')
  await waitFor(() => pool.readyWorkers.length === 2 && pool.readyWorkers.every((w) => !old.has(w.pid)),
    30000, 'the new workers')
  let events = 0
  for await (const chunk of res) events += chunk.toString().split('data: ').length - 1
  assert.equal(events, 6) // the draining worker finished it
  const rs = await Promise.all(Array.from({ length: 8 }, () => pool.handleRequest(new Request({ url: '/pid' }))))
  assert.ok(rs.every((r) => r.status === 200 && !old.has(JSON.parse(r.body).pid)))
})

test('reconnects after the sidecar restarts on the same attach socket', async () => {
  const dir = sc.dir
  await sc.stop()
  await waitFor(() => pool.readyWorkers.length === 0, 10000, 'workers gone')
  await assert.rejects(Promise.race([pool.handleRequest(new Request({ url: '/hello' })),
    new Promise((resolve, reject) => setTimeout(() => reject(new Error('no worker')), 200))]))
  sc = await new Sidecar({ workers: 2, dir }).start()
  await waitFor(() => pool.readyWorkers.length === 2, 20000, 'reattached')
  const r = await pool.handleRequest(new Request({ url: '/hello' }))
  assert.equal(r.status, 200)
})
