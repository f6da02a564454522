// lib/core/log.ts: the event lines logEvent writes itself are the lines winston would write, and the
// logger's level and format still decide whether and how they are written.
import { PassThrough } from 'node:stream'
import t from 'tap'
import { createLogger, logEvent, type LogLevel } from '../lib/core/log.js'

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

t.test('the level and format still decide: warn and silent write no info events; pretty goes through winston', async (t) => {
  for (const level of ['warn', 'silent'] as const) {
    const { log, written } = capture(level, 'json')
    logEvent(log, 'decision', FIELDS)
    t.same(await written(), [], `${level}: nothing`)
  }
  const { log, written } = capture('info', 'pretty')
  logEvent(log, 'closed', { id: 'a-1', durationMs: 3 })
  const [line] = await written()
  t.match(line, /info.* closed id=a-1 durationMs=3$/)
  t.throws((): unknown => JSON.parse(line ?? ''), 'not JSON')
})
