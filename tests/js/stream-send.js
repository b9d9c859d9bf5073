// A JS STREAM sender (ilp-protocol-stream, the JS reference) paying an SPSP receiver: it asks
// SPSP_URL for a destination and shared secret (RFC 9), then sends AMOUNT of its base units
// through the connector under test, behind an ilp-plugin-http. Prints one JSON line: what it
// sent and what it says was delivered.
//
// Environment: CONNECTOR_URL (POST /ilp), SENDER_PORT (where the plugin listens for the
// connector), SENDER_TOKEN (what it sends the connector), INCOMING_TOKEN (what the connector
// sends it), SPSP_URL, AMOUNT.
'use strict'
const http = require('http')
const PluginHttp = require('ilp-plugin-http')
const { createConnection } = require('ilp-protocol-stream')

function env (name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

function spsp (url) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers: { accept: 'application/spsp4+json, application/spsp+json' } }, (response) => {
      let body = ''
      response.on('data', (chunk) => { body += chunk })
      response.on('end', () => {
        if (response.statusCode !== 200) return reject(new Error(`SPSP ${url}: ${response.statusCode} ${body}`))
        if (!/^application\/spsp4\+json/.test(response.headers['content-type'] || '')) {
          return reject(new Error(`SPSP ${url}: content type ${response.headers['content-type']}`))
        }
        resolve(JSON.parse(body))
      })
    })
    request.on('error', reject)
  })
}

async function main () {
  const { destination_account: destinationAccount, shared_secret: sharedSecret } = await spsp(env('SPSP_URL'))
  const plugin = new PluginHttp({
    incoming: { port: Number(env('SENDER_PORT')), staticToken: env('INCOMING_TOKEN') },
    outgoing: { url: env('CONNECTOR_URL'), staticToken: env('SENDER_TOKEN') }
  })
  const connection = await createConnection({
    plugin,
    destinationAccount,
    sharedSecret: Buffer.from(sharedSecret, 'base64')
  })
  const stream = connection.createStream()
  await stream.sendTotal(env('AMOUNT'), { timeout: 60000 })
  await connection.end()
  console.log(JSON.stringify({
    destination_account: destinationAccount,
    source: `${connection.sourceAssetCode}/${connection.sourceAssetScale}`,
    destination: `${connection.destinationAssetCode}/${connection.destinationAssetScale}`,
    sent: connection.totalSent,
    delivered: connection.totalDelivered
  }))
  process.exit(0)
}

main().catch((err) => {
  console.error(`stream-send: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
})
