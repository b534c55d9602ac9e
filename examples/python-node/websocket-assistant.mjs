// The python-node 2.0 announcement, "WebSocket Support": only the import line is changed.
import { Python, Request } from '@sidecar/host'

const python = new Python({
  docroot: './python-apps',
  appTarget: 'assistant_app:app'
})

async function runAssistant() {
  // Create WebSocket request
  const req = new Request({ url: 'http://localhost/ws/assistant', websocket: true })

  console.log('Connecting to AI Assistant...\n')
  const res = await python.handleStream(req)

  // Messages to send to the assistant
  const messages = [
    'Hello',
    '/help',
    '/status',
    'What is the time?',
    'Tell me about yourself'
  ]

  let messageIndex = 0

  // Clean for-await loop: read response, then write next message
  for await (const chunk of res) {
    const response = chunk.toString()
    console.log(`Assistant: ${response}\n`)

    // Send next message if we have more
    if (messageIndex < messages.length) {
      const nextMessage = messages[messageIndex]
      console.log(`You: ${nextMessage}`)
      await req.write(nextMessage)
      messageIndex++
    } else {
      // No more messages, close the connection
      console.log('Closing connection...')
      await req.end()
      break
    }
  }
}

runAssistant().catch(console.error)
