'use strict'
// @sidecar/host: hand requests from Node.js straight to a sidecar's Python worker pool through
// shared-memory rings (docs/protocol.md, "Attaching a host").  lib/pool.js is the host.
module.exports = require('./lib/pool')
