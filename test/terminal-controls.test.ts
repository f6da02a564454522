// What reaches a terminal carries no control character (C0, DEL or C1) that a client or a file put
// there: the pretty log lines, the JSON lines (which `docker logs` shows on a terminal), and every
// line the command line prints. U+009B is CSI: a terminal takes it as ESC [.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createLogger, logTypedEvent } from '../lib/core/log.js'
import { prettyFormatter, type LogRecord } from '../lib/core/pretty.js'
import { runCli } from './helpers/cli.js'
import { tempDir, writeJson } from './helpers/files.js'
import { NETNS_SKIP, rawExchange, startHttpUpstream } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/
/** The colour codes prettyFormatter itself writes: SGR, ESC [ digits m. */
// eslint-disable-next-line no-control-regex
const SGR = /\u001b\[\d+m/g
const HOSTILE = 'evil\u009b2J\u001b]0;owned\u0007\u0085x\r.test'

t.test('pretty lines: every field, message and stack from a record is shown escaped', async (t) => {
  const records: LogRecord[] = [
    { level: 'info', message: 'decision', decision: 'deny', method: 'GET', target: `${HOSTILE}:80`, reason: 'bad-request', detail: `bad host "${HOSTILE}"` },
    { level: 'info', message: 'dns', answer: 'deny', name: HOSTILE, qtype: 'A', reason: 'no-rule' },
    { level: 'error', message: 'reload failed: keeping the previous rules', rules: HOSTILE, trigger: 'SIGHUP', errors: [HOSTILE] },
    { level: 'warn', message: `something ${HOSTILE}`, [HOSTILE]: HOSTILE, nested: { host: HOSTILE } },
    { level: 'error', message: 'uncaught exception', error: `Error: ${HOSTILE}\n    at ${HOSTILE}` },
    { level: 'info', message: 'wire it up', [HOSTILE]: HOSTILE },
  ]
  for (const colour of [false, true]) {
    const format = prettyFormatter(colour)
    for (const record of records) {
      const lines = format({ ...record, timestamp: '2025-01-01T00:00:00.000Z' })
      const what = `${JSON.stringify(record.message)}${colour ? ' (colour)' : ''}`
      t.ok(lines.length > 0, `${what}: shown`)
      for (const line of lines) t.notMatch(line.replace(SGR, ''), CONTROL, `${what}: no control character in ${JSON.stringify(line)}`)
      t.match(lines.join('\n'), /\\u009b2J/, 'CSI is shown as \\u009b')
    }
  }
  t.same(prettyFormatter(false)({ level: 'error', message: 'uncaught exception', error: 'Error: x\u009b\n    at y', timestamp: '2025-01-01T00:00:00.000Z' }).slice(1), ['           Error: x\\u009b', '           at y'], 'a stack still goes below, a line per frame')
})

t.test('a transparent listener: a Host header with C1 controls reaches neither the JSON line nor the pretty line raw', { skip: NETNS_SKIP }, async (t) => {
  const upstream = await startHttpUpstream('127.0.0.1')
  const proxy = await startProxy({ sandbox: { socks: false, address: '127.80.0.9', dns: false, http: [upstream.port], tls: [] } })
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
  })
  const host = Buffer.from('evil\x9b2J\x85.test', 'latin1')
  const request = Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nHost: '), host, Buffer.from('\r\nConnection: close\r\n\r\n')])
  await rawExchange(upstream.port, request, { host: '127.80.0.9' })
  const line = await logLine(proxy, (l) => l.message === 'decision', 'the decision')
  t.equal(line.target, 'evil\u009b2J\u0085.test', 'the Host, C1 controls and all, is the decision\'s target')
  const shown = prettyFormatter(true)(line).map((l) => l.replace(SGR, ''))
  t.notMatch(shown.join(''), CONTROL, `the pretty line has no control character: ${JSON.stringify(shown)}`)
  t.match(shown.join(''), /evil\\u009b2J\\u0085\.test/)
})

t.test('JSON lines: C1 controls are written as \\u escapes (the same value), C0 as JSON.stringify writes them', async (t) => {
  const stream = new PassThrough()
  let text = ''
  stream.on('data', (d: Buffer) => (text += d.toString('utf8')))
  const log = createLogger({ level: 'info', format: 'json', stream, batchMs: 0 })
  log.info(`decision ${HOSTILE}`, { target: HOSTILE, [HOSTILE]: [HOSTILE] })
  logTypedEvent(log, { type: 'decision', target: HOSTILE })
  await new Promise((resolve) => setImmediate(resolve))
  const lines = text.trim().split('\n')
  t.equal(lines.length, 2)
  for (const line of lines) t.notMatch(line, CONTROL, `no control character in ${line}`)
  t.equal((JSON.parse(lines[0] ?? '') as { target: string }).target, HOSTILE, 'the value is the same')
  t.equal((JSON.parse(lines[1] ?? '') as { target: string }).target, HOSTILE)
})

t.test('the command line: validate, check and errors that echo what was typed print controls escaped', async (t) => {
  const dir = tempDir('controls')
  const rules = writeJson(dir, 'rules.json', { allow: [`ok.test`, `${HOSTILE}:443`], deny: [{ host: 'x.test', note: 7 }] })
  const validate = await runCli(['validate', '--rules', rules])
  t.equal(validate.code, 1)
  t.match(validate.stderr, /\\u009b2J/, 'validate names the entry')
  t.notMatch(validate.stderr, CONTROL, 'validate prints no control character')
  const check = await runCli(['check', '--rules', writeJson(dir, 'ok.json', { allow: ['ok.test'] }), `${HOSTILE}:443`])
  t.equal(check.code, 2)
  t.match(check.stderr, /\\u009b2J/, 'check echoes the target')
  t.notMatch(check.stdout + check.stderr, CONTROL, 'check prints no control character')
  const missing = await runCli(['validate', '--rules', join(dir, `no\u009b2J.json`)])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /no\\u009b2J\.json/, 'a path is echoed escaped')
  t.notMatch(missing.stderr, CONTROL)
  const unknown = await runCli([`bogus\u009b2J`])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /bogus\\u009b2J/)
  t.notMatch(unknown.stderr, CONTROL)
  const logFile = join(dir, 'log.jsonl')
  writeFileSync(logFile, `${JSON.stringify({ level: 'info', message: 'decision', decision: 'deny', reason: 'no-rule', method: 'CONNECT', target: 'a.test:443', suggestion: `"${HOSTILE}:443"` })}\n`)
  const suggest = await runCli(['suggest', '--from', logFile])
  t.notMatch(suggest.stdout + suggest.stderr, CONTROL, `suggest prints no control character: ${JSON.stringify(suggest.stdout + suggest.stderr)}`)
})
