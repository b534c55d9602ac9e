'use strict'
// Runs a real sidecar (the Python package of this repository) for the tests.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..', '..', '..')
const PYTHON = process.env.SIDECAR_PYTHON || path.join(ROOT, '.venv', 'bin', 'python')

async function waitFor (pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await pred()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

class Sidecar {
  constructor ({ workers = 2, app = 'node.test.app:app', dir, appDir = ROOT, args = [] } = {}) {
    this.appDir = appDir
    this.extraArgs = args
    this.workers = workers
    this.app = app
    this.dir = dir || fs.mkdtempSync(path.join(os.tmpdir(), 'scn-'))
    this.attach = path.join(this.dir, 'a.sock')
    this.uds = path.join(this.dir, 's.sock')
    this.log = ''
  }

  async start () {
    this.proc = spawn(PYTHON, ['-m', 'sidecar', this.app, '--uds', this.uds, '--attach-socket',
      this.attach, '--workers', String(this.workers), '--app-dir', this.appDir, '--no-access-log',
      '--timeout-graceful-shutdown', '5', ...this.extraArgs], { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] })
    this.proc.stderr.on('data', (d) => { this.log += d })
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, sig) => resolve(code ?? sig)))
    await waitFor(() => this.log.includes('sidecar ready') || this.proc.exitCode !== null, 30000, 'sidecar ready')
    if (this.proc.exitCode !== null) throw new Error(`sidecar exited: ${this.log}`)
    return this
  }

  workerPids () {
    const out = []
    for (const pid of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        if (Number(fields[1]) === this.proc.pid && fields[0] !== 'Z') out.push(Number(pid))
      } catch {}
    }
    return out
  }

  async stop () {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM')
    return this.exited
  }

  cleanup () {
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

module.exports = { Sidecar, waitFor, ROOT }
