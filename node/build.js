'use strict'
// Builds the ring library + host library as one shared object for koffi: gcc, no node-gyp.
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const native = path.join(__dirname, '..', 'native')
const out = path.join(__dirname, 'build', 'libsidecar_ring.so')
const sources = ['ring.c', 'host.c'].map((f) => path.join(native, f))
const newest = Math.max(...[...sources, path.join(native, 'ring.h'), path.join(native, 'host.h')]
  .map((f) => fs.statSync(f).mtimeMs))

if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < newest) {
  fs.mkdirSync(path.dirname(out), { recursive: true })
  execFileSync(process.env.CC || 'gcc', ['-std=c11', '-O2', '-Wall', '-Wextra', '-fPIC', '-shared',
    '-I', native, '-o', out, ...sources], { stdio: 'inherit' })
}
module.exports = out
