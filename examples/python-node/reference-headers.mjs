// @platformatic/python-node's REFERENCE.md, "Header Manipulation": only the import line is
// changed, plus the handler the snippet assumes.
import { Headers, Request, Python } from '@sidecar/host'

const python = new Python({ docroot: './python-apps', appTarget: 'starlette_app:app' })

// Create headers with multiple values
const headers = new Headers({
  'Accept': ['text/html', 'application/json'],
  'Accept-Language': ['en-US', 'en']
})

// Add more values
headers.add('Accept', 'text/xml')
headers.set('Authorization', 'Bearer token123')

const request = new Request({
  method: 'GET',
  url: '/api/headers',
  headers: headers
})

const response = await python.handleRequest(request)

// Examine response headers
console.log('Response content type:', response.headers.get('content-type'))
console.log('All headers:', response.headers.toJSON())
console.log('Body:', response.body.toString())
