// A JS STREAM receiver (ilp-protocol-stream, the JS reference) behind an ilp-plugin-http: it
// prints one JSON line with a destination and shared secret (base64) for a sender, then counts
// what arrives and prints a second JSON line once EXPECT units arrived, once money stopped
// arriving for a second, or after WAIT_MS.
//
// Environment: CONNECTOR_URL (POST /ilp), RECEIVER_PORT (where the plugin listens for the
// connector), RECEIVER_TOKEN (what it sends the connector), INCOMING_TOKEN (what the connector
// sends it), EXPECT, WAIT_MS (default 60000).
'use strict'
const PluginHttp = require('ilp-plugin-http')
const { createServer } = require('ilp-protocol-stream')

function env (name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

async function main () {
  let received = 0n
  let moneyEvents = 0
  let lastMoney = 0
  const plugin = new PluginHttp({
    incoming: { port: Number(env('RECEIVER_PORT')), staticToken: env('INCOMING_TOKEN') },
    outgoing: { url: env('CONNECTOR_URL'), staticToken: env('RECEIVER_TOKEN') }
  })
  const server = await createServer({ plugin })
  server.on('connection', (connection) => {
    connection.on('stream', (stream) => {
      stream.setReceiveMax('18446744073709551615')
      stream.on('money', (amount) => {
        received += BigInt(amount)
        moneyEvents += 1
        lastMoney = Date.now()
      })
    })
  })
  const { destinationAccount, sharedSecret } = server.generateAddressAndSecret()
  console.log(JSON.stringify({
    destination_account: destinationAccount,
    shared_secret: sharedSecret.toString('base64'),
    asset: `${server.serverAssetCode}/${server.serverAssetScale}`
  }))
  const expect = BigInt(env('EXPECT'))
  const deadline = Date.now() + Number(process.env.WAIT_MS || 60000)
  while (received < expect && Date.now() < deadline && !(lastMoney && Date.now() - lastMoney > 1000)) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  // Anything more arriving now would be an overpayment: wait a moment to see it.
  await new Promise((resolve) => setTimeout(resolve, 300))
  console.log(JSON.stringify({ received: received.toString(), money_events: moneyEvents }))
  await server.close()
  process.exit(0)
}

main().catch((err) => {
  console.error(`stream-receive: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})
