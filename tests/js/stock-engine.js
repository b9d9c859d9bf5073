// A stock RFC 38 settlement engine: the connector-facing side is ilp-settlement-core 0.1.1
// from npm, unchanged (its HTTP server, memory store, idempotency, credit retries and
// leftovers). Only the "ledger" is ours: an append-only JSON-lines file both engines share,
// the way a real engine writes to and watches a blockchain.
//
//   settle(account, amount)  -> appends {"id","from","to","amount"} to the ledger file
//   every 100 ms             -> each line paid to us not yet credited: creditSettlement(
//                               the account of its payer, amount, id)  (id = Idempotency-Key)
//   setupAccount / message   -> {"type":"hello","address":..}: the peers learn each other's
//                               ledger address through the connectors (peer.settle)
//
// Environment: ENGINE_PORT, CONNECTOR_URL (the node's settlement API), LEDGER_FILE,
// LEDGER_ADDRESS (ours on the ledger). Prints "listening" once the server is up.
'use strict'

const fs = require('fs')
const { BigNumber } = require('bignumber.js')
const { startServer, createMemoryStore } = require('ilp-settlement-core')

const port = Number(process.env.ENGINE_PORT)
const connectorUrl = process.env.CONNECTOR_URL
const ledgerFile = process.env.LEDGER_FILE
const me = process.env.LEDGER_ADDRESS
if (!port || !connectorUrl || !ledgerFile || !me) {
  console.error('ENGINE_PORT, CONNECTOR_URL, LEDGER_FILE and LEDGER_ADDRESS are required')
  process.exit(2)
}

const peerOf = new Map() // account id -> the peer's ledger address
const accountOf = new Map() // the peer's ledger address -> account id
const credited = new Set() // ledger line ids handed to creditSettlement

function learn(accountId, address) {
  peerOf.set(accountId, address)
  accountOf.set(address, accountId)
}

function readLedger() {
  let text = ''
  try {
    text = fs.readFileSync(ledgerFile, 'utf8')
  } catch (err) {
    if (err.code !== 'ENOENT') throw err
  }
  return text
    .split('\n')
    .filter(line => line.trim() !== '')
    .map(line => JSON.parse(line))
}

const connectEngine = async services => {
  const hello = async accountId => {
    const reply = await services.sendMessage(accountId, { type: 'hello', address: me })
    if (!reply || typeof reply.address !== 'string') {
      throw new Error(`no ledger address in the peer's reply: ${JSON.stringify(reply)}`)
    }
    learn(accountId, reply.address)
  }

  const timer = setInterval(() => {
    for (const payment of readLedger()) {
      if (payment.to !== me || credited.has(payment.id)) continue
      const accountId = accountOf.get(payment.from)
      if (accountId === undefined) continue // not known yet: once the hello went through
      credited.add(payment.id)
      services.creditSettlement(accountId, new BigNumber(payment.amount), payment.id)
    }
  }, 100)

  return {
    async setupAccount(accountId) {
      await hello(accountId)
    },
    async settle(accountId, amount) {
      // The framework counts a thrown error as "all settled": say "nothing settled" instead,
      // so the amount stays queued for the next settle request.
      if (!peerOf.has(accountId)) {
        try {
          await hello(accountId)
        } catch (err) {
          console.error(`settle: peer of account ${accountId} unknown: ${err.message}`)
          return new BigNumber(0)
        }
      }
      const line = { id: `${me}-${Date.now()}-${Math.random()}`.replace(/[.:]/g, '-'),
        from: me, to: peerOf.get(accountId), amount: amount.toFixed() }
      fs.appendFileSync(ledgerFile, JSON.stringify(line) + '\n')
      return amount
    },
    async handleMessage(accountId, message) {
      if (message && message.type === 'hello' && typeof message.address === 'string') {
        learn(accountId, message.address)
        return { address: me }
      }
      throw new Error(`unknown message ${JSON.stringify(message)}`)
    },
    async closeAccount(accountId) {
      accountOf.delete(peerOf.get(accountId))
      peerOf.delete(accountId)
    },
    async disconnect() {
      clearInterval(timer)
    }
  }
}

startServer(connectEngine, createMemoryStore(), { port, connectorUrl }).then(
  () => console.log('listening'),
  err => {
    console.error(err)
    process.exit(1)
  }
)
