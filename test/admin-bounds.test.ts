// What one client of the admin listener can hold: an /events subscriber that does not read is
// dropped once 256 KiB wait unsent (said in the log) while one that reads gets every event; live
// streams are capped per address and in all; a pipelined request closes the connection instead of
// queueing answers nobody reads; the listener holds at most 256 connections; and /metrics failing
// is a 500, not an unhandled rejection.
import { connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import type { Logger } from '../lib/core/log.js'
import { createActivity, type Activity } from '../lib/observe/activity.js'
import { createAdmin } from '../lib/observe/admin.js'
import { createMetrics, type Metrics } from '../lib/observe/metrics.js'
import { statusOf } from './helpers/net.js'

const LIMIT = 256 * 1024

interface Logged {
  readonly message: string
  readonly fields: Record<string, unknown>
}

/** A logger that keeps what it is given. */
function recordingLogger(): { log: Logger; lines: Logged[] } {
  const lines: Logged[] = []
  const keep = (message: string, fields?: object) => void lines.push({ message, fields: { ...fields } })
  return { log: { error: keep, warn: keep, info: keep, debug: keep, isInfoEnabled: () => true }, lines }
}

/** The admin listener on its own activity; `unsubscribed` resolves each time an /events stream ends on the server. */
async function setup(t: Test, metrics: Metrics = createMetrics(() => new Set())) {
  const activity = createActivity()
  let onUnsubscribe: () => void = () => undefined
  const watched: Activity = {
    ...activity,
    subscribe(listener) {
      const unsubscribe = activity.subscribe(listener)
      return () => {
        unsubscribe()
        onUnsubscribe()
      }
    },
  }
  const unsubscribed = () => new Promise<void>((resolve) => (onUnsubscribe = resolve))
  let states = 0
  const { log, lines } = recordingLogger()
  const admin = createAdmin(
    { host: '127.0.0.1', port: 0 },
    {
      activity: watched,
      metrics,
      open: () => new Set(),
      ready: () => true,
      mode: () => {
        states++
        return 'enforce'
      },
      rulesFile: 'rules.json',
      reload: () => ({ ok: true }),
      allow: () => ({ status: 409, body: { ok: false, message: 'not here' } }),
      token: 'x'.repeat(16),
      tokenFile: 'admin-token',
      log,
    },
  )
  const port = (await admin.listen()).port
  t.teardown(() => admin.close())
  let serial = 0
  /** one denial, about 2 KB as an event */
  const deny = () => activity.observe({ type: 'decision', id: `d-${++serial}`, client: '127.0.0.1:1', method: 'CONNECT', target: 'far.test:443', decision: 'deny', reason: 'no-rule', detail: 'x'.repeat(2000), mode: 'enforce', wouldDeny: false })
  return { port, lines, deny, unsubscribed, states: () => states }
}

interface Stream {
  readonly socket: Socket
  /** the response head and whatever came with it */
  readonly first: string
  /** every byte read so far (a stream that does not read stops at `first`) */
  text(): string
}

/** GET /events from `source`; after the first bytes it reads on, or (read: false) never reads again. */
function subscribe(port: number, source: string, read: boolean): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: source })
    let text = ''
    socket.on('error', reject)
    socket.on('data', (d: Buffer) => {
      const first = text === ''
      text += d.toString('latin1')
      if (!first) return
      if (!read) socket.pause()
      resolve({ socket, first: text, text: () => text })
    })
    socket.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  })
}

const tick = () => new Promise((resolve) => setImmediate(resolve))
const eventsIn = (text: string) => text.split('event: decision\n').length - 1

t.test('/events: a subscriber that does not read is dropped after 256 KiB unsent; one that reads gets every event', async (t) => {
  const { port, lines, deny } = await setup(t)
  const idle = await subscribe(port, '127.0.0.1', false)
  const reader = await subscribe(port, '127.0.0.2', true)
  let dropped = false
  idle.socket.once('close', () => (dropped = true))
  // the kernel's socket buffers take a few MB first (about 4 MB here); 16 MB of events is far more than they hold
  let produced = 0
  while (!lines.some((l) => l.message.startsWith('events subscriber dropped')) && produced < 8_000) {
    for (let i = 0; i < 20; i++) deny()
    produced += 20
    await tick()
  }
  const line = lines.find((l) => l.message === 'events subscriber dropped: it does not read')
  t.ok(line, `dropped, after ${produced} events`)
  if (!line) return reader.socket.destroy()
  const unsent = Number(line.fields.unsent)
  t.ok(unsent > LIMIT && unsent < LIMIT + 4096, `at most one event over the bound was kept (${unsent} bytes)`)
  t.match(line.fields, { client: /^127\.0\.0\.1:\d+$/, limit: LIMIT })
  idle.socket.resume()
  await new Promise((resolve) => (dropped ? resolve(undefined) : idle.socket.once('close', resolve)))
  t.ok(dropped, 'its connection is closed')
  await new Promise<void>((resolve) => {
    const check = () => (eventsIn(reader.text()) >= produced ? resolve() : reader.socket.once('data', check))
    check()
  })
  t.equal(eventsIn(reader.text()), produced, 'the reading subscriber got every event')
  reader.socket.destroy()
})

t.test('/events: 8 streams per address and 32 in all, with a clear refusal beyond; a closed one frees its place', async (t) => {
  const { port, unsubscribed } = await setup(t)
  const open: Stream[] = []
  t.teardown(() => open.forEach((s) => s.socket.destroy()))
  for (let i = 0; i < 8; i++) open.push(await subscribe(port, '127.0.0.1', true))
  t.same(open.map((s) => statusOf(s.first)), Array<number>(8).fill(200))
  const ninth = await subscribe(port, '127.0.0.1', true)
  t.equal(statusOf(ninth.first), 429)
  t.match(ninth.first, /too many live event streams from this address \(at most 8\): close a dashboard tab/)
  for (const source of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) for (let i = 0; i < 8; i++) open.push(await subscribe(port, source, true))
  t.same(open.map((s) => statusOf(s.first)), Array<number>(32).fill(200))
  const beyond = await subscribe(port, '127.0.0.5', true)
  t.equal(statusOf(beyond.first), 503)
  t.match(beyond.first, /too many live event streams \(at most 32 in all\)/)
  const gone = unsubscribed()
  open.shift()?.socket.destroy()
  await gone
  const after = await subscribe(port, '127.0.0.5', true)
  t.equal(statusOf(after.first), 200, 'a place is free again')
  open.push(after)
})

/** Writes `bytes` on a new connection and reads until the server closes it (or resets it). */
function exchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(bytes))
    let text = ''
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
    socket.on('close', () => resolve(text))
    socket.on('error', () => undefined)
  })
}

t.test('300 pipelined requests: one is answered, then the connection is closed (no queue of answers)', async (t) => {
  const { port, states } = await setup(t)
  const text = await exchange(port, `GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`.repeat(300))
  t.equal(text.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, 'one answer')
  t.equal(states(), 1, 'the state was made once')
})

t.test('a client that sends its next request after reading the answer keeps its connection', async (t) => {
  const { port, states } = await setup(t)
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  let text = ''
  for (let i = 1; i <= 3; i++) {
    socket.write(`GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
    await new Promise<void>((resolve) => {
      const check = () => ((text.match(/"mode":"enforce"/g)?.length ?? 0) >= i ? resolve() : socket.once('data', read))
      const read = (d: Buffer) => {
        text += d.toString('latin1')
        check()
      }
      check()
    })
  }
  t.equal(states(), 3)
  t.equal(text.match(/HTTP\/1\.1 200 /g)?.length, 3)
})

t.test('the admin listener holds at most 256 connections', async (t) => {
  const { port } = await setup(t)
  const sockets: Socket[] = []
  t.teardown(() => sockets.forEach((s) => s.destroy()))
  for (let i = 0; i < 256; i++) sockets.push(await new Promise<Socket>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket))
  }))
  const refused = await exchange(port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
  t.equal(refused, '', 'the 257th is closed unanswered')
  const held = sockets[0]
  const answer = new Promise<string>((resolve) => held?.once('data', (d: Buffer) => resolve(d.toString('latin1'))))
  held?.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`)
  t.equal(statusOf(await answer), 200, 'the ones held are served')
})

t.test('/metrics whose rendering fails answers 500 (no unhandled rejection)', async (t) => {
  const failing: Metrics = { ...createMetrics(() => new Set()), render: () => Promise.reject(new Error('a collector threw')) }
  const { port } = await setup(t, failing)
  const answer = await exchange(port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(answer), 500)
  t.match(answer, 'metrics failed: a collector threw')
})
