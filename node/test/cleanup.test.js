'use strict'
// A Node process that uses new Python() and is killed with SIGKILL leaves nothing behind: no
// sidecar process, nothing in /dev/shm, no private directory (lib/launcher.py).
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { ROOT, waitFor } = require('./support/sidecar')

const PYTHON = process.env.SIDECAR_PYTHON || path.join(ROOT, '.venv', 'bin', 'python')

function alive (pid) {
  try { // a zombie is as dead as it gets until someone reaps it
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0] !== 'Z'
  } catch {
    return false
  }
}

const shm = () => new Set(fs.readdirSync('/dev/shm'))

test('SIGKILL of Node: the sidecar and its workers exit, /dev/shm and the private dir are left clean', async () => {
  const before = shm()
  const child = spawn(process.execPath, ['-e', `
    const { Python, Request } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const py = new Python({ docroot: ${JSON.stringify(path.join(__dirname, 'fixtures'))}, appTarget: 'dropin_app:app',
      workers: 2, python: ${JSON.stringify(PYTHON)} })
    ;(async () => {
      await py.ready()
      while (py.pool.readyWorkers.length < 2) await new Promise((resolve) => setTimeout(resolve, 20))
      const res = await py.handleStream(new Request({ url: '/forever' }))   // in flight when killed
      await res.next()
      console.log(JSON.stringify({ pid: py.pid, dir: path.dirname(py.pool.path),
        workers: py.pool.readyWorkers.map((w) => w.pid) }))
      setInterval(() => {}, 1000)
    })()
    const path = require('node:path')
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => { out += d })
  const info = await waitFor(() => out.includes('\n') && JSON.parse(out), 20000, 'the child to be serving')
  assert.ok(alive(info.pid) && info.workers.length === 2 && info.workers.every(alive))
  assert.ok(fs.existsSync(info.dir))
  const mapped = fs.readFileSync(`/proc/${info.workers[0]}/maps`, 'utf8')
  assert.match(mapped, /\/dev\/shm\/.*\(deleted\)/, 'the worker maps its rings from /dev/shm')

  const t0 = Date.now()
  child.kill('SIGKILL')
  await waitFor(() => ![info.pid, ...info.workers].some(alive), 15000, 'the sidecar and its workers to exit')
  const took = Date.now() - t0
  await waitFor(() => !fs.existsSync(info.dir), 5000, 'the private directory to go')
  // other suites may create segments meanwhile; none of ours may remain
  await waitFor(() => [...shm()].every((name) => before.has(name)), 5000, '/dev/shm to be as before')
  assert.ok(took < 10000, `${took} ms to stop`)
})
