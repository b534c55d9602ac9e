// The python-node 2.0 announcement, "Server-Sent Events with FastAPI": only the import line is
// changed.  The stream never ends: stop it with Ctrl-C (the test stops it after two events).
import { Python, Request } from '@sidecar/host'

const python = new Python({
  docroot: './python-apps',
  appTarget: 'metrics_app:app'
})

async function monitorMetrics() {
  const req = new Request({ method: 'GET', url: 'http://localhost/metrics/stream' })

  console.log('Connecting to metrics stream...')
  const res = await python.handleStream(req)

  console.log(`Status: ${res.status}`)
  console.log(`Content-Type: ${res.headers.get('content-type')}`)
  console.log('\nReceiving metrics:\n')

  // Process metrics as they arrive
  for await (const chunk of res) {
    const lines = chunk.toString().split('\n')
    for (const line of lines) {
      if (line.startsWith('data: ')) {
        const data = JSON.parse(line.slice(6))
        console.log(`[${data.timestamp}]`)
        console.log(` CPU: ${data.cpu_usage.toFixed(1)}%`)
        console.log(` Memory: ${data.memory_usage.toFixed(1)}%`)
        console.log(` Connections: ${data.active_connections}`)
        console.log(` RPS: ${data.requests_per_second}`)
        console.log()
      }
    }
  }
}

monitorMetrics().catch(console.error)
