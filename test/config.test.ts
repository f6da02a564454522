// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/rules/config.ts and lib/rules/file.ts: rules.json as a whole (listen, mode, allow/deny, bypass,
// dns, limits), the issue's example file, the shipped rules.json, and reading a file from disk.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { DEFAULT_LIMITS, DEFAULT_TLS, parseConfig, type Config } from '../lib/rules/config.js'
import { formatIp } from '../lib/policy/ip.js'
import { decideTarget, type DecisionContext } from '../lib/policy/decide.js'
import { describePattern, formatRuleErrors, type Policy } from '../lib/policy/rules.js'
import { loadRulesFile } from '../lib/rules/file.js'
import { ip, target } from './helpers/fixtures.js'

const ENFORCE: DecisionContext = { mode: 'enforce', self: [], tls: DEFAULT_TLS }

function config(json: unknown): Config {
  const parsed = parseConfig(json)
  if (!parsed.ok) throw new Error(parsed.errors.map((e) => `${e.path} ${e.entry}: ${e.message}`).join('\n'))
  return parsed.value
}

/** The errors of a config that must be refused, as [path, message] pairs. */
function errorsOf(json: unknown): Array<[string, string]> {
  const parsed = parseConfig(json)
  return parsed.ok ? [['(accepted)', '']] : parsed.errors.map((e) => [e.path, e.message])
}

/** The rules-only verdict: 'resolve' means an allow rule matched and DNS comes next. */
function verdict(policy: Policy, authority: string): string {
  const d = decideTarget(policy, ENFORCE, target(authority))
  return d.verdict === 'resolve' ? 'resolve' : `${d.verdict}/${d.reason}`
}

// The example from the issue ("rules.json" section), verbatim.
const ISSUE_EXAMPLE = {
  $schema: './rules.schema.json',
  listen: '127.0.0.1:3128',
  mode: 'enforce',
  allow: [
    'registry-1.docker.io:443',
    '*.docker.io:443',
    'github.com:80,443',
    'api.example.com:8000-8100',
    '203.0.113.0/24:443',
    '[2001:db8::/32]:443',
    { host: 'git.corp.example', ports: [443], private: true, note: 'internal git' },
  ],
  deny: ['gist.github.com:*'],
  bypass: ['localhost', '127.0.0.1', '::1', '*.local'],
  dns: { servers: [], timeoutMs: 5000 },
}

t.test('an empty object is a valid config with the defaults', async (t) => {
  const c = config({})
  t.same(c.listen, { host: '127.0.0.1', port: 3128 })
  t.equal(c.mode, 'enforce')
  t.same(c.policy.allow, [])
  t.same(c.policy.deny, [])
  t.same(c.bypass, [])
  t.same(c.dns, { servers: [], timeoutMs: 5000, cacheSize: 10000 })
  t.same(c.limits, DEFAULT_LIMITS)
})

t.test("the issue's example rules.json validates and means what the issue says", async (t) => {
  const c = config(ISSUE_EXAMPLE)
  t.same(c.listen, { host: '127.0.0.1', port: 3128 })
  t.equal(c.mode, 'enforce')
  t.equal(c.policy.allow.length, 7)
  t.equal(c.policy.deny.length, 1)
  t.same(c.bypass.map(describePattern), ['localhost', '127.0.0.1', '::1', '*.local'])
  t.same(c.dns, { servers: [], timeoutMs: 5000, cacheSize: 10000 })
  const rows: Array<[string, string]> = [
    ['registry-1.docker.io:443', 'resolve'],
    ['auth.docker.io:443', 'resolve'],
    ['docker.io:443', 'deny/no-rule'], // "*.docker.io" is not the apex
    ['registry-1.docker.io:80', 'deny/no-rule'],
    ['github.com:80', 'resolve'],
    ['github.com:443', 'resolve'],
    ['gist.github.com:443', 'deny/deny-rule'],
    ['api.example.com:8000', 'resolve'],
    ['api.example.com:8100', 'resolve'],
    ['api.example.com:8101', 'deny/no-rule'],
    ['git.corp.example:443', 'resolve'],
    ['203.0.113.7:443', 'allow/allow-rule'], // an IP rule inside documentation space names it
    ['203.0.113.7:80', 'deny/address-prohibited'],
    ['[2001:db8::1]:443', 'allow/allow-rule'],
    ['example.com:443', 'deny/no-rule'],
  ]
  for (const [authority, expected] of rows) t.equal(verdict(c.policy, authority), expected, authority)
  const git = c.policy.allow[6]
  t.equal(git?.private, true)
  t.equal(git?.note, 'internal git')
})

t.test('the shipped rules.json validates and allows what a docker pull needs', async (t) => {
  const file = new URL('../rules.json', import.meta.url)
  const c = config(JSON.parse(readFileSync(file, 'utf8')))
  t.equal(c.mode, 'enforce', 'ships in enforce mode')
  t.same(c.listen, { host: '127.0.0.1', port: 3128 }, 'ships on loopback')
  const rows: Array<[string, string]> = [
    ['registry-1.docker.io:443', 'resolve'],
    ['auth.docker.io:443', 'resolve'],
    ['production.cloudflare.docker.com:443', 'resolve'],
    ['registry.npmjs.org:443', 'resolve'],
    ['pypi.org:443', 'resolve'],
    ['github.com:443', 'resolve'],
    ['deb.debian.org:80', 'resolve'],
    ['example.com:443', 'deny/no-rule'],
    ['registry-1.docker.io:80', 'deny/no-rule'],
    ['auth.docker.io:80', 'deny/no-rule'],
    ['gist.github.com:443', 'deny/no-rule'],
  ]
  for (const [authority, expected] of rows) t.equal(verdict(c.policy, authority), expected, authority)
  const loaded = loadRulesFile(file.pathname)
  t.ok(loaded.ok, 'loadRulesFile reads it too')
})

t.test('an unknown key anywhere is an error that names its path (a typo like "dney")', async (t) => {
  const [typo, ...others] = errorsOf({ allow: ['a.test'], dney: ['b.test'] })
  t.same(others, [], 'one error')
  t.equal(typo?.[0], 'dney')
  t.match(typo?.[1], /^unknown key "dney" \(allowed: \$schema, listen, mode, allow, deny, bypass, dns, limits, tls, /)
  t.same(errorsOf({ dns: { retries: 3 } }), [['dns.retries', 'unknown key "retries" (allowed: servers, timeoutMs, cacheSize)']])
  const limits = errorsOf({ limits: { headerTimeout: 5 } })
  t.equal(limits[0]?.[0], 'limits.headerTimeout')
  t.match(limits[0]?.[1], /unknown key "headerTimeout" \(allowed: headerTimeoutMs, /)
  const parsed = parseConfig({ dney: ['b.test'] })
  t.equal(parsed.ok ? '' : parsed.errors[0]?.entry, '["b.test"]', 'the entry is shown')
})

t.test('the top level must be an object', async (t) => {
  for (const json of [[], null, 'rules', 42]) {
    t.same(errorsOf(json), [['(top level)', 'rules file must be a JSON object']], JSON.stringify(json))
  }
})

t.test('listen: IP literal or localhost with a port; 0 picks a free port', async (t) => {
  const good: Array<[string, string, number]> = [
    ['127.0.0.1:3128', '127.0.0.1', 3128],
    ['localhost:8080', '127.0.0.1', 8080],
    ['127.0.0.1:0', '127.0.0.1', 0],
    ['[::1]:3128', '::1', 3128],
    ['[0:0::1]:3128', '::1', 3128],
    ['0.0.0.0:3128', '0.0.0.0', 3128], // accepted here; the CLI demands --insecure-open for it
  ]
  for (const [listen, host, port] of good) t.same(config({ listen }).listen, { host, port }, listen)
  const bad: Array<[unknown, RegExp]> = [
    ['example.com:80', /listen host must be an IP address or localhost/],
    ['127.0.0.1', /has no port/],
    ['127.0.0.1:65536', /port "65536"/],
    ['127.0.0.1:-1', /port "-1"/],
    ['127.0.0.1:http', /port "http"/],
    ['::1:3128', /brackets/],
    ['127.1:3128', /not a canonical IPv4/],
    [3128, /must be a string "HOST:PORT"/],
    [null, /must be a string/],
  ]
  for (const [listen, message] of bad) {
    const errors = errorsOf({ listen })
    t.equal(errors.length, 1, JSON.stringify(listen))
    t.equal(errors[0]?.[0], 'listen')
    t.match(errors[0]?.[1], message)
  }
})

t.test('mode: "enforce" or "report", nothing else', async (t) => {
  t.equal(config({ mode: 'report' }).mode, 'report')
  t.equal(config({ mode: 'enforce' }).mode, 'enforce')
  for (const mode of ['Enforce', 'REPORT', 'open', '', 1, true]) {
    t.same(errorsOf({ mode }), [['mode', 'must be "enforce" or "report"']], JSON.stringify(mode))
  }
})

t.test('allow/deny errors keep their paths inside the whole-file check', async (t) => {
  const errors = errorsOf({ allow: ['ok.test', '*', 'a.test:0'], deny: ['x.test:90-80'], mode: 'nope' })
  t.same(
    errors.map(([path]) => path),
    ['mode', 'allow[1]', 'allow[2]', 'deny[0]'],
  )
  t.match(errors.find(([path]) => path === 'allow[1]')?.[1], /wildcard/)
  t.match(errors.find(([path]) => path === 'deny[0]')?.[1], /reversed port range/)
})

t.test('dns.servers: IP or IP:PORT (IPv6 bracketed with a port), anything else named by index', async (t) => {
  const c = config({ dns: { servers: ['1.1.1.1', '1.1.1.1:5353', '::1', '[::1]:5300', '[2001:db8::53]'], timeoutMs: 2000, cacheSize: 50 } })
  t.same(
    c.dns.servers.map((s) => [formatIp(s.ip), s.port]),
    [['1.1.1.1', 53], ['1.1.1.1', 5353], ['::1', 53], ['::1', 5300], ['2001:db8::53', 53]],
  )
  t.same(c.dns.servers[0]?.ip, ip('1.1.1.1'))
  t.equal(c.dns.timeoutMs, 2000)
  t.equal(c.dns.cacheSize, 50)
  const bad: Array<[unknown, RegExp]> = [
    ['dns.google', /a DNS server must be an IP address/],
    ['dns.google:53', /a DNS server must be an IP address/],
    ['127.1', /not a canonical IPv4/],
    ['1.1.1.1:0', /port "0"/],
    ['1.1.1.1:65536', /port "65536"/],
    ['1.1.1.1:', /port ""/],
    ['[fe80::1%eth0]:53', /zone identifiers/],
    [53, /a DNS server must be a string "IP" or "IP:PORT"/],
    [null, /must be a string/],
  ]
  const errors = errorsOf({ dns: { servers: ['8.8.8.8', ...bad.map(([s]) => s)] } })
  t.equal(errors.length, bad.length, 'one error per bad server, none for the good one')
  bad.forEach(([server, message], i) => {
    const error = errors.find(([path]) => path === `dns.servers[${i + 1}]`)
    t.match(error?.[1], message, `dns.servers[${i + 1}] ${JSON.stringify(server)}`)
  })
  t.same(errorsOf({ dns: { servers: '1.1.1.1' } }), [['dns.servers', 'must be an array']])
  t.same(errorsOf({ dns: [] }), [['dns', '"dns" must be an object']])
  for (const value of [0, -1, 1.5, '5000', null]) {
    t.same(errorsOf({ dns: { timeoutMs: value, cacheSize: value } }), [['dns.timeoutMs', 'must be a whole number from 100 to 60000 (milliseconds)'], ['dns.cacheSize', 'must be a whole number from 1 to 1000000']], JSON.stringify(value))
  }
})

t.test('limits: known keys, whole numbers in range, defaults for the rest', async (t) => {
  const c = config({ limits: { headerTimeoutMs: 1000, maxConnections: 10 } })
  t.equal(c.limits.headerTimeoutMs, 1000)
  t.equal(c.limits.maxConnections, 10)
  t.equal(c.limits.tunnelIdleTimeoutMs, DEFAULT_LIMITS.tunnelIdleTimeoutMs, 'unset keys keep their defaults')
  t.equal(c.limits.maxHeaderCount, DEFAULT_LIMITS.maxHeaderCount)
  for (const key of Object.keys(DEFAULT_LIMITS).filter((k) => k !== 'drainDelayMs')) {
    for (const value of [0, -5, 2.5, '100', true, null]) {
      const errors = errorsOf({ limits: { [key]: value } })
      t.same(errors.map(([path]) => path), [`limits.${key}`], `${key}: ${JSON.stringify(value)}`)
      t.match(errors[0]?.[1], /^must be a whole number from [1-9][0-9]* to [1-9][0-9]*( \(milliseconds\))?$/)
    }
  }
  t.equal(DEFAULT_LIMITS.drainDelayMs, 0, 'no drain delay unless asked: Ctrl-C stops at once')
  t.equal(config({ limits: { drainDelayMs: 0 } }).limits.drainDelayMs, 0)
  t.equal(config({ limits: { drainDelayMs: 5000 } }).limits.drainDelayMs, 5000)
  for (const value of [-1, 2.5, '100', true, null]) {
    t.same(errorsOf({ limits: { drainDelayMs: value } }), [['limits.drainDelayMs', 'must be a whole number from 0 to 3600000 (milliseconds)']], `drainDelayMs: ${JSON.stringify(value)}`)
  }
  t.same(errorsOf({ limits: 5 }), [['limits', '"limits" must be an object']])
  t.same(errorsOf({ limits: [] }), [['limits', '"limits" must be an object']])
})

t.test('sandbox: an address, a DNS port (53, or false), HTTP and TLS ports, a SOCKS5 port (1080, or false); every mistake named', async (t) => {
  t.equal(config({}).sandbox, undefined, 'off unless configured')
  const defaults = config({ sandbox: { address: '10.250.0.2' } }).sandbox
  t.same(defaults && { ...defaults, address: undefined }, { address: undefined, dnsPort: 53, dnsQueriesPerSecond: 100, httpPorts: [80], tlsPorts: [443], socksPort: 1080 })
  t.equal(defaults?.address.family, 4)
  const custom = config({ sandbox: { address: 'fd00::2', dns: false, http: [], tls: [443, 8443], dnsQueriesPerSecond: 5, socks: false } }).sandbox
  t.same(custom && [custom.dnsPort, custom.httpPorts, custom.tlsPorts, custom.dnsQueriesPerSecond, custom.address.family, custom.socksPort], [undefined, [], [443, 8443], 5, 6, undefined])
  t.equal(config({ sandbox: { address: '10.0.0.2', socks: 1081 } }).sandbox?.socksPort, 1081)
  t.same(errorsOf({ sandbox: true }), [['sandbox', '"sandbox" is { "address": IP, "dns": PORT|false, "http": [PORTS], "tls": [PORTS], "socks": PORT|false }']])
  for (const address of [undefined, 'proxy.local', '0.0.0.0', '::', '10.250.0.2:53', '010.0.0.1']) {
    t.same(errorsOf({ sandbox: { address } }).map(([path]) => path), ['sandbox.address'], `address ${String(address)}`)
  }
  for (const dns of [0, 65536, '53', true, 5.5]) t.same(errorsOf({ sandbox: { address: '10.0.0.2', dns } }).map(([path]) => path), ['sandbox.dns'], `dns ${String(dns)}`)
  for (const http of [80, [0], [80, 80], ['80']]) t.same(errorsOf({ sandbox: { address: '10.0.0.2', http } }).map(([path]) => path), ['sandbox.http'], `http ${JSON.stringify(http)}`)
  for (const socks of [0, 65536, '1080', true, 1080.5, null]) {
    t.same(errorsOf({ sandbox: { address: '10.0.0.2', socks } }), [['sandbox.socks', 'must be a port (1-65535) for the SOCKS5 listener, or false for none']], `socks ${String(socks)}`)
  }
  const clashes: [Record<string, unknown>, string][] = [
    [{ socks: 53 }, "port 53 is also sandbox.dns's"],
    [{ http: [80, 1080] }, "port 1080 is also sandbox.http's"],
    [{ socks: 443 }, "port 443 is also sandbox.tls's"],
  ]
  for (const [settings, said] of clashes) {
    t.same(errorsOf({ sandbox: { address: '10.0.0.2', ...settings } }), [['sandbox.socks', `${said}: the SOCKS5 listener needs a port of its own (or "socks": false)`]], JSON.stringify(settings))
  }
  t.same(config({ sandbox: { address: '10.0.0.2', http: [1080], socks: false } }).sandbox?.httpPorts, [1080], 'no SOCKS5 listener: 1080 is free for HTTP')
  t.same(errorsOf({ sandbox: { address: '10.0.0.2', http: [80, 8443], tls: [8443] } }), [['sandbox.tls', 'port 8443 is also in sandbox.http: a port is either plain HTTP or TLS']])
  t.same(errorsOf({ sandbox: { address: '10.0.0.2', dsn: 53 } }).map(([path]) => path), ['sandbox.dsn'], 'a typo is an unknown key')
  t.same(errorsOf({ sandbox: { address: '10.0.0.2', dnsQueriesPerSecond: 0 } }).map(([path]) => path), ['sandbox.dnsQueriesPerSecond'])
})

t.test('bypass: hosts without ports; bare IPv6 is allowed', async (t) => {
  const c = config({ bypass: ['localhost', '127.0.0.1', '::1', '[::1]', 'fd00::/8', '10.0.0.0/8', '*.local', 'Example.COM.'] })
  t.same(c.bypass.map(describePattern), ['localhost', '127.0.0.1', '::1', '::1', 'fd00::/8', '10.0.0.0/8', '*.local', 'example.com'])
  const bad: Array<[unknown, RegExp]> = [
    ['localhost:80', /bypass entries take no ports/],
    ['127.0.0.1:80', /bypass entries take no ports/],
    ['*.local:443', /bypass entries take no ports/],
    ['[::1]:80', /invalid host name/],
    ['*', /wildcard/],
    ['10.0.0.1/8', /host bits are set/],
    [5, /a bypass entry must be a string/],
  ]
  const errors = errorsOf({ bypass: ['ok.local', ...bad.map(([b]) => b)] })
  t.equal(errors.length, bad.length)
  bad.forEach(([entry, message], i) => {
    const error = errors.find(([path]) => path === `bypass[${i + 1}]`)
    t.match(error?.[1], message, `bypass[${i + 1}] ${JSON.stringify(entry)}`)
  })
  t.same(errorsOf({ bypass: 'localhost' }), [['bypass', '"bypass" must be an array']])
})

t.test('every problem in a file is reported at once', async (t) => {
  const errors = errorsOf({ dney: [], listen: 'nope', mode: 'x', allow: ['*'], bypass: ['a:1'], dns: { servers: ['x'] }, limits: { maxConnections: 0 } })
  t.same(
    errors.map(([path]) => path).sort(),
    ['allow[0]', 'bypass[0]', 'dney', 'dns.servers[0]', 'limits.maxConnections', 'listen', 'mode'],
  )
})

t.test('loadRulesFile: reads and validates a file, names it on failure, and lets overrides win', async (t) => {
  const dir = t.testdir({
    'good.json': JSON.stringify({ listen: '127.0.0.1:3128', mode: 'enforce', allow: ['a.test:443'] }),
    'bad-json.json': '{ "allow": ["a.test:443", }',
    'bad-rule.json': JSON.stringify({ allow: ['a.test:0'] }),
  })
  const good = loadRulesFile(join(dir, 'good.json'))
  t.ok(good.ok)
  t.equal(good.ok && good.value.mode, 'enforce')
  t.equal(good.ok && good.value.policy.allow.length, 1)

  const badJson = loadRulesFile(join(dir, 'bad-json.json'))
  t.notOk(badJson.ok)
  const jsonError = badJson.ok ? undefined : badJson.errors[0]
  t.equal(jsonError?.path, '(file)')
  t.equal(jsonError?.entry, join(dir, 'bad-json.json'), 'the error names the file')
  t.match(jsonError?.message, /^not valid JSON at line 1, column 27: /)

  const missing = loadRulesFile(join(dir, 'nope.json'))
  t.notOk(missing.ok)
  t.equal(missing.ok ? undefined : missing.errors[0]?.entry, join(dir, 'nope.json'))
  t.match(missing.ok ? undefined : missing.errors[0]?.message, /^cannot read: .*ENOENT/)

  const badRule = loadRulesFile(join(dir, 'bad-rule.json'), { mode: 'report' })
  t.same(badRule.ok ? [] : badRule.errors.map((e) => e.path), ['allow[0]'], 'validation errors come through; overrides do not hide them')

  const report = loadRulesFile(join(dir, 'good.json'), { mode: 'report' })
  t.equal(report.ok && report.value.mode, 'report', 'a command-line mode wins over the file')
  const listen = loadRulesFile(join(dir, 'good.json'), { listen: { host: '127.0.0.1', port: 0 } })
  t.same(listen.ok && listen.value.listen, { host: '127.0.0.1', port: 0 }, 'a command-line listen wins too')
  const unset = loadRulesFile(join(dir, 'good.json'), { mode: undefined, listen: undefined })
  t.equal(unset.ok && unset.value.mode, 'enforce', 'an unset override leaves the file value')
  t.same(unset.ok && unset.value.listen, { host: '127.0.0.1', port: 3128 })
})

t.test('credentials in a refused rule never reach the printed errors, whichever check refused it', async (t) => {
  for (const json of [{ allow: ['user:s3cret@example.com'] }, { allow: ['http://user:s3cret@example.com/'] }, { upstream: 'http://user:s3cret@:80' }]) {
    const parsed = parseConfig(json)
    t.notOk(parsed.ok, JSON.stringify(Object.keys(json)))
    if (!parsed.ok) t.notMatch(formatRuleErrors(parsed.errors), /s3cret/)
  }
})
