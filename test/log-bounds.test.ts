// Logs to an output that nobody reads (stdout to a pipe whose reader stopped, where Node.js keeps
// whatever is written in memory): the lines waiting to be written stay under 8 MiB, the rest are
// dropped and counted, and once the output drains a warning says how many.
import { Writable } from 'node:stream'
import t from 'tap'
import { createLogger } from '../lib/core/log.js'

const LIMIT = 8 * 1024 * 1024

/** An output that takes nothing until `read` is called, then everything. */
function stalledOutput() {
  let reading = false
  let held: (() => void) | undefined
  let text = ''
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString('utf8')
      if (reading) done()
      else held = done
    },
  })
  const read = () => {
    reading = true
    held?.()
  }
  return { stream, read, text: () => text }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

for (const format of ['json', 'pretty'] as const) {
  t.test(`${format}: at most 8 MiB wait for an output that is not read; the rest is dropped and counted`, async (t) => {
    const out = stalledOutput()
    const log = createLogger({ level: 'info', format, stream: out.stream, batchMs: 0 })
    const detail = 'x'.repeat(200)
    let most = 0
    // 16 MiB of lines, 500 a turn
    for (let turn = 0; turn < 150; turn++) {
      for (let i = 0; i < 500; i++) log.info('decision', { id: `${turn}-${i}`, target: 'far.test:443', decision: 'deny', detail })
      await tick()
      most = Math.max(most, out.stream.writableLength)
    }
    t.ok(most <= LIMIT, `${most} bytes waited at most`)
    t.ok(most > LIMIT - 1024, 'and the output was filled up to the bound')
    const drained = new Promise((resolve) => out.stream.once('drain', resolve))
    out.read()
    await drained
    await tick()
    const lines = out.text().split('\n').filter((l) => l !== '')
    const notice = lines.at(-1) ?? ''
    const kept = lines.length - 1
    if (format === 'json') {
      const parsed = JSON.parse(notice) as Record<string, unknown>
      t.match(parsed, { level: 'warn', message: 'log lines dropped', why: /the log output was not read: more than 8 MiB waited/ })
      t.equal(Number(parsed.dropped) + kept, 75_000, 'every line is written or counted')
    } else {
      t.match(notice, /WARN.*log lines dropped/)
      const dropped = Number(/dropped[=: ]+(\d+)/.exec(notice)?.[1])
      t.equal(dropped + kept, 75_000, 'every line is written or counted')
    }
    log.info('decision', { id: 'after', target: 'far.test:443', decision: 'deny', detail: 'after' })
    await tick()
    t.match(out.text().split('\n').filter((l) => l !== '').at(-1), /after/, 'lines are written again once it reads')
  })
}
