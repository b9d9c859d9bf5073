// A STREAM payment (ilp-protocol-stream, the JS reference) through the connector under test:
// a receiver behind one ilp-plugin-http, a sender behind another, both talking ILP-over-HTTP
// to the connector. The sender pays AMOUNT (its base units); the script prints one JSON line:
// what the sender sent, what it says was delivered, and what the receiver counted.
//
// Environment: CONNECTOR_URL (POST /ilp), SENDER_PORT and RECEIVER_PORT (where each plugin
// listens for the connector), SENDER_TOKEN / RECEIVER_TOKEN (what each sends the connector),
// INCOMING_TOKEN (what the connector sends both), AMOUNT.
'use strict'
const PluginHttp = require('ilp-plugin-http')
const { createServer, createConnection } = require('ilp-protocol-stream')

function env (name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

function plugin (port, token) {
  return new PluginHttp({
    incoming: { port: Number(port), staticToken: env('INCOMING_TOKEN') },
    outgoing: { url: env('CONNECTOR_URL'), staticToken: token }
  })
}

async function main () {
  let received = 0n
  let moneyEvents = 0
  const server = await createServer({ plugin: plugin(env('RECEIVER_PORT'), env('RECEIVER_TOKEN')) })
  server.on('connection', (connection) => {
    connection.on('stream', (stream) => {
      stream.setReceiveMax('18446744073709551615')
      stream.on('money', (amount) => {
        received += BigInt(amount)
        moneyEvents += 1
      })
    })
  })
  const { destinationAccount, sharedSecret } = server.generateAddressAndSecret()
  const connection = await createConnection({
    plugin: plugin(env('SENDER_PORT'), env('SENDER_TOKEN')),
    destinationAccount,
    sharedSecret
  })
  const stream = connection.createStream()
  await stream.sendTotal(env('AMOUNT'), { timeout: 60000 })
  await connection.end()
  // The receiver's last money events may trail the sender's last Fulfill by a moment.
  const deadline = Date.now() + 5000
  while (received < BigInt(connection.totalDelivered) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  console.log(JSON.stringify({
    source: `${connection.sourceAssetCode}/${connection.sourceAssetScale}`,
    destination: `${connection.destinationAssetCode}/${connection.destinationAssetScale}`,
    sent: connection.totalSent,
    delivered: connection.totalDelivered,
    received: received.toString(),
    money_events: moneyEvents,
    rate: connection.minimumAcceptableExchangeRate
  }))
  await server.close()
  process.exit(0)
}

main().catch((err) => {
  console.error(`stream-pay: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})
