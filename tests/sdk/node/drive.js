// Drive one Node Segment-format library, in its default setup, against a Pier server; print
// what it sent as one JSON line: {"uploads": [{"body", "status", "answered_ms"}], "attempts": N,
// "errors": [...]}.
//
//     node drive.js segment|rudder PIER_URL WRITE_KEY RUN
//
// What was sent is read from the library's own observable side, without changing its setup:
// @segment/analytics-node emits http_request / http_response / error events; for
// @rudderstack/rudder-sdk-node, interceptors on its axios instance see every attempt (axios-retry
// goes through them too) and each answer, and the calls' callbacks get its errors.
'use strict'

const zlib = require('zlib')

const [sdk, url, key, run] = process.argv.slice(2)
const uploads = []
const errors = []
let attempts = 0
const QUEUE_WAIT_MS = 1500 // calls wait in the library's queue this long before the flush

function makeCalls(client, done) {
  const user = `${run}-user`
  const traits = { email: `${run}@example.com`, timezone: 'America/Chicago', plan: 'pro' }
  client.identify({ userId: user, traits }, done)
  client.alias({ previousId: `${run}-anon`, userId: user }, done)
  client.track({ userId: user, event: 'Order Completed', properties: { total: 99.5 } }, done)
  client.page({ userId: user, name: 'Pricing', category: 'Docs', properties: { title: 'P' } }, done)
  client.screen({ userId: user, name: 'Settings', properties: { tab: 2 } }, done)
  for (let i = 0; i < 3; i++) {
    client.track({ userId: user, event: 'Item Added', properties: { i } }, done)
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function segment() {
  const { Analytics } = require('@segment/analytics-node')
  const client = new Analytics({ writeKey: key, host: url, path: '/api/client/segment' })
  client.on('http_request', () => attempts++)
  client.on('http_response', (r) => {
    uploads.push({ body: JSON.parse(r.body), status: r.status, answered_ms: Date.now() })
  })
  client.on('error', (e) => errors.push(String((e && e.reason) || e)))
  makeCalls(client, (err) => err && errors.push(String(err)))
  await sleep(QUEUE_WAIT_MS)
  await client.closeAndFlush()
}

async function rudder() {
  const Analytics = require('@rudderstack/rudder-sdk-node')
  const client = new Analytics(key, { dataPlaneUrl: `${url}/api/client/segment` })
  const http = client.axiosInstance
  http.interceptors.request.use((config) => {
    attempts++
    return config
  })
  const answered = (response) => {
    const data = response.config.data // the gzip body as sent
    const body = JSON.parse(Buffer.isBuffer(data) ? zlib.gunzipSync(data) : data)
    uploads.push({ body, status: response.status, answered_ms: Date.now() })
  }
  http.interceptors.response.use(
    (response) => {
      answered(response)
      return response
    },
    (error) => {
      if (error.response) answered(error.response)
      return Promise.reject(error)
    },
  )
  makeCalls(client, (err) => err && errors.push(String(err)))
  await sleep(QUEUE_WAIT_MS)
  await client.flush()
}

const drivers = { segment, rudder }
drivers[sdk]()
  .catch((err) => errors.push(`thrown: ${err}`))
  .finally(() => console.log(JSON.stringify({ uploads, attempts, errors })))
