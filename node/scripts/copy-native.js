'use strict'
// prepack: the tarball carries the C sources of the ring library, so that `npm install`
// compiles libsidecar_ring.so where the package lands (build.js).  postpack (--remove): the
// copy goes again, so that the repository has one set of sources.
const fs = require('node:fs')
const path = require('node:path')

const from = path.join(__dirname, '..', '..', 'native')
const to = path.join(__dirname, '..', 'native')
if (process.argv.includes('--remove')) {
  fs.rmSync(to, { recursive: true, force: true })
  process.exit(0)
}
fs.mkdirSync(to, { recursive: true })
for (const f of ['ring.c', 'ring.h', 'host.c', 'host.h']) fs.copyFileSync(path.join(from, f), path.join(to, f))
