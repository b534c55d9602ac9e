'use strict'
// Builds the ring library + host library as one shared object for koffi: gcc, no node-gyp.
// Run at `npm install` (the package's install script) and checked again on require: it
// rebuilds only when a source is newer than the library.  The sources are ../native in the
// repository, or native/ inside the package (copied there while `npm pack` runs, see
// scripts/copy-native.js).
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const FILES = ['ring.c', 'host.c', 'ring.h', 'host.h']
const native = [path.join(__dirname, '..', 'native'), path.join(__dirname, 'native')]
  .find((dir) => FILES.every((f) => fs.existsSync(path.join(dir, f))))
const out = path.join(__dirname, 'build', 'libsidecar_ring.so')

class BuildError extends Error {}

function build () {
  if (!native) {
    if (fs.existsSync(out)) return out
    throw new BuildError(`@sidecar/host: the C sources (${FILES.join(', ')}) are missing from ${__dirname}/native`)
  }
  const sources = FILES.map((f) => path.join(native, f))
  const newest = Math.max(...sources.map((f) => fs.statSync(f).mtimeMs))
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= newest) return out
  const cc = process.env.CC || 'gcc'
  fs.mkdirSync(path.dirname(out), { recursive: true })
  try {
    execFileSync(cc, ['-std=c11', '-O2', '-Wall', '-Wextra', '-fPIC', '-shared', '-I', native,
      '-o', out, ...sources.filter((f) => f.endsWith('.c'))], { stdio: ['ignore', 'inherit', 'inherit'] })
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new BuildError(`@sidecar/host: cannot build libsidecar_ring.so: C compiler "${cc}" not found (install gcc, e.g. apt-get install gcc, or set CC)`)
    }
    throw new BuildError(`@sidecar/host: ${cc} failed to build libsidecar_ring.so (its output is above)`)
  }
  return out
}

if (require.main === module) {
  try {
    build()
  } catch (err) {
    if (!(err instanceof BuildError)) throw err
    console.error(err.message)
    process.exit(1)
  }
} else {
  module.exports = build()
}
