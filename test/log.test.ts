// lib/core/log.ts: the event lines logEvent writes itself are the lines winston would write, and the
// logger's level and format still decide whether and how they are written.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import t from 'tap'
import { createLogger, logEvent, logTypedEvent, timestampAt, type LogLevel } from '../lib/core/log.js'
import { startCli } from './helpers/cli.js'

/** A logger on a stream, and what it wrote once the batch of this event-loop turn is out. */
function capture(level: LogLevel, format: 'json' | 'pretty') {
  const stream = new PassThrough()
  let text = ''
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')))
  const log = createLogger({ level, format, stream })
  const written = async (): Promise<string[]> => {
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    return text.split('\n').filter((l) => l !== '')
  }
  return { log, written }
}

const FIELDS = { id: 'a-1', target: 'example.com:443', resolved: ['192.0.2.1'], rule: undefined, status: 403, wouldDeny: false, detail: 'say "why"\nhere' }

t.test('a JSON event line carries what winston would write: level, message, timestamp, every defined field', async (t) => {
  const { log, written } = capture('info', 'json')
  log.info('decision', FIELDS)
  const viaWinston = await written()
  logEvent(log, 'decision', FIELDS)
  const lines = await written()
  t.equal(lines.length, 2)
  const [a, b] = lines.map((l) => JSON.parse(l) as Record<string, unknown>) as [Record<string, unknown>, Record<string, unknown>]
  t.equal(viaWinston.length, 1)
  t.match(b.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  const { timestamp: _a, ...winstonLine } = a
  const { timestamp: _b, ...eventLine } = b
  t.same(eventLine, winstonLine)
  t.notOk('rule' in eventLine, 'undefined fields are left out')
})

t.test('an event logged with its type as the message gives the same line as logEvent with the rest: fields, order, bytes', async (t) => {
  const { log, written } = capture('info', 'json')
  logEvent(log, 'decision', FIELDS)
  logTypedEvent(log, { type: 'decision', ...FIELDS })
  logEvent(log, 'closed', {})
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
    logEvent(log, 'decision', FIELDS)
    t.same(await written(), [], `${level}: nothing`)
  }
  const { log, written } = capture('info', 'pretty')
  logEvent(log, 'closed', { id: 'a-1', durationMs: 3 })
  logEvent(log, 'something', { id: 'a-1', durationMs: 3 })
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
