'use strict'
// The examples of @platformatic/python-node's README, REFERENCE.md and 2.0 announcement
// (examples/python-node/), run as a python-node user runs them, with `@platformatic/python-node`
// replaced by `@sidecar/host` in the import line: from a directory of their own, the package
// found in node_modules, the Python environment given by VIRTUAL_ENV.
const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ROOT } = require('./support/sidecar')

const VENV = process.env.SIDECAR_PYTHON ? path.dirname(path.dirname(process.env.SIDECAR_PYTHON)) : path.join(ROOT, '.venv')
let dir

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'scn-examples-'))
  fs.cpSync(path.join(ROOT, 'examples', 'python-node'), dir, { recursive: true })
  fs.mkdirSync(path.join(dir, 'node_modules', '@sidecar'), { recursive: true })
  fs.symlinkSync(path.join(ROOT, 'node'), path.join(dir, 'node_modules', '@sidecar', 'host'))
})

after(() => fs.rmSync(dir, { recursive: true, force: true }))

/** Runs an example; `until(out)` true: stop it (SIGTERM) and resolve. */
function run (file, { until, timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    // one worker each (python-node's PYTHON_NODE_WORKERS): the suite runs on 2 shared cores
    const env = { ...process.env, VIRTUAL_ENV: VENV, PYTHON_NODE_WORKERS: '1' }
    delete env.SIDECAR_PYTHON
    const child = spawn(process.execPath, [file], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${file} timed out: ${out} ${err}`)) }, timeoutMs)
    child.stdout.on('data', (d) => {
      out += d
      if (until && until(out)) child.kill('SIGTERM')
    })
    child.stderr.on('data', (d) => { err += d })
    child.on('exit', (code, sig) => {
      clearTimeout(timer)
      if (code !== 0 && !(until && sig === 'SIGTERM')) reject(new Error(`${file} exited ${code ?? sig}: ${out} ${err}`))
      else resolve({ out, err })
    })
  })
}

// three at a time: each starts its own sidecar, and the starts mostly wait on imports
describe('python-node examples', { concurrency: 3 }, () => {
  test('README "Basic Usage": FastAPI + pydantic, POST JSON', async () => {
    const { out } = await run('readme-fastapi.mjs')
    assert.equal(out.trim(), "{ name: 'Widget', price: 29.99 }")
  })

  test('REFERENCE "Basic ASGI Application": handleRequest, then handleRequestSync of the same request', async () => {
    const { out } = await run('reference-basic.mjs')
    assert.deepEqual(out.trim().split('\n'), ['200', 'Hello from Python!', 'sync: 200 Hello from Python!'])
  })

  test('REFERENCE "Working with Request Data" and "Error Handling" (Starlette)', async () => {
    const { out, err } = await run('reference-request-data-and-errors.mjs')
    assert.deepEqual(JSON.parse(out), { received: { name: 'John', age: 30 }, authorization: 'Bearer token123' })
    assert.match(err, /^HTTP error: 404 no such thing$/m)
    assert.doesNotMatch(err, /Python error|Python logs/)
  })

  test('REFERENCE "Header Manipulation": multi-value Headers in, response headers out', async () => {
    const { out } = await run('reference-headers.mjs')
    assert.match(out, /Response content type: application\/json/)
    assert.match(out, /'x-handled-by': 'starlette'/)
    const body = JSON.parse(out.split('Body: ')[1])
    assert.deepEqual(body, { accept: ['text/html', 'application/json', 'text/xml'], 'accept-language': ['en-US', 'en'], authorization: 'Bearer token123' })
  })

  test('2.0 announcement: SSE metrics from FastAPI StreamingResponse, one event per second', async () => {
    const { out } = await run('sse-metrics.mjs', { until: (o) => (o.match(/ RPS: \d+/g) || []).length >= 2 })
    assert.match(out, /Status: 200\nContent-Type: text\/event-stream/)
    const stamps = [...out.matchAll(/^\[(.+)\]$/gm)].map((m) => Date.parse(m[1]))
    assert.ok(stamps.length >= 2 && stamps[1] - stamps[0] >= 900, 'events come as the app sends them')
  })

  test('2.0 announcement: WebSocket assistant (FastAPI), write/read turns, then end()', async () => {
    const { out } = await run('websocket-assistant.mjs')
    assert.match(out, /Assistant: Hello! I am your AI assistant/)
    assert.match(out, /Assistant: Hello! How can I help you today\?/)
    assert.match(out, /Assistant: Available commands/)
    assert.match(out, /Assistant: System status: All services operational/)
    assert.match(out, /Assistant: The current time is \d\d:\d\d:\d\d/)
    assert.match(out, /Assistant: You said: "Tell me about yourself"/)
    assert.match(out, /Closing connection\.\.\./)
  })

  test('2.0 announcement: request streaming, write() while handleStream() runs (Starlette)', async () => {
    const { out } = await run('request-streaming.mjs')
    assert.equal(out.trim(), '200 received 600000 bytes')
  })
})
