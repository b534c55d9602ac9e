// The python-node 2.0 announcement, "HTTP Request Streaming" (against the Starlette app): only
// the import line is changed, plus the handler, the chunks the snippet assumes, and a print;
// the snippet's `async () => {…}()` is not valid JavaScript, so it is `async function () {…}()`.
import { Python, Request } from '@sidecar/host'

const python = new Python({ docroot: './python-apps', appTarget: 'starlette_app:app' })
const [chunk1, chunk2, chunk3] = [Buffer.alloc(100000, 1), Buffer.alloc(200000, 2), Buffer.alloc(300000, 3)]

const req = new Request({
  method: 'POST',
  url: '/upload',
  headers: { 'Content-Type': 'application/octet-stream' }
})

// Dispatch request and write body concurrently
const [res] = await Promise.all([
  python.handleStream(req),
  async function () {
    // Stream chunks to Python
    await req.write(chunk1)
    await req.write(chunk2)
    await req.write(chunk3)
    await req.end()
  }()
])

let text = ''
for await (const chunk of res) text += chunk
console.log(res.status, text)
