// @platformatic/python-node's REFERENCE.md, "Basic ASGI Application": only the import line is
// changed (and the last line prints what the example leaves in syncResponse).
import { Python, Request } from '@sidecar/host'

// Create Python handler
const python = new Python({
  docroot: process.cwd(),    // Directory containing Python files
  appTarget: 'app:app'       // module:function format
})

// Handle a request
const request = new Request({
  method: 'GET',
  url: '/hello',
  headers: { 'Accept': 'text/plain' }
})

// Async handling
const response = await python.handleRequest(request)
console.log(response.status)        // 200
console.log(response.body.toString()) // 'Hello from Python!'

// Synchronous handling
const syncResponse = python.handleRequestSync(request)
console.log('sync:', syncResponse.status, syncResponse.body.toString())
