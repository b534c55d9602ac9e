// @platformatic/python-node's REFERENCE.md, "Working with Request Data" and "Error Handling",
// run one after the other against a Starlette app: only the import line is changed, plus the
// handler the snippets assume and a print of the parsed response.
import { Python, Request } from '@sidecar/host'

const python = new Python({ docroot: './python-apps', appTarget: 'starlette_app:app' })

{
  // Handle POST request with JSON body
  const request = new Request({
    method: 'POST',
    url: '/api/data',
    headers: {
      'Content-Type': 'application/json',
      'Authorization': 'Bearer token123'
    },
    body: Buffer.from(JSON.stringify({ name: 'John', age: 30 }))
  })

  const response = await python.handleRequest(request)
  console.log(JSON.stringify(JSON.parse(response.body.toString())))
}

{
  const request = new Request({ url: '/api/missing' })

  const response = await python.handleRequest(request)

  // Check for Python exceptions
  if (response.exception) {
    console.error('Python error:', response.exception)
  }

  // Check status code
  if (response.status >= 400) {
    console.error('HTTP error:', response.status, response.body.toString())
  }

  // Access logs
  if (response.log.length > 0) {
    console.log('Python logs:', response.log.toString())
  }
}
