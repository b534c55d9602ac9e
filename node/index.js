'use strict'
// @sidecar/host: hand requests from Node.js straight to a sidecar's Python worker pool through
// shared-memory rings (docs/protocol.md, "Attaching a host"), with @platformatic/python-node's
// API.  lib/python.js: the Python handler (starts or attaches to a sidecar); lib/pool.js: the
// host itself; lib/request.js + lib/headers.js: Request, Response, Headers.
const { Pool, WorkerLostError } = require('./lib/pool')
const { Request, Response, AppError } = require('./lib/request')
const { Headers } = require('./lib/headers')
const { Python } = require('./lib/python')

module.exports = { Python, Pool, Request, Response, Headers, AppError, WorkerLostError }
