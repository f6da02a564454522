// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/policy/rules.ts and decide.ts: the rule grammar and its validation errors, the matcher, and the two-step
// decision (names on rules alone, then every resolved address through deny rules and the
// address guard). Rules R1-R4 and the DNS fixtures are the corpus's (section 0); the resolved
// addresses are given directly, since the policy is pure.
import { DEFAULT_TLS } from '../lib/rules/config.js'
import t from 'tap'
import { checkHello, decideName, checkInnerHost, confirmSniAddress, decideAddresses, decideRequest, needsInterception, withRequest, decideForwarded, decideTarget, denyErrorType, type Decision, type DecisionContext, type Pending, type Reason } from '../lib/policy/decide.js'
import { compilePolicy, entryText, parsePathGlob, describePattern, matchIp, matchName, parseBypass, parseRule, type ListName, type Policy, type PortRange } from '../lib/policy/rules.js'
import { normalisePath } from '../lib/policy/target.js'
import { ip, policy, target } from './helpers/fixtures.js'

const ENFORCE: DecisionContext = { mode: 'enforce', self: [], tls: DEFAULT_TLS }
const REPORT: DecisionContext = { mode: 'report', self: [], tls: DEFAULT_TLS }

/** Both steps, as a route runs them: decideTarget, then (for allowed names) decideAddresses. */
function decide(p: Policy, authority: string, addresses: string[] = [], ctx: DecisionContext = ENFORCE): Decision {
  const to = target(authority)
  const first = decideTarget(p, ctx, to)
  if (first.verdict !== 'resolve') return first
  return decideAddresses(p, ctx, to, first, addresses.map(ip))
}

/** An entry for a test name: JSON, with non-ASCII escaped (U+2028 would break a TAP line). */
function show(entry: unknown): string {
  return entryText(entry).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** `allow/allow-rule`, `deny/no-rule`, ...: compact enough for tables. */
function outcome(d: Decision | Pending): string {
  return d.verdict === 'resolve' ? 'resolve' : `${d.verdict}/${d.reason}`
}

// ---- grammar -------------------------------------------------------------------------------

t.test('rule entries parse to a pattern and ports; allow defaults to 80,443 and deny to every port', async (t) => {
  const web: PortRange[] = [[80, 80], [443, 443]]
  const all: PortRange[] = [[1, 65535]]
  const rows: Array<[unknown, ListName, string, PortRange[]]> = [
    ['example.com', 'allow', 'example.com', web],
    ['example.com', 'deny', 'example.com', all],
    ['Example.COM.:443', 'allow', 'example.com', [[443, 443]]],
    ['*.example.com:443', 'allow', '*.example.com', [[443, 443]]],
    ['*.Example.COM', 'allow', '*.example.com', web],
    ['github.com:80,443', 'allow', 'github.com', web],
    ['api.example.com:8000-8100', 'allow', 'api.example.com', [[8000, 8100]]],
    ['gist.github.com:*', 'deny', 'gist.github.com', all],
    ['a.test:22,80,9000-9001', 'allow', 'a.test', [[22, 22], [80, 80], [9000, 9001]]],
    ['a.test:1-65535', 'allow', 'a.test', all],
    ['éxämple.com:443', 'allow', 'xn--xmple-gra7a.com', [[443, 443]]], // case 34: IDN to punycode
    ['*.bücher.de', 'allow', '*.xn--bcher-kva.de', web],
    ['203.0.113.0/24:443', 'allow', '203.0.113.0/24', [[443, 443]]],
    ['203.0.113.10:443', 'allow', '203.0.113.10', [[443, 443]]],
    ['10.20.0.0/16:5432', 'allow', '10.20.0.0/16', [[5432, 5432]]],
    ['127.0.0.1:8080', 'allow', '127.0.0.1', [[8080, 8080]]],
    ['[2001:db8::/32]:443', 'allow', '2001:db8::/32', [[443, 443]]],
    ['[::1]:80', 'allow', '::1', [[80, 80]]],
    ['[0:0::1]', 'allow', '::1', web],
    ['10.0.0.0/8', 'deny', '10.0.0.0/8', all],
    [{ host: 'a.test', ports: [443] }, 'allow', 'a.test', [[443, 443]]],
    [{ host: 'a.test', ports: '80,443' }, 'allow', 'a.test', web],
    [{ host: 'a.test', ports: [80, '8000-8100'] }, 'allow', 'a.test', [[80, 80], [8000, 8100]]],
    [{ host: 'a.test' }, 'allow', 'a.test', web],
    [{ host: 'a.test' }, 'deny', 'a.test', all],
  ]
  for (const [entry, list, pattern, ports] of rows) {
    const rule = parseRule(entry, list, 3)
    if (!rule.ok) {
      t.fail(`${show(entry)}: ${rule.error}`)
      continue
    }
    t.equal(describePattern(rule.value.pattern), pattern, `${show(entry)} host`)
    t.same(rule.value.ports, ports, `${show(entry)} ports`)
    t.equal(rule.value.list, list)
    t.equal(rule.value.index, 3)
  }
  const git = parseRule({ host: 'git.corp.example', ports: [443], private: true, note: 'internal git' }, 'allow', 6)
  t.ok(git.ok && git.value.private, 'private: true is kept')
  t.equal(git.ok && git.value.note, 'internal git', 'note is kept')
  t.equal(git.ok && git.value.text, '{"host":"git.corp.example","ports":[443],"private":true,"note":"internal git"}', 'text is the entry as written')
  const wild = parseRule('*.example.com:443', 'allow', 0)
  t.equal(wild.ok && wild.value.pattern.kind, 'wildcard')
})

t.test('every bad entry is an error naming its list, index, entry and why', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    ['*', /wildcard is only allowed as a whole first label/],
    ['*.', /wildcard must be "\*\." followed by a host name: empty host name/],
    ['a*.b', /wildcard is only allowed as a whole first label/],
    ['*example.com', /wildcard is only allowed as a whole first label/],
    ['*.*.x', /wildcard must be "\*\." followed by a host name/],
    ['a"b.com', /invalid host name/],
    ['a"; return "DIRECT"; //', /invalid host name|wildcard/], // case 107
    ['a b.com', /invalid host name/],
    ['a%b.com', /invalid host name/],
    ['a\0b.com', /invalid host name/],
    ['a\nb.com', /invalid host name/], // case 109
    ['a\u2028b.com', /internationalised domain name|invalid host name/],
    ['ex\u00adample.com', /IDNA would change it/], // case 35
    ['ex\u200bample.com', /IDNA would change it/],
    ['a|.*', /wildcard/], // case 110
    ['.example.com', /empty label/],
    ['example..com', /empty label/],
    ['127.1:80', /not an IP address/], // numeric spellings are not names in rules either
    ['2130706433', /not an IP address/],
    ['0x7f.0.0.1', /not a canonical IPv4 address/],
    ['a.com:0', /bad port list "0"/],
    ['a.com:65536', /bad port list "65536"/],
    ['a.com:99999', /bad port list/],
    ['a.com:-1', /bad port list/],
    ['a.com:+443', /bad port list/],
    ['a.com:0-80', /bad port list/],
    ['a.com:80-65536', /bad port list/],
    ['a.com:90-80', /reversed port range "90-80"/],
    ['a.com:80-90-100', /bad port list/],
    ['a.com:', /bad port list ""/],
    ['a.com:80,,443', /bad port list "80,,443"/],
    ['a.com:http', /bad port list/],
    ['a.com:*,80', /bad port list/],
    ['10.0.0.1/8', /host bits are set: did you mean 10\.0\.0\.0\/8\?/],
    ['10.0.0.0/33', /prefix length "\/33"/],
    ['10.0.0.0/8/8', /prefix length/],
    ['[::ffff:0:0/96]:443', /IPv4-mapped IPv6 ranges are not accepted/], // case 23
    ['::1', /must be written in brackets/],
    ['2001:db8::/32', /must be written in brackets/],
    ['[fe80::1%eth0]:80', /invalid host name/],
    [{ host: 'a.com', bad: 1 }, /unknown key "bad" \(allowed: host, ports, private, note, methods, paths\)/],
    [{ host: 'a.com', port: 443 }, /unknown key "port"/],
    [{ ports: [443] }, /"host" must be a string/],
    [{ host: 'a.com', private: 'yes' }, /"private" must be true or false/],
    [{ host: 'a.com', note: 5 }, /"note" must be a string/],
    [{ host: 'a.com', ports: [] }, /"ports" must be a non-empty array/],
    [{ host: 'a.com', ports: 443 }, /"ports" must be a non-empty array/],
    [{ host: 'a.com', ports: [0] }, /bad port list "0"/],
    [{ host: 'a.com', ports: [1.5] }, /"ports" entries must be numbers or "a-b" strings/],
    [{ host: 'a.com', ports: [true] }, /"ports" entries must be numbers/],
    [{ host: '10.0.0.0/8', private: true }, /"private" applies only to allow rules for host names/],
    [{ host: '[fd00::/8]', private: true }, /"private" applies only/],
    [42, /an entry must be a string "HOST\[:PORTS\]" or an object with "host"/],
    [null, /an entry must be a string/],
    [['a.com'], /an entry must be a string/],
  ]
  // one good entry first, so indexes are not just 0..n
  const compiled = compilePolicy({ allow: ['good.example:443', ...bad.map(([entry]) => entry)], deny: ['ok.example', { host: 'x.com', private: true }, '*'] })
  t.notOk(compiled.ok, 'the policy is refused')
  const errors = compiled.errors ?? []
  t.equal(errors.length, bad.length + 2, 'one error per bad entry, none for good ones')
  bad.forEach(([entry, message], i) => {
    const error = errors.find((e) => e.path === `allow[${i + 1}]`)
    t.ok(error, `allow[${i + 1}] ${show(entry)} is reported`)
    t.equal(error?.entry, JSON.stringify(entry), `allow[${i + 1}] shows the entry`)
    t.match(error?.message, message, `allow[${i + 1}] says why`)
  })
  t.match(errors.find((e) => e.path === 'deny[1]')?.message, /"private" applies only to allow rules/, '"private" on a deny rule')
  t.match(errors.find((e) => e.path === 'deny[2]')?.message, /wildcard/)
  t.notOk(errors.some((e) => e.path === 'allow[0]' || e.path === 'deny[0]'), 'good entries are not reported')
  t.match(compiled.ok ? '' : compiled.error, /^allow\[1\] "\*": a wildcard is only allowed/m, 'the formatted text names path, entry and why')
  t.match(compiled.ok ? '' : compiled.error, /^deny\[1\] \{"host":"x\.com","private":true\}: "private" applies only/m)

  const notArray = compilePolicy({ allow: 'a.com', deny: { host: 'x' } })
  t.same(notArray.errors?.map((e) => [e.path, e.message]), [['allow', '"allow" must be an array'], ['deny', '"deny" must be an array']])
  t.ok(compilePolicy({}).ok, 'missing lists are empty lists')
})

t.test('bypass entries are host patterns without ports; bare IPv6 is fine', async (t) => {
  for (const [entry, pattern] of [['localhost', 'localhost'], ['127.0.0.1', '127.0.0.1'], ['::1', '::1'], ['[::1]', '::1'], ['*.local', '*.local'], ['10.0.0.0/8', '10.0.0.0/8'], ['fd00::/8', 'fd00::/8']] as const) {
    const parsed = parseBypass(entry)
    t.equal(parsed.ok && describePattern(parsed.value), pattern, entry)
  }
  const bad: Array<[unknown, RegExp]> = [
    ['localhost:80', /bypass entries take no ports/],
    ['127.0.0.1:80', /bypass entries take no ports/],
    ['*.local:443', /bypass entries take no ports/],
    ['[::1]:80', /invalid host name/],
    ['*', /wildcard/],
    [5, /a bypass entry must be a string/],
  ]
  for (const [entry, message] of bad) {
    const parsed = parseBypass(entry)
    t.notOk(parsed.ok, `${show(entry)} is refused`)
    t.match(parsed.ok ? '' : parsed.error, message)
  }
})

// ---- matcher -------------------------------------------------------------------------------

t.test('name matching under R1 (*.example.com:443) and R2 (api.allowed.test:80)', async (t) => {
  const p = policy(['*.example.com:443', 'api.allowed.test:80'])
  const rows: Array<[string, string]> = [
    ['www.example.com:443', 'resolve'],
    ['a.b.c.example.com:443', 'resolve'], // any depth
    ['WWW.EXAMPLE.COM:443', 'resolve'], // case 26
    ['www.example.com.:443', 'resolve'], // case 25
    ['api.allowed.test:80', 'resolve'],
    ['API.Allowed.Test.:80', 'resolve'],
    ['example.com:443', 'deny/no-rule'], // case 29: not the apex
    ['www.example.com:80', 'deny/no-rule'], // case 32
    ['api.allowed.test:443', 'deny/no-rule'],
    ['api.allowed.test:8080', 'deny/no-rule'],
    ['sub.api.allowed.test:80', 'deny/no-rule'], // an exact rule is exact
    ['www.example.com.evil.test:443', 'deny/no-rule'], // case 28: prefix / infix
    ['example.com.evil.test:443', 'deny/no-rule'],
    ['api.allowed.test.evil.test:80', 'deny/no-rule'],
    ['notexample.com:443', 'deny/no-rule'], // look-alike
    ['wwwexample.com:443', 'deny/no-rule'],
    ['www-example.com:443', 'deny/no-rule'],
    ['notapi.allowed.test:80', 'deny/no-rule'],
    ['xn--pi-6kc.allowed.test:80', 'deny/no-rule'], // case 34: homograph
    ['example.co:443', 'deny/no-rule'],
    ['localhost:3128', 'deny/no-rule'], // case 40
    ['sub.localhost:80', 'deny/no-rule'],
    ['localtest.me:80', 'deny/no-rule'],
    ['127.0.0.1.nip.io:80', 'deny/no-rule'],
  ]
  for (const [authority, expected] of rows) t.equal(outcome(decideTarget(p, ENFORCE, target(authority))), expected, authority)
})

t.test('port lists, ranges and "*"', async (t) => {
  const p = policy(['plain.test', 'range.test:8000-8100', 'any.test:*', 'list.test:22,80,9000-9001'])
  const rows: Array<[string, string]> = [
    ['plain.test:80', 'resolve'],
    ['plain.test:443', 'resolve'],
    ['plain.test:8080', 'deny/no-rule'],
    ['plain.test:22', 'deny/no-rule'],
    ['range.test:8000', 'resolve'],
    ['range.test:8050', 'resolve'],
    ['range.test:8100', 'resolve'],
    ['range.test:7999', 'deny/no-rule'],
    ['range.test:8101', 'deny/no-rule'],
    ['any.test:1', 'resolve'],
    ['any.test:65535', 'resolve'],
    ['list.test:22', 'resolve'],
    ['list.test:80', 'resolve'],
    ['list.test:9001', 'resolve'],
    ['list.test:443', 'deny/no-rule'],
    ['list.test:9002', 'deny/no-rule'],
  ]
  for (const [authority, expected] of rows) t.equal(outcome(decideTarget(p, ENFORCE, target(authority))), expected, authority)
})

t.test('deny wins over allow; a deny without ports covers every port', async (t) => {
  const p = policy(['*.github.com:*', 'github.com:80,443'], ['gist.github.com', '*.evil.github.com:443'])
  const rows: Array<[string, string]> = [
    ['gist.github.com:443', 'deny/deny-rule'],
    ['gist.github.com:22', 'deny/deny-rule'],
    ['gist.github.com:65535', 'deny/deny-rule'],
    ['x.evil.github.com:443', 'deny/deny-rule'],
    ['x.evil.github.com:80', 'resolve'], // that deny names port 443 only
    ['evil.github.com:443', 'resolve'], // *.evil.github.com excludes its apex
    ['api.github.com:443', 'resolve'],
    ['github.com:443', 'resolve'],
    ['github.com:22', 'deny/no-rule'],
  ]
  for (const [authority, expected] of rows) t.equal(outcome(decideTarget(p, ENFORCE, target(authority))), expected, authority)
  const gist = decideTarget(p, ENFORCE, target('gist.github.com:443'))
  t.equal(gist.rule?.list, 'deny')
  t.equal(gist.rule?.index, 0)
  t.match(gist.verdict === 'deny' ? gist.detail : '', /gist\.github\.com:443 matches deny rule deny\[0\] gist\.github\.com/)
})

t.test('matchName and matchIp report the first matching rule by index', async (t) => {
  const p = policy(['*.example.com:443', 'www.example.com:443', '10.0.0.0/8:443', '10.1.0.0/16:443'])
  t.equal(matchName(p, 'allow', 'www.example.com', 443)?.index, 0)
  t.equal(matchName(p, 'allow', 'other.example.com', 443)?.index, 0)
  t.equal(matchName(p, 'allow', 'www.example.com', 80), undefined)
  t.equal(matchName(p, 'deny', 'www.example.com', 443), undefined)
  t.equal(matchIp(p, 'allow', ip('10.1.2.3'), 443)?.index, 2)
  t.equal(matchIp(p, 'allow', ip('10.1.2.3'), 80), undefined)
  t.equal(matchIp(p, 'allow', ip('11.1.2.3'), 443), undefined)
})

t.test('a name rule never matches an IP-literal target', async (t) => {
  const p = policy(['example.com', 'localhost:*', '*.nip.io:*'])
  const global = decide(p, '93.184.216.34:443')
  t.equal(outcome(global), 'deny/no-rule')
  t.match(global.detail, /a host-name rule never matches an IP address/)
  t.equal(global.suggestion, '"93.184.216.34:443"', 'the suggestion is an IP rule')
  t.equal(outcome(decide(p, '127.0.0.1:80')), 'deny/address-prohibited', 'a loopback literal is refused outright')
  t.equal(outcome(decide(p, '[::1]:80')), 'deny/address-prohibited')
})

t.test('an IP rule never allows a name by itself, but vouches for a special address an allowed name resolved to', async (t) => {
  const p = policy(['8.8.8.8:443', '198.51.100.0/24:443', '10.20.0.0/16:5432', 'db.corp:5432'])
  const dns = decideTarget(p, ENFORCE, target('dns.google:443'))
  t.equal(outcome(dns), 'deny/no-rule', 'decided on the rules, before any DNS query')
  t.equal(outcome(decideTarget(p, ENFORCE, target('db.corp:5432'))), 'resolve')
  const db = decide(p, 'db.corp:5432', ['10.20.1.1'])
  t.equal(outcome(db), 'allow/allow-rule', 'R4 vouches for the private address')
  t.equal(db.rule?.text, 'db.corp:5432', 'the name rule allowed it')
  t.equal(outcome(decide(p, 'db.corp:5432', ['10.21.0.1'])), 'deny/address-prohibited', 'outside R4')
  t.equal(outcome(decide(p, 'db.corp:5432', ['10.20.1.1', '10.30.0.1'])), 'deny/address-prohibited', 'every address must be vouched for')
})

// ---- decision ------------------------------------------------------------------------------

t.test('decideTarget: an unmatched name is denied with a suggestion; an allowed one goes to resolution', async (t) => {
  const p = policy(['api.allowed.test:80'])
  const denied = decideTarget(p, ENFORCE, target('www.example.com:443'))
  t.equal(denied.verdict, 'deny', 'a final decision, not a request to resolve')
  if (denied.verdict !== 'resolve') {
    t.equal(denied.reason, 'no-rule')
    t.equal(denied.suggestion, '"www.example.com:443"', 'the exact line to add')
    t.match(denied.detail, /no allow rule matches www\.example\.com:443/)
    t.same(denied.dial, [], 'nothing to dial')
    t.equal(denied.wouldDeny, false)
  }
  const otherPort = decideTarget(p, ENFORCE, target('api.allowed.test:443'))
  t.match(otherPort.verdict === 'resolve' ? '' : otherPort.detail, /allow\[0\] api\.allowed\.test:80 allows api\.allowed\.test on other ports/)
  const pending = decideTarget(p, ENFORCE, target('api.allowed.test:80'))
  t.equal(pending.verdict, 'resolve')
  t.equal(pending.rule?.text, 'api.allowed.test:80')
  t.equal(pending.wouldDeny, false)
  t.same(pending.verdict === 'resolve' ? pending.waived : 'not pending', undefined)
})

t.test('decideAddresses: every address is checked, any refused one denies (mixed answers)', async (t) => {
  const p = policy(['*.example.com:443'])
  const ok = decide(p, 'www.example.com:443', ['93.184.216.34', '2600:1f00::10'])
  t.equal(outcome(ok), 'allow/allow-rule')
  t.same(ok.dial, [ip('93.184.216.34'), ip('2600:1f00::10')], 'the checked addresses, in order, are what gets dialled')
  t.match(ok.detail, /allowed by allow\[0\] \*\.example\.com:443/)
  const rows: Array<[string[], string, RegExp]> = [
    [['169.254.169.254'], '169.254.169.254', /evil\.example\.com resolves to 169\.254\.169\.254:443, a cloud metadata service address/],
    [['93.184.216.34', '127.0.0.1'], '127.0.0.1', /loopback/], // mixed.example.com
    [['127.0.0.1', '93.184.216.34'], '127.0.0.1', /loopback/],
    [['::ffff:10.0.0.1'], '10.0.0.1', /private network/], // mapped.example.com
    [['64:ff9b::a9fe:a9fe'], '64:ff9b::a9fe:a9fe', /NAT64/], // nat64.example.com
    [['10.1.2.3'], '10.1.2.3', /private network/], // cname.example.com
    [['0.0.0.0'], '0.0.0.0', /this network/],
    [['::'], '::', /unspecified/],
    [['fe80::1'], 'fe80::1', /link-local/],
    [['2002:a9fe:a9fe::1'], '2002:a9fe:a9fe::1', /6to4/],
    [['2001::1'], '2001::1', /Teredo/],
    [['::127.0.0.1'], '::7f00:1', /IPv4-compatible/],
  ]
  for (const [addresses, address, detail] of rows) {
    const d = decide(p, 'evil.example.com:443', addresses)
    t.equal(outcome(d), 'deny/address-prohibited', addresses.join(' '))
    t.same(d.address, ip(address), `the refused address is ${address}`)
    t.same(d.dial, [], 'nothing is dialled')
    t.match(d.detail, detail)
    t.equal(denyErrorType(d.reason), 'destination_ip_prohibited')
  }
  const priv = decide(p, 'db.example.com:443', ['10.1.2.3'])
  t.equal(priv.suggestion, '{"host":"db.example.com","ports":[443],"private":true}', 'a private address suggests "private": true')
  const meta = decide(p, 'evil.example.com:443', ['169.254.169.254'])
  t.equal(meta.suggestion, '"169.254.169.254:443"', 'anything else suggests an IP rule')
  t.equal(decide(p, 'nat64.example.com:443', ['64:ff9b::a9fe:a9fe']).suggestion, '"[64:ff9b::a9fe:a9fe]:443"')
})

t.test('"private": true unlocks RFC 1918, ULA and CGNAT, never loopback, link-local, metadata or self', async (t) => {
  const rule = { host: 'git.corp.example', ports: [443], private: true }
  const p = policy([rule, 'plain.corp.example:443'])
  const allowed = ['10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '100.127.255.255', 'fd00::1', 'fc00::1', '::ffff:192.168.0.1']
  for (const a of allowed) {
    t.equal(outcome(decide(p, 'git.corp.example:443', [a])), 'allow/allow-rule', `${a} is reachable with private`)
    t.equal(outcome(decide(p, 'plain.corp.example:443', [a])), 'deny/address-prohibited', `${a} is not reachable without it`)
  }
  const refused = [
    '127.0.0.1',
    '::1',
    '0.0.0.0',
    '::',
    '169.254.1.1',
    '169.254.169.254',
    '169.254.170.2',
    '100.100.100.200', // metadata inside CGNAT
    'fd00:ec2::254', // metadata inside ULA
    '168.63.129.16',
    '192.0.0.192',
    'fe80::1',
    '224.0.0.1',
    'ff02::1',
    '240.0.0.1',
    '255.255.255.255',
    '::127.0.0.1',
    '64:ff9b::a0a:a0a', // NAT64 of 10.10.10.10: an embedding, not a private address
    '2002:a0a:a0a::1',
  ]
  for (const a of refused) t.equal(outcome(decide(p, 'git.corp.example:443', [a])), 'deny/address-prohibited', `${a} stays refused`)
  t.equal(outcome(decide(p, 'git.corp.example:443', ['10.1.2.3', '127.0.0.1'])), 'deny/address-prohibited', 'mixed answers still deny')
  const self: DecisionContext = { mode: 'enforce', self: [{ ip: ip('10.1.2.3'), port: 443 }], tls: DEFAULT_TLS }
  t.equal(outcome(decide(p, 'git.corp.example:443', ['10.1.2.3'], self)), 'deny/self-connection', "private never unlocks the proxy's own address")
})

t.test("the proxy's own address is refused even when an IP rule covers it (case 49)", async (t) => {
  const ctx: DecisionContext = { mode: 'enforce', self: [{ ip: ip('127.0.0.1'), port: 3128 }, { ip: ip('11.22.33.44'), port: 3128 }], tls: DEFAULT_TLS }
  const p = policy(['127.0.0.1:3128', '127.0.0.0/8:*', '11.22.33.44:*', 'self.example.com:3128', '0.0.0.0/0:*'])
  const rows: Array<[string, string[], string]> = [
    ['127.0.0.1:3128', [], 'deny/self-connection'],
    ['[::ffff:127.0.0.1]:3128', [], 'deny/self-connection'],
    ['11.22.33.44:3128', [], 'deny/self-connection'], // a global self address too
    ['self.example.com:3128', ['127.0.0.1'], 'deny/self-connection'],
    ['self.example.com:3128', ['93.184.216.34', '11.22.33.44'], 'deny/self-connection'],
    ['127.0.0.1:3129', [], 'allow/allow-rule'], // another port is not the listener
    ['127.0.0.2:3128', [], 'allow/allow-rule'],
    ['11.22.33.44:443', [], 'allow/allow-rule'],
  ]
  for (const [authority, addresses, expected] of rows) {
    const d = decide(p, authority, addresses, ctx)
    t.equal(outcome(d), expected, `${authority} ${addresses.join(' ')}`)
  }
  const d = decide(p, '127.0.0.1:3128', [], ctx)
  t.match(d.detail, /127\.0\.0\.1:3128 is proxy-gate's own listener/)
  t.equal(denyErrorType(d.reason), 'destination_ip_prohibited')
  t.match(decide(policy(['*.test:443']), 'v6.test:443', ['fd00::10']).detail, /^v6\.test resolves to \[fd00::10\]:443, a unique local address/, 'IPv6 in brackets in a guard detail')
  t.equal(decide(policy(['[::1]:3128']), '[::1]:3128', [], { ...ctx, self: [{ ip: ip('::1'), port: 3128 }] }).detail, "[::1]:3128 is proxy-gate's own listener", 'and in a self-connection detail')
  t.equal(outcome(decide(p, '127.0.0.1:3128', [], { mode: 'report', self: ctx.self, tls: DEFAULT_TLS })), 'deny/self-connection', 'report mode keeps it')
})

t.test('0.0.0.0/0 and ::/0 do not unlock special addresses; only a rule inside special space does', async (t) => {
  const open = policy(['0.0.0.0/0:*', '[::/0]:*', 'name.test:*'])
  const rows: Array<[Policy, string, string[], string]> = [
    [open, '8.8.8.8:80', [], 'allow/allow-rule'],
    [open, '[2600:1f00::10]:80', [], 'allow/allow-rule'],
    [open, '10.0.0.1:80', [], 'deny/address-prohibited'],
    [open, '127.0.0.1:80', [], 'deny/address-prohibited'],
    [open, '169.254.169.254:80', [], 'deny/address-prohibited'],
    [open, '100.64.0.1:80', [], 'deny/address-prohibited'],
    [open, '[::1]:80', [], 'deny/address-prohibited'],
    [open, '[fd00::1]:80', [], 'deny/address-prohibited'],
    [open, '[64:ff9b::a9fe:a9fe]:80', [], 'deny/address-prohibited'],
    [open, 'name.test:80', ['10.0.0.1'], 'deny/address-prohibited'],
    [open, 'name.test:80', ['8.8.8.8'], 'allow/allow-rule'],
    [policy(['100.0.0.0/8:*']), '100.64.0.1:80', [], 'deny/address-prohibited'], // a range only partly special
    [policy(['100.0.0.0/8:*']), '100.1.2.3:80', [], 'allow/allow-rule'],
    // case 23: ::/0 stays IPv6-only and never becomes "allow all IPv4"
    [policy(['[::/0]:443']), '8.8.8.8:443', [], 'deny/no-rule'],
    [policy(['[::/0]:443']), '169.254.169.254:443', [], 'deny/address-prohibited'],
    [policy(['[::/0]:443']), '[::ffff:8.8.8.8]:443', [], 'deny/no-rule'],
  ]
  for (const [p, authority, addresses, expected] of rows) t.equal(outcome(decide(p, authority, addresses)), expected, `${authority} ${addresses.join(' ')}`)
})

t.test('IP rules inside special space unlock exactly their addresses and ports (R4)', async (t) => {
  const p = policy(['10.20.0.0/16:5432', '127.0.0.1:8080', '[fd00::/8]:443', '169.254.169.254:80', 'svc.test:*'])
  const rows: Array<[string, string[], string]> = [
    ['10.20.1.1:5432', [], 'allow/allow-rule'],
    ['10.20.255.255:5432', [], 'allow/allow-rule'],
    ['10.20.1.1:5433', [], 'deny/address-prohibited'], // port-aware
    ['10.21.0.1:5432', [], 'deny/address-prohibited'],
    ['127.0.0.1:8080', [], 'allow/allow-rule'],
    ['127.0.0.1:8081', [], 'deny/address-prohibited'],
    ['127.0.0.2:8080', [], 'deny/address-prohibited'],
    ['[fd00::5]:443', [], 'allow/allow-rule'],
    ['[fc00::5]:443', [], 'deny/address-prohibited'],
    ['169.254.169.254:80', [], 'allow/allow-rule'], // a rule that names metadata on purpose
    ['169.254.170.2:80', [], 'deny/address-prohibited'],
    ['svc.test:5432', ['10.20.0.7'], 'allow/allow-rule'],
    ['svc.test:8080', ['127.0.0.1'], 'allow/allow-rule'],
    ['svc.test:8080', ['127.0.0.1', '10.20.0.7'], 'deny/address-prohibited'], // 10.20/16 is :5432 only
  ]
  for (const [authority, addresses, expected] of rows) t.equal(outcome(decide(p, authority, addresses)), expected, `${authority} ${addresses.join(' ')}`)
  const allowed = decide(p, '10.20.1.1:5432')
  t.equal(allowed.rule?.text, '10.20.0.0/16:5432')
  t.same(allowed.dial, [ip('10.20.1.1')])
})

t.test('a special-space rule vouches whatever its order among broader rules', async (t) => {
  for (const allow of [['0.0.0.0/0:5432', '10.20.0.0/16:5432', 'db.test:5432'], ['10.20.0.0/16:5432', '0.0.0.0/0:5432', 'db.test:5432']]) {
    const p = policy(allow)
    t.equal(outcome(decide(p, '10.20.1.1:5432')), 'allow/allow-rule', `IP literal, ${allow.join(' ')}`)
    t.equal(outcome(decide(p, 'db.test:5432', ['10.20.1.1'])), 'allow/allow-rule', `resolved name, ${allow.join(' ')}`)
    t.equal(outcome(decide(p, '10.30.1.1:5432')), 'deny/address-prohibited', `outside the range, ${allow.join(' ')}`)
  }
})

t.test('deny IP rules apply to IP literals and to every resolved address', async (t) => {
  const p = policy(['*.example.com:443', '0.0.0.0/0:443', '10.0.0.0/8:*'], ['8.8.8.0/24', '1.1.1.1:53', '10.9.0.0/16'])
  const rows: Array<[string, string[], string]> = [
    ['www.example.com:443', ['8.8.8.8'], 'deny/deny-rule'],
    ['www.example.com:443', ['93.184.216.34', '8.8.8.9'], 'deny/deny-rule'],
    ['www.example.com:443', ['1.1.1.1'], 'allow/allow-rule'], // that deny is for port 53
    ['8.8.8.8:443', [], 'deny/deny-rule'],
    ['8.8.9.8:443', [], 'allow/allow-rule'],
    ['10.9.1.1:80', [], 'deny/deny-rule'], // deny wins over a special-space allow
    ['10.8.1.1:80', [], 'allow/allow-rule'],
  ]
  for (const [authority, addresses, expected] of rows) t.equal(outcome(decide(p, authority, addresses)), expected, `${authority} ${addresses.join(' ')}`)
  const d = decide(p, 'www.example.com:443', ['93.184.216.34', '8.8.8.9'])
  t.equal(d.rule?.text, '8.8.8.0/24')
  t.same(d.address, ip('8.8.8.9'))
  t.match(d.detail, /www\.example\.com resolves to 8\.8\.8\.9, which matches deny rule deny\[0\] 8\.8\.8\.0\/24/)
  t.equal(denyErrorType(d.reason), 'http_request_denied')
})

t.test('report mode turns rule denials into allows with wouldDeny, but keeps guard denials', async (t) => {
  const p = policy(['*.example.com:443', 'gist.github.com:443'], ['gist.github.com', '8.8.8.0/24'])
  const unmatched = decideTarget(p, REPORT, target('unlisted.test:443'))
  t.equal(unmatched.verdict, 'resolve', 'an unmatched name is resolved so the guard can still run')
  t.equal(unmatched.wouldDeny, true)
  t.equal(unmatched.rule, undefined)
  t.equal(unmatched.verdict === 'resolve' ? unmatched.waived?.reason : undefined, 'no-rule')

  const rows: Array<[string, string[], string, boolean]> = [
    ['unlisted.test:443', ['93.184.216.34'], 'allow/no-rule', true],
    ['gist.github.com:443', ['93.184.216.34'], 'allow/deny-rule', true],
    ['www.example.com:443', ['8.8.8.8'], 'allow/deny-rule', true],
    ['www.example.com:443', ['93.184.216.34'], 'allow/allow-rule', false],
    ['93.184.216.34:443', [], 'allow/no-rule', true],
    ['8.8.8.8:443', [], 'allow/deny-rule', true],
    // the guard holds in report mode
    ['unlisted.test:443', ['127.0.0.1'], 'deny/address-prohibited', false],
    ['www.example.com:443', ['169.254.169.254'], 'deny/address-prohibited', false],
    ['www.example.com:443', ['93.184.216.34', '10.0.0.1'], 'deny/address-prohibited', false],
    ['127.0.0.1:443', [], 'deny/address-prohibited', false],
    ['[fd00:ec2::254]:80', [], 'deny/address-prohibited', false],
  ]
  for (const [authority, addresses, expected, wouldDeny] of rows) {
    const d = decide(p, authority, addresses, REPORT)
    t.equal(outcome(d), expected, `${authority} ${addresses.join(' ')}`)
    t.equal(d.wouldDeny, wouldDeny, `${authority} wouldDeny`)
  }
  const waived = decide(p, 'unlisted.test:443', ['93.184.216.34'], REPORT)
  t.match(waived.detail, /^report mode: would deny: no allow rule matches unlisted\.test:443/)
  t.same(waived.dial, [ip('93.184.216.34')], 'report mode dials the checked addresses')
  t.equal(outcome(decide(p, 'unlisted.test:443', ['93.184.216.34'])), 'deny/no-rule', 'the same request in enforce mode')
})

t.test('denyErrorType maps reasons to RFC 9209 error types', async (t) => {
  const rows: Array<[Reason, string]> = [
    ['no-rule', 'http_request_denied'],
    ['deny-rule', 'http_request_denied'],
    ['allow-rule', 'http_request_denied'],
    ['address-prohibited', 'destination_ip_prohibited'],
    ['self-connection', 'destination_ip_prohibited'],
  ]
  for (const [reason, type] of rows) t.equal(denyErrorType(reason), type, reason)
})

t.test('methods and paths: grammar, path normalisation, and the request decision', async (t) => {
  t.match(parseRule({ host: 'x.test', methods: [] }, 'allow', 0), { ok: false, error: /"methods" must be a non-empty list/ })
  t.match(parseRule({ host: 'x.test', methods: ['GET OR'] }, 'allow', 0), { ok: false })
  t.match(parseRule({ host: 'x.test', paths: ['no-slash'] }, 'allow', 0), { ok: false, error: /must start with "\/"/ })
  t.match(parseRule({ host: 'x.test', paths: ['/a/../b'] }, 'allow', 0), { ok: false, error: /dot segments/ })
  t.match(parseRule({ host: 'x.test', methods: ['GET'] }, 'deny', 0), { ok: false, error: /only to allow rules for host names/ })
  t.match(parseRule({ host: '10.0.0.0/8', paths: ['/x'] }, 'allow', 0), { ok: false, error: /only to allow rules for host names/ })
  t.match(parseRule({ host: 'x.test', methods: ['get'] }, 'allow', 0), { ok: true, value: { methods: ['GET'] } }, 'methods are upper-cased')

  const glob = (text: string) => {
    const g = parsePathGlob(text)
    if (!g.ok) throw new Error(g.error)
    return g.value.regex
  }
  t.ok(glob('/repos/*/issues').test('/repos/a/issues'))
  t.notOk(glob('/repos/*/issues').test('/repos/a/b/issues'), '* stays within a segment')
  t.ok(glob('/repos/our-org/**').test('/repos/our-org/a/b/c'), '** crosses segments')
  t.notOk(glob('/repos/our-org/**').test('/repos/our-orgX/a'))
  t.ok(glob('/a.b').test('/a.b'))
  t.notOk(glob('/a.b').test('/aXb'), 'regex characters in globs are literal')
  t.ok(glob('/caf%C3%A9').test('/café'), 'globs are compared decoded')

  t.same(normalisePath('/a/%62/c?x=../..'), { ok: true, value: '/a/b/c' }, 'query ignored, ordinary escapes decoded')
  for (const bad of ['/a/../b', '/a/./b', '/a/%2e%2e/b', '/a%2fb', '/a%5Cb', '/a\\b', '/a/%zz', 'relative', '/a/%00']) {
    t.notOk(normalisePath(bad).ok, `${bad} refused`)
  }

  const rules = policy([
    { host: 'api.github.com', ports: [443], methods: ['GET'], paths: ['/repos/our-org/**'] },
    { host: 'api.github.com', ports: [443], methods: ['POST'], paths: ['/graphql'] },
    'uploads.github.com:443',
  ])
  const gh = target('api.github.com:443')
  t.ok(needsInterception(rules, gh), 'every rule for the host limits requests')
  t.notOk(needsInterception(rules, target('uploads.github.com:443')), 'an open rule needs no interception')
  t.notOk(needsInterception(rules, target('other.test:443')))
  const req = (method: string, path: string, ctx = ENFORCE) => decideRequest(rules, ctx, gh, method, normalisePath(path))
  t.match(req('GET', '/repos/our-org/x/pulls'), { verdict: 'allow', rule: { index: 0 } })
  t.match(req('POST', '/graphql'), { verdict: 'allow', rule: { index: 1 } })
  t.match(req('POST', '/repos/our-org/x'), { verdict: 'deny', reason: 'request-not-allowed', suggestion: '{"host":"api.github.com","ports":[443],"methods":["POST"],"paths":["/repos/our-org/x"]}' })
  t.match(req('GET', '/repos/our-org/../../admin'), { verdict: 'deny', reason: 'bad-path' })
  t.match(req('GET', '/admin', REPORT), { verdict: 'allow', wouldDeny: true, reason: 'request-not-allowed' }, 'report mode waives request limits')
  t.match(decideRequest(rules, ENFORCE, target('uploads.github.com:443'), 'DELETE', normalisePath('/x')), { verdict: 'allow' }, 'no limits, anything goes')

  const host = decide(rules, 'api.github.com:443', ['8.8.8.8'])
  t.equal(host.verdict, 'allow')
  t.same(withRequest(host, req('GET', '/repos/our-org/a')).dial, host.dial, 'the request decision keeps the checked addresses')
  t.match(withRequest(host, req('GET', '/nope')), { verdict: 'deny' })
  t.match(decideForwarded(rules, ENFORCE, host, gh, 'GET', '/nope'), { verdict: 'deny', reason: 'request-not-allowed' }, 'a forwarded request is narrowed by the limits')
  const open = policy(['api.github.com:443'])
  const openHost = decide(open, 'api.github.com:443', ['8.8.8.8'])
  t.equal(decideForwarded(open, ENFORCE, openHost, gh, 'GET', '/a/../b'), openHost, 'no rule limits requests: the host decision as is, the path not even read')

  t.equal(checkInnerHost(ENFORCE, gh, 'api.github.com'), undefined)
  t.equal(checkInnerHost(ENFORCE, gh, 'API.GitHub.com.:443'), undefined)
  t.match(checkInnerHost(ENFORCE, gh, 'api.github.com:8443'), { reason: 'host-mismatch' })
  t.match(checkInnerHost(ENFORCE, gh, 'evil.test'), { reason: 'host-mismatch', detail: /Host "evil\.test"/ })
  t.match(checkInnerHost(ENFORCE, gh, undefined), { reason: 'host-mismatch', detail: /no Host header/ })
})

t.test('ClientHello checks: SNI against the CONNECT host, and IP-literal tunnels by server name', async (t) => {
  const rules = policy(['api.allowed.test:443', '203.0.113.0/24:443'])
  const ctx = ENFORCE
  const named = decide(rules, 'api.allowed.test:443', ['8.8.8.8'])
  const name = target('api.allowed.test:443')
  t.equal(checkHello(ctx, name, named, { kind: 'hello', sni: 'API.allowed.test.' }), named)
  t.match(checkHello(ctx, name, named, { kind: 'hello', sni: 'evil.test' }), { verdict: 'deny', reason: 'sni-mismatch' })
  t.match(checkHello(REPORT, name, named, { kind: 'hello', sni: 'evil.test' }), { verdict: 'allow', wouldDeny: true, reason: 'sni-mismatch' })
  t.match(checkHello(ctx, name, named, { kind: 'hello', sni: undefined }), { reason: 'sni-missing' })
  t.match(checkHello(ctx, name, named, { kind: 'hello', sni: '8.8.8.8' }), { reason: 'sni-missing' }, 'an IP address is not a server name')
  t.equal(checkHello({ ...ctx, tls: { ...ctx.tls, requireSni: false } }, name, named, { kind: 'hello', sni: undefined }), named)
  t.match(checkHello(ctx, name, named, { kind: 'not-tls' }), { reason: 'not-tls' })
  t.equal(checkHello({ ...ctx, tls: { ...ctx.tls, allowNonTls: true } }, name, named, { kind: 'not-tls' }), named)
  t.match(checkHello(ctx, name, named, { kind: 'timeout' }), { reason: 'bad-client-hello' })
  t.match(checkHello(ctx, name, named, { kind: 'malformed', reason: 'x' }), { reason: 'bad-client-hello', detail: /: x$/ })

  const byIpRule = decide(rules, '203.0.113.9:443')
  t.equal(checkHello(ctx, target('203.0.113.9:443'), byIpRule, { kind: 'hello', sni: 'whatever.test' }), byIpRule, 'an IP rule decides IP targets')
  const ipTarget = target('8.8.4.4:443')
  const deferred = decide(rules, '8.8.4.4:443')
  t.equal(deferred.reason, 'no-rule')
  t.match(checkHello(ctx, ipTarget, deferred, { kind: 'hello', sni: 'api.allowed.test' }), { verdict: 'admit-sni', sni: 'api.allowed.test', target: { host: { kind: 'name', name: 'api.allowed.test' }, port: 443 } })
  t.match(checkHello(ctx, ipTarget, deferred, { kind: 'hello', sni: undefined }), { reason: 'sni-missing' })
  t.match(checkHello({ ...ctx, tls: { ...ctx.tls, allowNonTls: true } }, ipTarget, deferred, { kind: 'not-tls' }), { reason: 'not-tls' }, 'a deferred tunnel needs TLS')
  const viaName = decide(rules, 'api.allowed.test:443', ['8.8.4.4', '8.8.8.8'])
  t.match(confirmSniAddress(ctx, ipTarget, viaName, 'api.allowed.test'), { verdict: 'allow', dial: [ip('8.8.4.4')] }, 'dials the CONNECT IP, one of the checked addresses')
  t.match(confirmSniAddress(ctx, target('8.8.1.1:443'), viaName, 'api.allowed.test'), { verdict: 'deny', reason: 'sni-address-mismatch' })
})

t.test('decideName (sandbox DNS): a name is answered when an allow rule matches it on some port and no deny rule covers every port', async (t) => {
  const compiled = compilePolicy({ allow: ['api.example.com:8443', '*.cdn.example:443', 'gist.example.com', 'ftp.example.com:21', '10.0.0.0/8:443'], deny: ['gist.example.com', 'ftp.example.com:21'] })
  if (!compiled.ok) throw new Error(compiled.error)
  const p = compiled.value
  const answer = (name: string, ctx = ENFORCE) => {
    const d = decideName(p, ctx, name)
    return `${d.verdict}/${d.reason}${d.rule ? ` ${d.rule.list}[${d.rule.index}]` : ''}`
  }
  t.equal(answer('api.example.com'), 'allow/allow-rule allow[0]', 'any port will do: the connection is decided on its own port')
  t.equal(answer('a.b.cdn.example'), 'allow/allow-rule allow[1]')
  t.equal(answer('cdn.example'), 'deny/no-rule', 'a wildcard does not match its own suffix')
  t.equal(answer('gist.example.com'), 'deny/deny-rule deny[0]', 'a deny rule on every port: the name does not resolve')
  t.equal(answer('ftp.example.com'), 'allow/allow-rule allow[3]', 'a deny rule on some ports: the name resolves, the connection is decided')
  t.equal(answer('evil.example'), 'deny/no-rule')
  t.equal(decideName(p, ENFORCE, 'evil.example').suggestion, '"evil.example:443"')
  t.equal(answer('evil.example', REPORT), 'allow/no-rule', 'report mode answers and remembers it would not')
  t.ok(decideName(p, REPORT, 'evil.example').wouldDeny)
})

t.test('every decision has the same fields in the same order (one object shape for the routes and logs that read them)', async (t) => {
  const p = policy(['203.0.113.0/24:443', 'ok.test:443'], ['bad.test:*', '203.0.113.9'])
  const decisions: Array<[string, Decision]> = [
    ['IP allowed', decide(p, '203.0.113.1:443')],
    ['IP denied by rule', decide(p, '203.0.113.9:443')],
    ['IP no rule', decide(p, '198.51.100.1:443')],
    ['name allowed', decide(p, 'ok.test:443', ['93.184.216.34'])],
    ['name guarded', decide(p, 'ok.test:443', ['127.0.0.1'])],
    ['name denied', decide(p, 'bad.test:443')],
    ['report mode waiver', decide(p, 'other.test:443', ['93.184.216.34'], REPORT)],
    ['report mode IP waiver', decide(p, '198.51.100.1:443', [], REPORT)],
  ]
  const [first] = decisions
  for (const [what, d] of decisions) t.same(Object.keys(d), Object.keys(first?.[1] ?? {}), what)
  t.same(Object.keys(first?.[1] ?? {}), ['verdict', 'reason', 'rule', 'wouldDeny', 'detail', 'suggestion', 'address', 'dial', 'secret'])
})
