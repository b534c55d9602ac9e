'use strict'
// benchmarks/hosts: one bare ASGI app (app.py), three ways to reach it from Node.js, in one run:
//   rings        @sidecar/host (node/): new Python() starts a private sidecar; Node ->
//                shared-memory rings -> its workers
//   undici/uds   undici.Pool over sidecar's Unix socket (HTTP/1.1, keep-alive)
//   python-node  @platformatic/python-node 2.0: Python embedded in the Node process
// requests/s with 1 and 64 in flight, plus streamed-body throughput (MiB/s up and down).
//
//   (cd benchmarks/hosts && npm install) && node benchmarks/hosts/bench.js [--seconds 3]
//       [--workers 2] [--mib 64] [--only rings,undici,python-node] [--json]
// python-node links one libpython (3.13 for 2.0.0): found with `python3.13` on PATH, or
// PYTHON_NODE_LIBDIR / PYTHON_NODE_HOME.  Absolute figures drift on shared machines: compare
// the rows of one run.
const { spawnSync } = require('node:child_process')
const path = require('node:path')

const HERE = __dirname
const args = process.argv.slice(2)
const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : dflt }
const SECONDS = Number(opt('seconds', 3))
const WORKERS = Number(opt('workers', 2))
const MIB = Number(opt('mib', 64))
const ONLY = opt('only', 'rings,undici,python-node').split(',')
const CHUNK = Buffer.alloc(64 * 1024, 'x')

async function rate (fn, inflight) {
  await Promise.all(Array.from({ length: Math.min(inflight, 8) }, fn)) // warm up
  let n = 0
  const deadline = performance.now() + SECONDS * 1000
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (performance.now() < deadline) { await fn(); n++ }
  }))
  return n / SECONDS
}

async function throughput (fn) {
  const t = performance.now()
  await fn()
  return MIB / ((performance.now() - t) / 1000)
}

async function peer (name, hello, upload, download) {
  const row = { name }
  row.rps1 = await rate(hello, 1)
  row.rps64 = await rate(hello, 64)
  row.up = await throughput(upload)
  row.down = await throughput(download)
  return row
}

// The pool as a python-node user gets it: new Python() starts its own private sidecar.
async function rings () {
  const { Python, Request } = require('../../node')
  const python = new Python({ docroot: HERE, appTarget: 'app:app', workers: WORKERS,
    python: process.env.SIDECAR_PYTHON || path.join(HERE, '..', '..', '.venv', 'bin', 'python') })
  await python.ready()
  const t0 = Date.now()
  while (python.pool.readyWorkers.length < WORKERS && Date.now() - t0 < 20000) await new Promise((resolve) => setTimeout(resolve, 20))
  try {
    return await peer('@sidecar/host, new Python()',
      () => python.handleRequest(new Request({ url: '/hello' })),
      async () => {
        const req = new Request({ method: 'POST', url: '/upload' })
        const res = python.handleRequest(req)
        for (let i = 0; i < MIB * 16; i++) await req.write(CHUNK)
        await req.end()
        if (Number((await res).body) !== MIB << 20) throw new Error('upload lost bytes')
      },
      async () => {
        const res = await python.handleStream(new Request({ url: `/zeros?n=${MIB << 20}` }))
        let n = 0
        for await (const chunk of res) n += chunk.length
        if (n !== MIB << 20) throw new Error('download lost bytes')
      })
  } finally {
    await python.close()
  }
}

async function undiciPeer (sc) {
  const undici = require('undici')
  const pool = new undici.Pool('http://localhost', { socketPath: sc.uds, connections: 64, pipelining: 1 })
  try {
    return await peer('undici over the Unix socket',
      async () => { const r = await pool.request({ path: '/hello', method: 'GET' }); await r.body.arrayBuffer() },
      async () => {
        async function * body () { for (let i = 0; i < MIB * 16; i++) yield CHUNK }
        const r = await pool.request({ path: '/upload', method: 'POST', body: body() })
        if (Number(await r.body.text()) !== MIB << 20) throw new Error('upload lost bytes')
      },
      async () => {
        const r = await pool.request({ path: `/zeros?n=${MIB << 20}`, method: 'GET' })
        let n = 0
        for await (const chunk of r.body) n += chunk.length
        if (n !== MIB << 20) throw new Error('download lost bytes')
      })
  } finally {
    await pool.close()
  }
}

// python-node embeds libpython: run it in a child with the library on its path.
function pythonNodeChild () {
  let libdir = process.env.PYTHON_NODE_LIBDIR
  let home = process.env.PYTHON_NODE_HOME
  if (!libdir) {
    const fs = require('node:fs')
    const pyenv = path.join(require('node:os').homedir(), '.pyenv', 'versions')
    const candidates = ['python3.13', ...(fs.existsSync(pyenv) ? fs.readdirSync(pyenv) : [])
      .filter((v) => v.startsWith('3.13')).map((v) => path.join(pyenv, v, 'bin', 'python3.13'))]
    const python = candidates.find((c) => spawnSync(c, ['-c', ''], { env: { ...process.env, PYENV_VERSION: '' } }).status === 0)
    if (!python) return { name: 'python-node 2.0', error: 'needs python3.13 (libpython3.13.so) on PATH' }
    const out = spawnSync(python, ['-c', 'import sys, sysconfig; print(sysconfig.get_config_var("LIBDIR")); print(sys.base_prefix)'], { encoding: 'utf8' })
    if (out.status !== 0) return { name: 'python-node 2.0', error: 'needs python3.13 (libpython3.13.so) on PATH' }
    ;[libdir, home] = out.stdout.trim().split('\n')
  }
  const env = { ...process.env, LD_LIBRARY_PATH: libdir, PYTHONHOME: home }
  delete env.VIRTUAL_ENV
  const out = spawnSync(process.execPath, [__filename, '--child-python-node', ...args], { env, encoding: 'utf8', timeout: 600000 })
  if (out.status !== 0) return { name: 'python-node 2.0', error: (out.stderr || '').trim().split('\n').slice(-3).join(' ') }
  return JSON.parse(out.stdout.trim().split('\n').pop())
}

async function pythonNode () {
  const { Python, Request } = require('@platformatic/python-node')
  const py = new Python({ docroot: HERE, appTarget: 'app:app' })
  const big = Buffer.alloc(MIB << 20, 'x')
  return peer('python-node 2.0 (in-process)',
    () => py.handleRequest(new Request({ url: '/hello' })),
    async () => { // no streamed request body in its API: one buffered body
      const r = await py.handleRequest(new Request({ method: 'POST', url: '/upload', body: big }))
      if (Number(r.body.toString()) !== MIB << 20) throw new Error('upload lost bytes')
    },
    async () => { // and a buffered response
      const r = await py.handleRequest(new Request({ url: `/zeros?n=${MIB << 20}` }))
      if (r.body.length !== MIB << 20) throw new Error('download lost bytes')
    })
}

function table (rows) {
  const fmt = (v, d = 0) => (v === undefined ? '-' : v.toLocaleString('en-US', { maximumFractionDigits: d }))
  console.log(`\n${SECONDS}s per figure, ${WORKERS} sidecar workers, ${MIB} MiB bodies\n`)
  console.log('| peer | req/s, 1 in flight | req/s, 64 in flight | upload MiB/s | download MiB/s |')
  console.log('|---|---:|---:|---:|---:|')
  for (const r of rows) {
    if (r.error) console.log(`| ${r.name} | ${r.error} | | | |`)
    else console.log(`| ${r.name} | ${fmt(r.rps1)} | ${fmt(r.rps64)} | ${fmt(r.up)} | ${fmt(r.down)} |`)
  }
}

async function main () {
  if (args.includes('--child-python-node')) {
    console.log(JSON.stringify(await pythonNode()))
    process.exit(0) // the embedded interpreter keeps the loop alive
  }
  const { Sidecar } = require('../../node/test/support/sidecar')
  const rows = []
  if (ONLY.includes('rings')) rows.push(await rings())
  if (ONLY.includes('undici')) {
    const sc = await new Sidecar({ workers: WORKERS, app: 'app:app', appDir: HERE }).start()
    try {
      rows.push(await undiciPeer(sc))
    } finally {
      await sc.stop()
      sc.cleanup()
    }
  }
  if (ONLY.includes('python-node')) rows.push(pythonNodeChild())
  if (args.includes('--json')) {
    console.log(JSON.stringify({ seconds: SECONDS, workers: WORKERS, mib: MIB, rows }, null, 2))
  } else {
    table(rows)
  }
}

main().catch((err) => { console.error(err); process.exit(1) })
