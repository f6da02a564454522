// Learning an allowlist: the learner over decision records (what it learns, notes, sorting,
// collapse, special destinations apart, its bound), every generated entry through the real
// parser, `suggest` and `learn --from` on a log file, and the round trip the issue asks for:
// traffic recorded by `proxy-gate learn` in report mode, the learned file enforced, the same
// traffic passing and a new host denied.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parseConfig } from '../lib/rules/config.js'
import { createLearner, decisionFromLogLine, learnedRulesFile, type LearnedEntry } from '../lib/observe/learn.js'
import { matchName, parseRule } from '../lib/policy/rules.js'
import type { DecisionRecord } from '../lib/proxy/runtime.js'
import { runCli, startCli, type RunningCli } from './helpers/cli.js'
import { curlOutput } from './helpers/curl.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { NETNS_SKIP, startHttpsUpstream, startHttpUpstream } from './helpers/net.js'

const T0 = Date.parse('2025-01-02T03:04:05Z')
/** a running proxy here needs no dashboard (and so no admin token file) */
const NO_ADMIN = ['--admin-listen', 'off']

function record(target: string, reason: string, extra: Partial<DecisionRecord> = {}): DecisionRecord {
  return { id: 'x', client: '127.0.0.1:1', method: 'CONNECT', target, decision: 'allow', reason, mode: 'report', wouldDeny: reason !== 'allow-rule', ...extra }
}

function hosts(entries: readonly LearnedEntry[]): string[] {
  return entries.map((e) => e.host)
}

// ---- the learner ----------------------------------------------------------------------------

t.test('one entry per host with its ports merged, a note with count and first/last seen, sorted by domain then IP', async (t) => {
  const learner = createLearner()
  learner.add(record('b.example.com:443', 'no-rule'), T0 + 60_000)
  learner.add(record('b.example.com:443', 'no-rule'), T0)
  learner.add(record('a.example.com:443', 'no-rule'), T0 + 1_000)
  learner.add(record('a.example.com:80', 'no-rule', { method: 'GET' }), T0 + 2_000)
  learner.add(record('[2600:1f00::10]:443', 'no-rule'), T0)
  learner.add(record('11.22.33.44:8080', 'no-rule', { decision: 'deny', mode: 'enforce' }), T0)
  learner.add(record('zz.test:443', 'no-rule'), T0)
  learner.add(record('example.com:443', 'no-rule'))
  const learned = learner.result()
  t.strictSame(learned.allow, [
    { host: 'example.com', ports: [443], note: 'seen 1 time' },
    { host: 'a.example.com', ports: [80, 443], note: 'seen 2 times (port 80: 1, port 443: 1), first 2025-01-02T03:04:06Z, last 2025-01-02T03:04:07Z' },
    { host: 'b.example.com', ports: [443], note: 'seen 2 times, first 2025-01-02T03:04:05Z, last 2025-01-02T03:05:05Z' },
    { host: 'zz.test', ports: [443], note: 'seen 1 time, first 2025-01-02T03:04:05Z, last 2025-01-02T03:04:05Z' },
    { host: '11.22.33.44', ports: [8080], note: 'seen 1 time, first 2025-01-02T03:04:05Z, last 2025-01-02T03:04:05Z' },
    { host: '[2600:1f00::10]', ports: [443], note: 'seen 1 time, first 2025-01-02T03:04:05Z, last 2025-01-02T03:04:05Z' },
  ])
  t.equal(learned.decisions, 8)
  t.equal(learned.dropped, 0)
})

t.test('only what the rules did not allow is learned; deny-rule hits are reported, not allowed', async (t) => {
  const learner = createLearner()
  learner.add(record('allowed.test:443', 'allow-rule', { rule: 'allow[0] allowed.test:443' }))
  learner.add(record('fronted.test:443', 'sni-mismatch'))
  learner.add(record('nx.test:443', 'dns_error', { decision: 'error' }))
  learner.add(record('http://[redacted]@x/', 'http_request_error', { decision: 'error' }))
  learner.add(record('gist.github.com:443', 'deny-rule', { rule: 'deny[0] gist.github.com:*' }))
  learner.add(record('gist.github.com:443', 'deny-rule', { rule: 'deny[0] gist.github.com:*' }))
  // Docker Desktop's transparently captured HTTPS: an IP-literal CONNECT admitted by its server name
  learner.add(record('11.22.33.44:443', 'no-rule', { sni: 'Registry.Example.com' }))
  const learned = learner.result()
  t.strictSame(hosts(learned.allow), ['registry.example.com'], 'the server name, not the IP, is what enforce mode decides by')
  t.strictSame(learned.denyRules, [{ target: 'gist.github.com:443', rule: 'deny[0] gist.github.com:*', count: 2 }])
  t.strictSame(learned.special, [])
  t.equal(learned.decisions, 7)
})

t.test('--collapse: *.parent only for two or more siblings, never a shared suffix like co.uk', async (t) => {
  const learner = createLearner()
  for (const target of ['a.example.com:443', 'b.example.com:443', 'b.example.com:8443', 'example.com:443', 'solo.other.org:443', 'a.co.uk:443', 'b.co.uk:443', 'x.example.co.uk:443', 'y.example.co.uk:443', 'a.com:443', 'b.com:443']) {
    learner.add(record(target, 'no-rule'), T0)
  }
  const plain = learner.result()
  t.notOk(plain.allow.some((e) => e.host.startsWith('*.')), 'nothing collapses unless asked')
  t.equal(plain.allow.length, 10)
  const collapsed = learner.result({ collapse: true })
  t.strictSame(hosts(collapsed.allow), ['a.com', 'b.com', 'example.com', '*.example.com', 'solo.other.org', 'a.co.uk', 'b.co.uk', '*.example.co.uk'])
  t.strictSame(collapsed.allow[3], { host: '*.example.com', ports: [443, 8443], note: 'seen 3 times as a.example.com, b.example.com, first 2025-01-02T03:04:05Z, last 2025-01-02T03:04:05Z' })
})

t.test('private and special destinations are listed apart with why, with the entries that would allow them', async (t) => {
  const learner = createLearner()
  const prohibited = { decision: 'deny' as const, wouldDeny: false }
  learner.add(record('db.corp.test:5432', 'address-prohibited', { ...prohibited, resolved: ['10.1.2.3'] }), T0)
  learner.add(record('local.test:8080', 'address-prohibited', { ...prohibited, resolved: ['11.22.33.44', '127.0.0.1'] }), T0)
  learner.add(record('169.254.169.254:80', 'address-prohibited', { ...prohibited, method: 'GET' }), T0)
  learner.add(record('127.0.0.1:3128', 'self-connection', prohibited), T0)
  const learned = learner.result()
  t.strictSame(learned.allow, [], 'nothing special goes into "allow"')
  const note = 'seen 1 time, first 2025-01-02T03:04:05Z, last 2025-01-02T03:04:05Z'
  t.strictSame(learned.special, [
    { target: 'db.corp.test:5432', why: 'db.corp.test resolves to 10.1.2.3, a private network (RFC 1918) address', entries: [{ host: 'db.corp.test', ports: [5432], private: true, note }] },
    {
      target: 'local.test:8080',
      why: 'local.test resolves to 127.0.0.1, a loopback address',
      entries: [
        { host: 'local.test', ports: [8080], note },
        { host: '127.0.0.1', ports: [8080], note },
      ],
    },
    { target: '169.254.169.254:80', why: '169.254.169.254, a cloud metadata service address', entries: [{ host: '169.254.169.254', ports: [80], note }] },
  ])
})

t.test('state is bounded: new targets past the limit are counted and dropped, known ones still counted', async (t) => {
  const learner = createLearner(3)
  for (const n of [1, 2, 3, 4, 5]) learner.add(record(`h${n}.test:443`, 'no-rule'))
  learner.add(record('h1.test:443', 'no-rule'))
  learner.add(record('h9.test:443', 'address-prohibited', { resolved: ['10.0.0.1'] }))
  const learned = learner.result()
  t.strictSame(hosts(learned.allow), ['h1.test', 'h2.test', 'h3.test'])
  t.equal(learned.allow[0]?.note, 'seen 2 times')
  t.equal(learned.dropped, 3)
  t.equal(learned.limit, 3)
  t.equal(learned.decisions, 7)
})

t.test('every generated entry validates with the project parser, and the learned file allows what was seen', async (t) => {
  const learner = createLearner()
  const seen = ['api.example.com:443', 'a.cdn.example.net:443', 'b.cdn.example.net:80', 'xn--bcher-kva.example:443', '11.22.33.44:8080', '[2600:1f00::10]:443', 'under_score.example.org:8443']
  for (const target of seen) learner.add(record(target, 'no-rule'), T0)
  learner.add(record('db.corp.test:5432', 'address-prohibited', { resolved: ['10.1.2.3'] }), T0)
  learner.add(record('v6.test:443', 'address-prohibited', { resolved: ['fd00::10', '::1'] }), T0)
  for (const collapse of [false, true]) {
    const learned = learner.result({ collapse })
    const entries = [...learned.allow, ...learned.special.flatMap((s) => s.entries)]
    entries.forEach((entry, i) => t.ok(parseRule(entry, 'allow', i).ok, `collapse ${collapse}: ${JSON.stringify(entry)} parses`))
    const base = { $schema: './rules.schema.json', mode: 'report', allow: ['kept.example:443'], deny: ['gist.github.com'], dns: { servers: ['127.0.0.1:5353'] } }
    const file = learnedRulesFile(base, learned)
    const parsed = parseConfig(file)
    if (!parsed.ok) return t.fail(JSON.stringify(parsed.errors))
    t.equal(parsed.value.mode, 'enforce')
    t.equal(parsed.value.policy.allow.length, 1 + learned.allow.length, 'the existing entries are kept, the learned ones appended')
    t.equal(parsed.value.policy.deny.length, 1)
    t.strictSame(file.dns, base.dns, 'every other setting is kept')
    for (const target of seen.filter((s) => !s.startsWith('1') && !s.startsWith('['))) {
      const [name = '', port = ''] = target.split(':')
      t.ok(matchName(parsed.value.policy, 'allow', name, Number(port)), `collapse ${collapse}: ${target} is allowed`)
    }
  }
})

t.test('suggestions: de-duplicated with counts, most needed first (then by domain), deny rules named', async (t) => {
  const learner = createLearner()
  for (let i = 0; i < 3; i++) learner.add(record('api.test:443', 'no-rule', { decision: 'deny', mode: 'enforce' }))
  learner.add(record('db.corp.test:5432', 'address-prohibited', { decision: 'deny', resolved: ['10.1.2.3'] }))
  learner.add(record('local.test:80', 'address-prohibited', { decision: 'deny', resolved: ['::1'] }))
  learner.add(record('gist.github.com:443', 'deny-rule', { decision: 'deny', rule: 'deny[0] gist.github.com:*' }))
  learner.add(record('fine.test:443', 'allow-rule'))
  t.strictSame(learner.suggestions(), [
    { target: 'api.test:443', need: 'allow', count: 3, add: ['api.test:443'], why: 'no allow rule matches api.test:443' },
    { target: 'gist.github.com:443', need: 'deny-rule', count: 1, add: [], why: 'deny rule deny[0] gist.github.com:* matches gist.github.com:443: that rule must change to allow it' },
    { target: 'db.corp.test:5432', need: 'special', count: 1, add: [{ host: 'db.corp.test', ports: [5432], private: true }], why: 'db.corp.test resolves to 10.1.2.3, a private network (RFC 1918) address' },
    { target: 'local.test:80', need: 'special', count: 1, add: ['local.test:80', '[::1]:80'], why: 'local.test resolves to ::1, a loopback (::1) address' },
  ])
})

t.test('log lines: decisions are read with their time; other messages and non-JSON lines are ignored', async (t) => {
  t.equal(decisionFromLogLine('2025-01-02T03:04:05.000Z info decision id=1'), undefined)
  t.equal(decisionFromLogLine('{"message":"listening","url":"http://127.0.0.1:3128"}'), undefined)
  t.equal(decisionFromLogLine('{"message":"decision","target":7,"decision":"allow"}'), undefined)
  t.equal(decisionFromLogLine('[1,2]'), undefined)
  const line = JSON.stringify({ message: 'decision', id: 'a-1', client: '127.0.0.1:5', method: 'CONNECT', target: 'x.test:443', resolved: ['11.22.33.44', 5], decision: 'allow', reason: 'no-rule', mode: 'report', wouldDeny: true, level: 'info', timestamp: '2025-01-02T03:04:05.000Z' })
  const found = decisionFromLogLine(line)
  t.equal(found?.at, T0)
  t.match(found?.record, { target: 'x.test:443', resolved: ['11.22.33.44'], decision: 'allow', reason: 'no-rule', wouldDeny: true })
})

// ---- the command line -----------------------------------------------------------------------

function logLine(target: string, reason: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ message: 'decision', id: 'a', client: '127.0.0.1:1', method: 'CONNECT', target, decision: 'deny', reason, mode: 'enforce', wouldDeny: false, level: 'info', timestamp: '2025-01-02T03:04:05.000Z', ...extra })
}

const LOG = [
  '2025-01-02T03:04:05.000Z info listening url=http://127.0.0.1:3128',
  JSON.stringify({ message: 'listening', url: 'http://127.0.0.1:3128', level: 'info' }),
  logLine('api.test:443', 'no-rule'),
  logLine('api.test:443', 'no-rule'),
  logLine('db.corp.test:5432', 'address-prohibited', { resolved: ['10.1.2.3'] }),
  logLine('gist.github.com:443', 'deny-rule', { rule: 'deny[0] gist.github.com:*' }),
  logLine('ok.test:443', 'allow-rule', { decision: 'allow' }),
  JSON.stringify({ message: 'closed', id: 'a', kind: 'tunnel', durationMs: 3 }),
  '',
].join('\n')

t.test('suggest --from LOG: the entries to add, with counts, as a list or JSON lines', async (t) => {
  const dir = tempDir('learn')
  const log = join(dir, 'proxy.log')
  writeFileSync(log, LOG)
  const list = await runCli(['suggest', '--from', log])
  t.equal(list.code, 0, 'exits 0')
  t.strictSame(list.stdout.split('\n'), [
    '      2  "api.test:443"',
    '      1  (no entry helps: deny rule deny[0] gist.github.com:* matches gist.github.com:443: that rule must change to allow it)',
    '      1  {"host":"db.corp.test","ports":[5432],"private":true}  # warning: db.corp.test resolves to 10.1.2.3, a private network (RFC 1918) address',
    '',
  ])
  const json = await runCli(['suggest', '--from', log, '--json'])
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  t.strictSame(lines.map((l) => [l.target, l.count, l.need]), [['api.test:443', 2, 'allow'], ['gist.github.com:443', 1, 'deny-rule'], ['db.corp.test:5432', 1, 'special']])
  t.match(await runCli(['suggest']), { code: 2, stderr: /needs --from LOG/ })
  t.match(await runCli(['suggest', '--from', join(dir, 'missing.log')]), { code: 1, stderr: /cannot read/ })
  const help = await runCli(['suggest', '--help'])
  t.match(help.stdout, /usage: proxy-gate suggest --from LOG/)
})

t.test('learn --from LOG: the rules file plus the learned entries; the rules file is never replaced unasked', async (t) => {
  const dir = tempDir('learn')
  const log = join(dir, 'proxy.log')
  writeFileSync(log, LOG)
  const base = { allow: ['kept.test:443'], deny: ['gist.github.com'], dns: { servers: ['127.0.0.1:53'] } }
  const rules = writeJson(dir, 'rules.json', base)
  const out = join(dir, 'learned.json')
  const res = await runCli(['learn', '--rules', rules, '--from', log, '--out', out])
  t.equal(res.code, 0, 'exits 0')
  const learned = JSON.parse(readFileSync(out, 'utf8')) as { allow: unknown[]; mode: string; deny: unknown; dns: unknown }
  t.strictSame(learned.allow, ['kept.test:443', { host: 'api.test', ports: [443], note: 'seen 2 times, first 2025-01-02T03:04:05Z, last 2025-01-02T03:04:05Z' }])
  t.equal(learned.mode, 'enforce')
  t.strictSame([learned.deny, learned.dns], [base.deny, base.dns])
  t.match(res.stderr, /5 decisions seen; wrote .*learned\.json with 1 new "allow" entry/)
  t.match(res.stderr, /warning: 1 private or special-purpose destination/)
  t.match(res.stderr, /db\.corp\.test:5432: db\.corp\.test resolves to 10\.1\.2\.3/)
  t.match(res.stderr, /gist\.github\.com:443 matched deny rule deny\[0\] gist\.github\.com:\* \(seen 1 time\); it stays denied/)
  t.equal((await runCli(['validate', '--rules', out])).code, 0, 'the written file validates')

  const refused = await runCli(['learn', '--rules', rules, '--from', log, '--out', rules])
  t.equal(refused.code, 2)
  t.match(refused.stderr, /--out is the rules file/)
  t.strictSame(JSON.parse(readFileSync(rules, 'utf8')), base, 'the rules file is untouched')
  const forced = await runCli(['learn', '--rules', rules, '--from', log, '--out', rules, '--force', '--collapse'])
  t.equal(forced.code, 0, 'exits 0')
  t.equal((JSON.parse(readFileSync(rules, 'utf8')) as { allow: unknown[] }).allow.length, 2)

  t.match(await runCli(['learn', '--rules', rules, '--from', dir]), { code: 1, stderr: /cannot read/ })
  t.match(await runCli(['learn', '--rules', writeJson(dir, 'bad.json', { allow: ['*'] }), '--from', log]), { code: 1, stderr: /bad\.json has problems/ })
  t.match(await runCli(['learn', '--rules', rules, '--from', log, '--duration', '5']), { code: 2, stderr: /not for --from/ })
  t.match(await runCli(['learn', '--rules', rules, '--mode', 'enforce']), { code: 2, stderr: /report mode/ })
  t.match(await runCli(['learn', '--rules', rules, '--duration', '0']), { code: 2, stderr: /--duration/ })
  t.match((await runCli(['learn', '--help'])).stdout, /usage: proxy-gate learn/)
})

/** Runs a long-lived command (learn, start) with JSON logs, until it says it is listening. */
function spawnCli(args: string[]): Promise<RunningCli> {
  return startCli([...args, '--listen', '127.0.0.1:0', '--log-format', 'json', ...NO_ADMIN])
}

/** The CONNECT status (https) or response status (http) curl saw through the proxy. */
async function curl(proxy: string, url: string, ca?: string): Promise<number> {
  const stdout = await curlOutput(['-s', '-o', '/dev/null', '--max-time', '10', '-w', '%{http_connect} %{http_code}', '-x', proxy, ...(ca ? ['--cacert', ca] : []), url])
  const [connect, status] = stdout.split(' ').map(Number)
  return url.startsWith('https:') && connect !== 200 ? (connect ?? 0) : (status ?? 0)
}

t.test('learn: --duration stops it by itself; with no traffic nothing is added', async (t) => {
  const dir = tempDir('learn')
  const rules = writeJson(dir, 'rules.json', { allow: [] })
  const out = join(dir, 'learned.json')
  const res = await runCli(['learn', '--rules', rules, '--out', out, '--listen', '127.0.0.1:0', '--log-format', 'json', '--duration', '0.2', ...NO_ADMIN])
  t.equal(res.code, 0, 'exits 0')
  t.match(res.stdout, /"signal":"duration elapsed"/)
  t.strictSame(JSON.parse(readFileSync(out, 'utf8')), { allow: [], mode: 'enforce' })
  t.match(res.stderr, /0 decisions seen/)
})

t.test('learn on loopback: a name that resolves to 127.0.0.1 is listed apart, and its printed entries allow it', async (t) => {
  const upstream = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'local.learn.test': { A: ['127.0.0.1'] } })
  t.teardown(async () => {
    await upstream.close()
    await dns.close()
  })
  const dir = tempDir('learn')
  const rules = writeJson(dir, 'rules.json', { allow: [], dns: { servers: [dns.server] } })
  const out = join(dir, 'learned-rules.json')
  const target = `http://local.learn.test:${upstream.port}/`
  const learning = await spawnCli(['learn', '--rules', rules, '--out', out])
  t.equal(await curl(learning.url, target), 403, 'the address guard holds in report mode')
  await learning.waitFor((l) => l.message === 'decision' && l.reason === 'address-prohibited')
  t.equal(await learning.stop(), 0)

  const learned = JSON.parse(readFileSync(out, 'utf8')) as { allow: unknown[] }
  t.strictSame(learned.allow, [], 'a loopback destination is never added unasked')
  t.match(learning.stderr(), new RegExp(`local\\.learn\\.test:${upstream.port}: local\\.learn\\.test resolves to 127\\.0\\.0\\.1, a loopback address`))
  // what a developer on loopback does: copy the printed entries into "allow"
  const printed = learning
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('    {'))
    .map((l) => JSON.parse(l) as LearnedEntry)
  t.strictSame(hosts(printed), ['local.learn.test', '127.0.0.1'])
  writeJson(dir, 'learned-rules.json', { ...learned, allow: printed })
  const enforcing = await spawnCli(['start', '--rules', out])
  t.equal(await curl(enforcing.url, target), 200)
  t.equal(await enforcing.stop(), 0)
})

t.test('round trip: traffic learned in report mode, the learned file enforced: the same traffic passes, a new host is denied', { skip: NETNS_SKIP }, async (t) => {
  const api = await startHttpUpstream('11.22.33.44')
  const secure = await startHttpsUpstream('11.22.33.45', ['secure.learn.test'])
  const fresh = await startHttpUpstream('11.22.33.46')
  const dns = await startDns({
    'api.learn.test': { A: ['11.22.33.44'] },
    'secure.learn.test': { A: ['11.22.33.45'] },
    'new.learn.test': { A: ['11.22.33.46'] },
  })
  t.teardown(async () => {
    await Promise.all([api.close(), secure.close(), fresh.close()])
    await dns.close()
  })
  const dir = tempDir('learn')
  const ca = join(dir, 'secure.crt')
  writeFileSync(ca, secure.tls.cert)
  const rules = writeJson(dir, 'rules.json', { allow: [], dns: { servers: [dns.server] } })
  const out = join(dir, 'learned-rules.json')
  const traffic = [`http://api.learn.test:${api.port}/a`, `http://api.learn.test:${api.port}/b`, `https://secure.learn.test:${secure.port}/c`]

  const learning = await spawnCli(['learn', '--rules', rules, '--out', out])
  t.equal(learning.lines.find((l) => l.message === 'listening')?.mode, 'report')
  for (const url of traffic) t.equal(await curl(learning.url, url, ca), 200, `report mode lets ${url} through`)
  t.equal(await learning.stop(), 0)
  t.match(learning.stderr(), /wrote .*learned-rules\.json with 2 new "allow" entries/)

  const learned = JSON.parse(readFileSync(out, 'utf8')) as { mode: string; allow: LearnedEntry[]; dns: unknown }
  t.equal(learned.mode, 'enforce')
  t.strictSame(learned.dns, { servers: [dns.server] })
  t.match(learned.allow, [
    { host: 'api.learn.test', ports: [api.port], note: /^seen 2 times, first \S+Z, last \S+Z$/ },
    { host: 'secure.learn.test', ports: [secure.port], note: /^seen 1 time, first/ },
  ])
  t.equal(learned.allow.length, 2)

  const enforcing = await spawnCli(['start', '--rules', out])
  t.equal(enforcing.lines.find((l) => l.message === 'listening')?.mode, 'enforce')
  for (const url of traffic) t.equal(await curl(enforcing.url, url, ca), 200, `enforced, ${url} still passes`)
  t.equal(await curl(enforcing.url, `http://new.learn.test:${fresh.port}/`), 403, 'a host not seen while learning is denied')
  t.equal(await curl(enforcing.url, `https://api.learn.test:${secure.port}/`, ca), 403, 'a known host on a port not seen is denied')
  t.equal(fresh.connections(), 0)
  t.equal(await enforcing.stop(), 0)
})
