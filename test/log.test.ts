// lib/core/log.ts: the JSON lines proxy-gate writes itself carry what winston's json format would
// write, and the logger's level and format still decide whether and how they are written.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import t from 'tap'
import winston from 'winston'
import { createLogger, logTypedEvent, timestampAt, type LogLevel } from '../lib/core/log.js'
import { startCli } from './helpers/cli.js'

/** A logger on a stream, and what it wrote once the batch of this event-loop turn is out. */
function capture(level: LogLevel, format: 'json' | 'pretty') {
  const stream = new PassThrough()
  let text = ''
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')))
  const log = createLogger({ level, format, stream, batchMs: 0 })
  const written = async (): Promise<string[]> => {
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    return text.split('\n').filter((l) => l !== '')
  }
  return { log, written }
}

const FIELDS = { id: 'a-1', target: 'example.com:443', resolved: ['192.0.2.1'], rule: undefined, status: 403, wouldDeny: false, detail: 'say "why"\nhere' }

/** What winston's json format (with its timestamp) writes for the same record. */
function winstonLine(level: 'info' | 'warn' | 'error', message: string, fields: object): Promise<Record<string, unknown>> {
  const stream = new PassThrough()
  const line = new Promise<Record<string, unknown>>((resolve) => stream.once('data', (chunk: Buffer) => resolve(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>)))
  const { combine, timestamp, json } = winston.format
  // the rule loses track of winston's transports through its `export =` types
  // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
  winston.createLogger({ level: 'info', format: combine(timestamp(), json()), transports: [new winston.transports.Stream({ stream })] }).log(level, message, fields)
  return line
}

const without = (line: Record<string, unknown>, key: string): Record<string, unknown> => Object.fromEntries(Object.entries(line).filter(([k]) => k !== key))

t.test('a JSON line carries what winston would write: level, message, timestamp, every defined field', async (t) => {
  const { log, written } = capture('info', 'json')
  log.info('decision', FIELDS)
  log.warn('upstream changed', { upstream: 'none: direct' })
  log.error('internal error', { where: 'connect', error: 'Error: boom\n    at x' })
  log.info('stopped')
  const lines = (await written()).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.equal(lines.length, 4)
  const expected = await Promise.all([
    winstonLine('info', 'decision', FIELDS),
    winstonLine('warn', 'upstream changed', { upstream: 'none: direct' }),
    winstonLine('error', 'internal error', { where: 'connect', error: 'Error: boom\n    at x' }),
    winstonLine('info', 'stopped', {}),
  ])
  lines.forEach((line, i) => {
    t.match(line.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    t.same(without(line, 'timestamp'), without(expected[i] ?? {}, 'timestamp'), String(line.message))
  })
  t.notOk('rule' in (lines[0] ?? {}), 'undefined fields are left out')
  t.same(Object.keys(lines[0] ?? {}).slice(0, 3), ['level', 'message', 'timestamp'], 'level, message and timestamp first')
})

t.test('fields JSON.stringify refuses are written as winston would: a BigInt as a number, a cycle as [Circular]', async (t) => {
  const { log, written } = capture('info', 'json')
  const cycle: Record<string, unknown> = { name: 'a' }
  cycle.self = cycle
  log.info('odd', { big: 12n, cycle })
  const [line] = (await written()).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(line, { message: 'odd', big: 12, cycle: { name: 'a', self: '[Circular]' } })
})

t.test('an event logged with its type as the message gives the same line as log.info with the rest: fields, order, bytes', async (t) => {
  const { log, written } = capture('info', 'json')
  log.info('decision', FIELDS)
  logTypedEvent(log, { type: 'decision', ...FIELDS })
  log.info('closed', {})
  logTypedEvent(log, { type: 'closed' })
  // `type` not first (no event is built so): still the same line, by the copy
  logTypedEvent(log, { ...FIELDS, type: 'decision' })
  const lines = await written()
  t.equal(lines.length, 5)
  const bare = (line: string | undefined): string => (line ?? '').replace(/"timestamp":"[^"]+"/, '')
  t.equal(bare(lines[1]), bare(lines[0]))
  t.equal(bare(lines[3]), bare(lines[2]))
  t.equal(bare(lines[4]), bare(lines[0]))
  t.notMatch(lines[1], /"type"/)
  for (const level of ['warn', 'silent'] as const) {
    const quiet = capture(level, 'json')
    logTypedEvent(quiet.log, { type: 'decision', ...FIELDS })
    t.same(await quiet.written(), [], `${level}: nothing`)
  }
})

t.test('the level and format still decide: warn and silent write no info events; pretty goes through winston', async (t) => {
  for (const level of ['warn', 'silent'] as const) {
    const { log, written } = capture(level, 'json')
    log.info('decision', FIELDS)
    t.same(await written(), [], `${level}: nothing`)
  }
  const { log, written } = capture('info', 'pretty')
  logTypedEvent(log, { type: 'closed', id: 'a-1', durationMs: 3 })
  log.info('something', { id: 'a-1', durationMs: 3 })
  const lines = await written()
  t.equal(lines.length, 1, 'a finished connection is not news on a terminal')
  t.match(lines[0], /^\d\d:\d\d:\d\d something id=a-1 durationMs=3$/)
})

t.test('start keeps serving and stops on SIGTERM after whoever read its stdout has gone (EPIPE)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pg-epipe-'))
  writeFileSync(join(dir, 'rules.json'), JSON.stringify({ allow: ['allowed.example:443'] }))
  const proxy = await startCli(['start', '--rules', join(dir, 'rules.json'), '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--log-format', 'json'])
  t.teardown(() => proxy.child.kill('SIGKILL'))
  proxy.child.stdout.destroy() // the reader leaves, as `proxy-gate start | head` does
  for (let i = 0; i < 3; i++) {
    const health = await fetch(`http://127.0.0.1:${proxy.port}/healthz`)
    t.equal(health.status, 200, `still serves after its log lines hit a closed pipe (${i})`)
  }
  t.equal(await proxy.stop(), 0, 'SIGTERM stops it cleanly')
})

t.test('the timestamp of an event line is what toISOString gives, from the second it reuses', async (t) => {
  const base = Date.UTC(2026, 11, 31, 23, 59, 59)
  for (const now of [base, base + 7, base + 42, base + 999, base + 1000, base + 1001, base + 60_123, 0, 999, 1_000]) {
    t.equal(timestampAt(now), new Date(now).toISOString(), new Date(now).toISOString())
  }
  t.equal(timestampAt(base + 5), new Date(base + 5).toISOString(), 'back to an earlier second')
})

t.test('by default lines of several event-loop turns are written together once the batch time is up, and a large batch at once', async (t) => {
  const writes: string[] = []
  let wrote: () => void = () => undefined
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      writes.push(chunk.toString('utf8'))
      wrote()
      done()
    },
  })
  const log = createLogger({ level: 'info', format: 'json', stream })
  const written = new Promise<void>((resolve) => (wrote = resolve))
  log.info('first')
  await new Promise((resolve) => setImmediate(resolve))
  log.info('second')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(writes.length, 0, 'not written at the end of either turn')
  const hold = setTimeout(() => undefined, 60_000) // the batch's timer is unref'd: this keeps the test process up until it fires
  await written
  clearTimeout(hold)
  t.equal(writes.length, 1, 'one write')
  t.match(writes[0], /"message":"first".*\n.*"message":"second"/, 'with both lines, in order')
  const detail = 'x'.repeat(400)
  for (let i = 0; i < 200; i++) log.info('bulk', { i, detail })
  t.ok(writes.length >= 2, 'past 64 KiB the batch is written without waiting')
})
