// lib/core/pretty.ts: the lines a person at a terminal reads, record by record, and `start` on a
// real pseudo-terminal (util-linux `script`) with colour, and without it under NO_COLOR.
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { prettyFormatter, wantsColour, type LogRecord } from '../lib/core/pretty.js'
import { startCliOnTerminal } from './helpers/cli.js'
import { curl } from './helpers/curl.js'
import { tempDir, writeJson } from './helpers/files.js'
import { startHttpUpstream } from './helpers/net.js'

process.env.TZ = 'UTC' // the HH:MM:SS prefix is local time

const AT = '2026-12-04T01:57:47.857Z'

function at(message: string, fields: Record<string, unknown>, level = 'info'): LogRecord {
  return { level, message, timestamp: AT, ...fields }
}

const DECISION = { id: 'a-1', client: '127.0.0.1:5000', mode: 'enforce', policy: 'default', wouldDeny: false }
const ALLOWED = { ...DECISION, method: 'GET', target: 'x.test:80', chosen: '192.0.2.1', decision: 'allow', rule: 'allow[0] x.test', reason: 'allow-rule', detail: 'allowed by allow[0] x.test' }
const DENIED = { ...DECISION, method: 'CONNECT', target: 'evil.test:443', decision: 'deny', reason: 'no-rule', detail: 'no allow rule matches evil.test:443', suggestion: '"evil.test:443"' }

const WIRE = {
  dockerDesktop: 'npx proxy-gate docker --target settings-store --write',
  containerEnv: 'npx proxy-gate docker --target cli --write',
}

function cyclic(): object {
  const o: Record<string, unknown> = {}
  o.self = o
  return o
}

/** record(s) fed in order -> the lines the last one gives */
const TABLE: Array<[string, LogRecord[], string[]]> = [
  ['an allowed request names its rule', [at('decision', ALLOWED)], ['01:57:47 ALLOW GET x.test:80  allow[0] x.test']],
  ['a denial says why and what to add', [at('decision', DENIED)], ['01:57:47 DENY  CONNECT evil.test:443  no allow rule  -> add "evil.test:443"']],
  ['a deny rule', [at('decision', { ...DENIED, reason: 'deny-rule', rule: 'deny[0] evil.test', suggestion: undefined })], ['01:57:47 DENY  CONNECT evil.test:443  deny[0] evil.test']],
  [
    'a refused address, without the sentence "-> add" answers',
    [at('decision', { ...DENIED, target: '10.0.0.1:80', method: 'GET', reason: 'address-prohibited', detail: '10.0.0.1:80, a private network (RFC 1918) address, which is refused unless a rule names it', suggestion: '"10.0.0.1:80"' })],
    ['01:57:47 DENY  GET 10.0.0.1:80  10.0.0.1:80, a private network (RFC 1918) address  -> add "10.0.0.1:80"'],
  ],
  ['report mode: what enforce would do', [at('decision', { ...DENIED, decision: 'allow', mode: 'report', wouldDeny: true, suggestion: undefined })], ['01:57:47 ALLOW CONNECT evil.test:443  report mode: would deny: no allow rule']],
  [
    'an error, with the status sent',
    [at('decision', { ...DECISION, method: 'CONNECT', target: 'x.test:443', decision: 'error', reason: 'dns_error', detail: 'DNS: x.test could not be resolved (ENOTFOUND)', status: 502 })],
    ['01:57:47 ERROR CONNECT x.test:443  DNS: x.test could not be resolved (ENOTFOUND)  (502 sent)'],
  ],
  [
    'a path, a server name the target does not say, another policy, a transparent listener',
    [at('decision', { ...ALLOWED, method: 'TLS', target: '192.0.2.1:443', sni: 'x.test', path: '/v1', policy: 'ci', listener: 'transparent' })],
    ['01:57:47 ALLOW TLS 192.0.2.1:443/v1  allow[0] x.test  (sni x.test, transparent, policy ci)'],
  ],
  ['an opened tunnel\'s request; a server name the target already says is not repeated', [at('decision', { ...ALLOWED, target: 'x.test:443', sni: 'x.test', intercepted: true })], ['01:57:47 ALLOW GET x.test:443  allow[0] x.test  (in an opened tunnel)']],
  ['a finished connection is not shown', [at('decision', ALLOWED), at('closed', { id: 'a-1', kind: 'forward', method: 'GET', status: 200, durationMs: 3 })], []],
  ['one that ended on an error names its request', [at('decision', ALLOWED), at('closed', { id: 'a-1', kind: 'forward', method: 'GET', error: 'ECONNREFUSED', status: 502, durationMs: 3 })], ['01:57:47 ENDED GET x.test:80  ECONNREFUSED  (502 sent)']],
  ['...even with no decision seen', [at('closed', { id: 'b-2', kind: 'tunnel', error: 'client ECONNRESET', durationMs: 3 })], ['01:57:47 ENDED tunnel b-2  client ECONNRESET']],
  [
    'a tunnel whose upstream failed',
    [at('decision', { ...ALLOWED, method: 'CONNECT', target: 'x.test:443' }), at('upstream failed', { id: 'a-1', status: 502, error: 'connection_refused', detail: 'connect ECONNREFUSED 192.0.2.1:443' })],
    ['01:57:47 FAIL  CONNECT x.test:443  connect ECONNREFUSED 192.0.2.1:443  (502 sent)'],
  ],
  ['a DNS answer', [at('dns', { client: '10.9.0.2:5353', transport: 'udp', name: 'x.test', qtype: 'A', answer: 'allow', reason: 'allow-rule', rule: 'allow[0] x.test', mode: 'enforce', policy: 'default', wouldDeny: false })], ['01:57:47 DNS   x.test A  allow[0] x.test']],
  [
    'a DNS denial',
    [at('dns', { client: '10.9.0.2:5353', transport: 'udp', name: 'evil.test', qtype: 'AAAA', answer: 'deny', reason: 'no-rule', suggestion: '"evil.test:443"', mode: 'enforce', policy: 'ci', wouldDeny: false })],
    ['01:57:47 DNS   evil.test AAAA  NXDOMAIN: no allow rule  (ci)  -> add "evil.test:443"'],
  ],
  ['a refused DNS query', [at('dns', { client: '10.9.0.2:5353', transport: 'udp', name: undefined, qtype: undefined, answer: 'refused', reason: 'rate-limited', mode: 'enforce', wouldDeny: false })], ['01:57:47 DNS   ? ?  REFUSED: rate-limited']],
  ['a revoked tunnel', [at('revoked', { id: 'a-1', kind: 'tunnel', target: 'x.test:443', reason: 'no-rule', detail: 'no allow rule matches x.test:443' })], ['01:57:47 CUT   tunnel x.test:443  the new rules deny it: no allow rule matches x.test:443']],
  [
    'listening',
    [at('listening', { url: 'http://127.0.0.1:3128', pac: 'http://127.0.0.1:3128/proxy.pac', rules: 'rules.json', allow: 2, deny: 1, mode: 'enforce', upstream: 'parent.test:8080' })],
    ['01:57:47 listening on http://127.0.0.1:3128  (enforce, 2 allow, 1 deny in rules.json, via parent.test:8080)'],
  ],
  ['the wiring hints, as a block', [at('wire it up', WIRE)], ['01:57:47 wire it up:', '           docker desktop  npx proxy-gate docker --target settings-store --write', '           container env   npx proxy-gate docker --target cli --write']],
  ['the dashboard', [at('admin listening', { url: 'http://127.0.0.1:3129/', metrics: 'http://127.0.0.1:3129/metrics', tokenFile: '/x/admin-token' })], ['01:57:47 dashboard http://127.0.0.1:3129/  (metrics http://127.0.0.1:3129/metrics, token in /x/admin-token)']],
  ['a reload that closed tunnels', [at('reloaded', { rules: 'rules.json', trigger: 'SIGHUP', allow: 1, deny: 0, closed: 2, kept: 1 })], ['01:57:47 reloaded rules.json (SIGHUP): 1 allow, 0 deny  closed 2 open connections the new rules deny']],
  [
    'a failed reload lists its errors',
    [at('reload failed: keeping the previous rules', { rules: 'rules.json', trigger: 'file changed', errors: ['rules.json: 1 problem', '  allow[0] "": empty'] }, 'error')],
    ['01:57:47 ERROR reload of rules.json failed (file changed): keeping the previous rules', '           rules.json: 1 problem', '             allow[0] "": empty'],
  ],
  ['shutting down', [at('shutting down', { signal: 'SIGINT', open: 3 })], ['01:57:47 shutting down (SIGINT): 3 open connections']],
  ['a drain with a delay', [at('draining: not ready, still accepting', { drainDelayMs: 10000, connections: 4 })], ['01:57:47 draining for 10 s: not ready, still accepting (4 connections)']],
  ['...without one, silent', [at('draining: not ready, still accepting', { drainDelayMs: 0, connections: 4 })], []],
  ['...connections left to finish', [at('stopped accepting', { connections: 1, graceMs: 10000 })], ['01:57:47 stopped accepting; 1 connection may finish within 10 s']],
  ['...none left, silent', [at('stopped accepting', { connections: 0, graceMs: 10000 })], []],
  ['...the grace period over', [at('closing what is still open', { connections: 2, tunnels: 1 })], ['01:57:47 grace period over: closing 2 connections still open']],
  ['stopped', [at('stopped', { code: 0 })], ['01:57:47 stopped']],
  ['a record it does not know: message key=value', [at('gone fishing', {})], ['01:57:47 gone fishing']],
  ['...tagged when a warning, values with spaces quoted', [at('sandbox DNS address or port changed: restart proxy-gate to apply it', { running: '10.9.0.1:53', configured: 'none' }, 'warn')], ['01:57:47 WARN  sandbox DNS address or port changed: restart proxy-gate to apply it running=10.9.0.1:53 configured=none']],
  ['...an array as JSON', [at('bypass lets clients through', { bypass: ['a.test', '*.b.test'] }, 'warn')], ['01:57:47 WARN  bypass lets clients through bypass="[\\"a.test\\",\\"*.b.test\\"]"']],
  ['...a stack below its line', [at('internal error', { where: 'connect', error: 'Error: boom\n    at f (x.js:1:1)' }, 'error')], ['01:57:47 ERROR internal error where=connect', '           Error: boom', '           at f (x.js:1:1)']],
  ['...and what JSON cannot write, as text', [at('odd', { big: 12n, cycle: cyclic() })], ['01:57:47 odd big=12 cycle="[object Object]"']],
  ['...a message that names an Object method is still just a message', [at('constructor', { a: 1 })], ['01:57:47 constructor a=1']],
]

t.test('each record reads as a short line', async (t) => {
  for (const [what, records, expected] of TABLE) {
    const format = prettyFormatter(false)
    const out = records.map((r) => format(r))
    t.same(out.at(-1), expected, what)
  }
})

t.test('colour: the verdict, the fix and the time are coloured; nothing else', async (t) => {
  const format = prettyFormatter(true)
  t.same(format(at('decision', DENIED)), ['\x1b[2m01:57:47\x1b[22m \x1b[31mDENY \x1b[39m CONNECT evil.test:443  no allow rule  \x1b[36m-> add "evil.test:443"\x1b[39m'])
  t.same(format(at('decision', ALLOWED)), ['\x1b[2m01:57:47\x1b[22m \x1b[32mALLOW\x1b[39m GET x.test:80  allow[0] x.test'])
  const waived = format(at('decision', { ...DENIED, decision: 'allow', mode: 'report', wouldDeny: true, suggestion: undefined }))
  t.same(waived, ['\x1b[2m01:57:47\x1b[22m \x1b[33mALLOW\x1b[39m CONNECT evil.test:443  report mode: would deny: no allow rule'], 'what enforce mode would deny is yellow')
})

t.test('when to colour: FORCE_COLOR, then NO_COLOR (non-empty), then a terminal that has colours', async (t) => {
  const terminal = (colours: boolean) => ({ isTTY: true, hasColors: (env?: object) => colours && !(env && 'NO_COLOR' in env) })
  const cases: Array<[string, NodeJS.ProcessEnv, Parameters<typeof wantsColour>[1], boolean]> = [
    ['a colour terminal', {}, terminal(true), true],
    ['a terminal without colours', {}, terminal(false), false],
    ['not a terminal', {}, {}, false],
    ['NO_COLOR=1', { NO_COLOR: '1' }, terminal(true), false],
    ['an empty NO_COLOR counts as unset (no-color.org)', { NO_COLOR: '' }, terminal(true), true],
    ['FORCE_COLOR=1 on a pipe', { FORCE_COLOR: '1' }, {}, true],
    ['FORCE_COLOR over NO_COLOR, as in Node.js', { FORCE_COLOR: '1', NO_COLOR: '1' }, terminal(true), true],
    ['FORCE_COLOR=0', { FORCE_COLOR: '0' }, terminal(true), false],
  ]
  for (const [what, env, out, expected] of cases) t.equal(wantsColour(env, out), expected, what)
})

const ESC = '\u001b'
/** the `HH:MM:SS ` prefix, dim in colour */
const TIME = new RegExp(`^(${ESC}\\[2m)?\\d\\d:\\d\\d:\\d\\d(${ESC}\\[22m)? `)

/** The terminal's lines without their time prefix (^C is the terminal echoing Ctrl-C). */
function withoutTime(output: string): string[] {
  return output
    .replaceAll('^C', '')
    .split('\r\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(TIME, ''))
}

async function setup(t: Test) {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const dir = tempDir('tty')
  const rules = writeJson(dir, 'rules.json', { allow: [`127.0.0.1:${upstream.port}`] })
  const args = ['start', '--rules', rules, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--dir', dir]
  return { upstream, rules, args, token: join(dir, 'admin-token') }
}

/** One allowed plain-HTTP request and one denied CONNECT, then Ctrl-C: the lines a person sees. */
async function session(t: Test, env: Record<string, string>) {
  const { upstream, rules, args, token } = await setup(t)
  const terminal = startCliOnTerminal(args, { TERM: 'xterm-256color', ...env })
  t.teardown(() => terminal.kill())
  const started = await terminal.waitFor(/dashboard .*\r\n/)
  const plain = started.replace(new RegExp(`${ESC}\\[\\d+m`, 'g'), '')
  const port = Number(/listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(plain)?.[1])
  const admin = Number(/dashboard http:\/\/127\.0\.0\.1:(\d+)/.exec(plain)?.[1])
  const proxy = `http://127.0.0.1:${port}`
  t.equal((await curl(['-x', proxy, `http://127.0.0.1:${upstream.port}/hi`])).status, 200)
  await terminal.waitFor(/ALLOW/)
  t.equal((await curl(['-x', proxy, '-p', 'https://evil.test/'])).connect, 403)
  await terminal.waitFor(/evil\.test:443.*\r\n/)
  t.equal(await terminal.interrupt(), 0, 'Ctrl-C stops it cleanly')
  return { output: terminal.output(), port, admin, rules, token, target: `127.0.0.1:${upstream.port}` }
}

t.test('start on a terminal: one line per decision, the wiring as a block, in colour', async (t) => {
  const { output, port, admin, rules, token, target } = await session(t, {})
  const dim = (s: string): string => `\x1b[2m${s}\x1b[22m`
  t.same(withoutTime(output), [
    `listening on http://127.0.0.1:${port}  (enforce, 1 allow, 0 deny in ${rules})`,
    'wire it up:',
    `           ${dim('docker desktop      ')}  npx proxy-gate docker --target settings-store --write --rules ${rules} --advertise 127.0.0.1:${port}   (then restart Docker Desktop)`,
    `           ${dim('docker desktop admin')}  npx proxy-gate docker --target admin --pac --write --rules ${rules} --advertise 127.0.0.1:${port}   (Docker Business, locked for every user; PAC URL http://127.0.0.1:${port}/proxy.pac)`,
    `           ${dim('container env       ')}  npx proxy-gate docker --target cli --write --rules ${rules} --advertise host.docker.internal:${port}`,
    `           ${dim('system proxy        ')}  npx proxy-gate system-proxy --pac --rules ${rules} --advertise 127.0.0.1:${port}   (PAC URL http://127.0.0.1:${port}/proxy.pac)`,
    `dashboard http://127.0.0.1:${admin}/  (metrics http://127.0.0.1:${admin}/metrics, token in ${token})`,
    `\x1b[32mALLOW\x1b[39m GET ${target}  allow[0] ${target}`,
    '\x1b[31mDENY \x1b[39m CONNECT evil.test:443  no allow rule  \x1b[36m-> add "evil.test:443"\x1b[39m',
    'shutting down (SIGINT): 0 open connections',
    'stopped',
  ])
  t.ok(output.split('\r\n').every((l) => l === '' || l.startsWith('^C') || l.startsWith(' ') || TIME.test(l)), 'each line starts with the time, or is indented under one')
  t.ok(output.startsWith(`${ESC}[2m`), 'the time is dim')
})

t.test('NO_COLOR: the same lines, not one escape code', async (t) => {
  const { output, target } = await session(t, { NO_COLOR: '1' })
  t.notOk(output.includes(ESC), 'no escape code')
  const lines = withoutTime(output)
  t.ok(lines.includes(`ALLOW GET ${target}  allow[0] ${target}`))
  t.ok(lines.includes('DENY  CONNECT evil.test:443  no allow rule  -> add "evil.test:443"'))
  t.match(output, /^\d\d:\d\d:\d\d listening/)
})
