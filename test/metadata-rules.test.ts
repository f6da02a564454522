// Cloud metadata addresses (the guard's table in lib/policy/ip.ts) are reached only through a rule
// that names that exact address: a range that holds one (169.254.0.0/16, 100.64.0.0/10, fd00::/8)
// still allows the rest of its range, never the metadata address, for IP literals and resolved
// names alike ("private": true included). validate, the start and every reload warn about such a range.
import { renameSync, writeFileSync } from 'node:fs'
import t from 'tap'
import { decideAddresses, decideTarget, type Decision, type DecisionContext } from '../lib/policy/decide.js'
import { formatIp, formatIpPort, metadataWithin, parseCidr, type Cidr, type Ip } from '../lib/policy/ip.js'
import type { Policy } from '../lib/policy/rules.js'
import { configWarnings, DEFAULT_TLS, parseConfig } from '../lib/rules/config.js'
import { runCli, startCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { rulesFile } from './helpers/files.js'
import { ip, policy, target } from './helpers/fixtures.js'
import { connectHead } from './helpers/http.js'
import { NETNS_SKIP, rawExchange, startCanary, statusOf } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

const ENFORCE: DecisionContext = { mode: 'enforce', self: [], tls: DEFAULT_TLS }

function cidr(text: string): Cidr {
  const parsed = parseCidr(text)
  if (typeof parsed === 'string') throw new Error(parsed)
  return parsed
}

/** Every metadata address in the guard's table, IPv4 and IPv6. */
const METADATA: Ip[] = [...metadataWithin(cidr('0.0.0.0/0')), ...metadataWithin(cidr('::/0'))].map((r) => ({ family: r.cidr.family, value: r.cidr.base }))

function outcome(p: Policy, authority: string, addresses: string[] = []): string {
  const to = target(authority)
  const first = decideTarget(p, ENFORCE, to)
  const d: Decision = first.verdict === 'resolve' ? decideAddresses(p, ENFORCE, to, first, addresses.map(ip)) : first
  return `${d.verdict}/${d.reason}`
}

/** The allow entry for the range of `prefix` bits that holds `address`, on port 80. */
function rangeRule(address: Ip, prefix: number): string {
  const bits = address.family === 4 ? 32 : 128
  const mask = ((1n << BigInt(bits)) - 1n) ^ ((1n << BigInt(bits - prefix)) - 1n)
  const text = `${formatIp({ family: address.family, value: address.value & mask })}/${prefix}`
  return address.family === 6 ? `[${text}]:80` : `${text}:80`
}

t.test('the table has the metadata addresses the guard knows', async (t) => {
  const known = ['169.254.169.254', '169.254.170.2', '100.100.100.200', '168.63.129.16', '192.0.0.192', 'fd00:ec2::254']
  for (const address of known) t.ok(METADATA.some((m) => formatIp(m) === address), address)
})

t.test('no range broader than one address allows a metadata address, at any prefix length', async (t) => {
  for (const address of METADATA) {
    const bits = address.family === 4 ? 32 : 128
    const literal = formatIpPort(address, 80)
    const wrong: string[] = []
    for (let prefix = 0; prefix < bits; prefix++) {
      const rule = rangeRule(address, prefix)
      if (outcome(policy([rule]), literal) !== 'deny/address-prohibited') wrong.push(rule)
      if (outcome(policy([rule, 'meta.test:80']), 'meta.test:80', [formatIp(address)]) !== 'deny/address-prohibited') wrong.push(`${rule} (by name)`)
    }
    t.same(wrong, [], `${formatIp(address)}: refused under every broader range`)
    t.equal(outcome(policy([rangeRule(address, bits)]), literal), 'allow/allow-rule', `${formatIp(address)}: a rule naming it allows it`)
  }
})

t.test('a special-space range still allows the rest of its range, not the metadata address inside it', async (t) => {
  const rows: Array<[string, string, string]> = [
    ['100.64.0.0/10:80', '100.64.0.1', '100.100.100.200'],
    ['169.254.0.0/16:80', '169.254.1.1', '169.254.169.254'],
    ['169.254.0.0/16:80', '169.254.169.253', '169.254.170.2'],
    ['192.0.0.0/24:80', '192.0.0.1', '192.0.0.192'],
    ['[fd00::/8]:80', 'fd00::1', 'fd00:ec2::254'],
  ]
  for (const [rule, other, metadata] of rows) {
    const p = policy([rule, 'svc.test:80'])
    t.equal(outcome(p, formatIpPort(ip(other), 80)), 'allow/allow-rule', `${rule} allows ${other}`)
    t.equal(outcome(p, 'svc.test:80', [other]), 'allow/allow-rule', `${rule} vouches for svc.test at ${other}`)
    t.equal(outcome(p, formatIpPort(ip(metadata), 80)), 'deny/address-prohibited', `${rule} does not allow ${metadata}`)
    t.equal(outcome(p, 'svc.test:80', [metadata]), 'deny/address-prohibited', `nor svc.test resolving to ${metadata}`)
    const exact = policy([rule, 'svc.test:80', formatIpPort(ip(metadata), 80)])
    t.equal(outcome(exact, formatIpPort(ip(metadata), 80)), 'allow/allow-rule', `a rule naming ${metadata} allows it`)
    t.equal(outcome(exact, 'svc.test:80', [metadata]), 'allow/allow-rule', `and a name resolving to it`)
    t.equal(outcome(exact, formatIpPort(ip(metadata), 81)), 'deny/address-prohibited', 'on its ports only')
  }
  const detail = decideTarget(policy(['169.254.0.0/16:80']), ENFORCE, target('169.254.169.254:80'))
  t.match(detail.verdict === 'resolve' ? '' : detail.detail, /169\.254\.169\.254:80, a cloud metadata service address, which is refused unless a rule names that exact address/)
  t.equal(detail.verdict === 'resolve' ? '' : detail.suggestion, '"169.254.169.254:80"', 'the suggestion names the exact address')
})

t.test('"private": true never reaches a metadata address, with or without a range that holds it', async (t) => {
  const priv = { host: 'corp.test', ports: [80], private: true }
  for (const extra of [[], ['100.64.0.0/10:80', '[fd00::/8]:80', '169.254.0.0/16:80']]) {
    const p = policy([priv, ...extra])
    for (const address of METADATA) t.equal(outcome(p, 'corp.test:80', [formatIp(address)]), 'deny/address-prohibited', `${formatIp(address)} with ${extra.join(' ') || 'no range'}`)
    t.equal(outcome(p, 'corp.test:80', ['100.64.0.1']), 'allow/allow-rule', 'CGNAT next to it is private space')
  }
  const named = policy([priv, '100.100.100.200:80'])
  t.equal(outcome(named, 'corp.test:80', ['100.100.100.200']), 'allow/allow-rule', 'an exact IP rule is what unlocks it')
})

t.test('a range that holds a metadata address is warned about, naming the rule and the address', async (t) => {
  const parsed = parseConfig({
    allow: ['100.64.0.0/10:80', '169.254.169.254:80', '8.8.8.0/24', { host: '169.254.0.0/16', ports: [80] }, '0.0.0.0/0:443', 'svc.test'],
    policies: { team: { allow: ['[fd00::/8]:443'] } },
  })
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors))
  const warnings = configWarnings(parsed.value)
  t.same(
    warnings.map((w) => `${w.path} ${w.entry}`),
    ['allow[0] 100.64.0.0/10:80', 'allow[3] {"host":"169.254.0.0/16","ports":[80]}', 'allow[4] 0.0.0.0/0:443', 'policies.team.allow[0] [fd00::/8]:443'],
  )
  t.match(warnings[0]?.message, /holds the cloud metadata address 100\.100\.100\.200 \(cloud metadata service \(Alibaba\)\), which it does not allow: only a rule naming that exact address does/)
  t.match(warnings[1]?.message, /169\.254\.169\.254 .*169\.254\.170\.2/)
  t.match(warnings[3]?.message, /fd00:ec2::254/)
  const quiet = parseConfig({ allow: ['169.254.169.254:80', '10.0.0.0/8:*', '8.8.8.0/24'] })
  t.same(quiet.ok ? configWarnings(quiet.value) : 'invalid', [], 'an exact rule and ranges without metadata: no warning')
})

// An IPv6 address that embeds a metadata address is the metadata address to whatever translates it:
// a NAT64 gateway, a 6to4 relay, a Teredo server or client, a host speaking IPv4-compatible/translated.
const EMBEDDED: Array<[string, string, string]> = [
  ['NAT64', '64:ff9b::a9fe:a9fe', '[64:ff9b::/96]:80'],
  ['NAT64', '64:ff9b::a83f:8110', '[64:ff9b::a800:0/101]:80'], // 168.63.129.16
  ['local-use NAT64 /96', '64:ff9b:1::a9fe:a9fe', '[64:ff9b:1::/48]:80'],
  ['local-use NAT64 /64', '64:ff9b:1:0:a9:fea9:fe00:0', '[64:ff9b:1::/64]:80'],
  ['local-use NAT64 /56', '64:ff9b:1:a9:fe:a9fe::', '[64:ff9b:1::/56]:80'],
  ['local-use NAT64 /48', '64:ff9b:1:a9fe:a9:fe00::', '[64:ff9b:1::/48]:80'],
  ['6to4', '2002:a9fe:a9fe::1', '[2002::/16]:80'],
  ['Teredo server', '2001:0:a9fe:a9fe::1', '[2001::/32]:80'],
  ['Teredo client (XOR 0xffffffff)', '2001:0:4136:e378:8000:63bf:5601:5601', '[2001::/32]:80'],
  ['IPv4-compatible', '::a9fe:a9fe', '[::/96]:80'],
  ['IPv4-translated', '::ffff:0:a9fe:a9fe', '[::ffff:0:0:0/96]:80'],
]

t.test('an embedded form of a metadata address is allowed only by a rule naming that exact IPv6 address', async (t) => {
  for (const [form, address, range] of EMBEDDED) {
    const literal = formatIpPort(ip(address), 80)
    t.equal(outcome(policy([range]), literal), 'deny/address-prohibited', `${form}: ${range} does not allow ${address}`)
    t.equal(outcome(policy([range, 'svc.test:80']), 'svc.test:80', [address]), 'deny/address-prohibited', `${form}: nor a name resolving to it`)
    t.equal(outcome(policy([{ host: 'svc.test', ports: [80], private: true }]), 'svc.test:80', [address]), 'deny/address-prohibited', `${form}: nor "private": true`)
    t.equal(outcome(policy([range, literal]), literal), 'allow/allow-rule', `${form}: a rule naming ${address} allows it`)
  }
  const detail = decideTarget(policy(['[64:ff9b::/96]:80']), ENFORCE, target('[64:ff9b::a9fe:a9fe]:80'))
  t.match(detail.verdict === 'resolve' ? '' : detail.detail, /cloud metadata service in NAT64 form \(169\.254\.169\.254\) address, which is refused unless a rule names that exact address/)
  t.equal(outcome(policy(['[64:ff9b::/96]:80']), '[64:ff9b::808:808]:80'), 'allow/allow-rule', 'the NAT64 range still allows the rest of its range')
  t.equal(outcome(policy(['[::/8]:80', '169.254.0.0/16:80']), '[::ffff:169.254.169.254]:80'), 'deny/address-prohibited', 'the IPv4-mapped form is the IPv4 address')
})

t.test('an embedded form of another special address is refused as before: it needs an IP rule', async (t) => {
  for (const address of ['64:ff9b::7f00:1', '64:ff9b::a00:1', '64:ff9b:1::a00:1', '2002:a00:1::1', '2001:0:7f00:1::1', '2001::80ff:fffe', '::7f00:1']) {
    t.equal(outcome(policy([]), formatIpPort(ip(address), 80)), 'deny/address-prohibited', `${address} without a rule`)
    t.equal(outcome(policy([{ host: 'svc.test', ports: [80], private: true }]), 'svc.test:80', [address]), 'deny/address-prohibited', `${address} with "private": true`)
  }
})

t.test('a range that holds an embedded form of a metadata address is warned about, each address once', async (t) => {
  const rows: Array<[string, string]> = [
    ['[64:ff9b::/96]:80', '64:ff9b::a9fe:a9fe (cloud metadata service in NAT64 form (169.254.169.254))'],
    ['[64:ff9b:1::/48]:80', '64:ff9b:1:a9fe:a9:fe00:: (cloud metadata service in local-use NAT64 form (169.254.169.254))'],
    ['[2002::/16]:80', '2002:a9fe:a9fe:: (cloud metadata service in 6to4 form (169.254.169.254))'],
    ['[2001::/32]:80', '2001:0:a9fe:a9fe:: (cloud metadata service in Teredo server form (169.254.169.254))'],
    ['[2001:0:4136:e378::/64]:80', '2001:0:4136:e378::5601:5601 (cloud metadata service in Teredo client form (169.254.169.254))'],
    ['[::/96]:80', '::a9fe:a9fe (cloud metadata service in IPv4-compatible form (169.254.169.254))'],
    ['[::ffff:0:0:0/96]:80', '::ffff:0:a9fe:a9fe (cloud metadata service in IPv4-translated form (169.254.169.254))'],
  ]
  for (const [rule, named] of rows) {
    const parsed = parseConfig({ allow: ['svc.test', rule] })
    const warnings = parsed.ok ? configWarnings(parsed.value) : []
    t.same(warnings.map((w) => `${w.path} ${w.entry}`), [`allow[1] ${rule}`], `${rule}: one warning, naming the rule`)
    t.ok(warnings[0]?.message.includes(named), `${rule} names ${named}`)
    t.equal(warnings[0]?.message.match(/ form \(/g)?.length, 5, `${rule}: each IPv4 metadata address once`)
  }
  const quiet = parseConfig({ allow: ['[64:ff9b::a9fe:a9fe]:80', '[64:ff9b::808:0/112]:443'] })
  t.same(quiet.ok ? configWarnings(quiet.value) : 'invalid', [], 'the exact NAT64 address, and a NAT64 range without metadata: no warning')
})

t.test('validate prints the warning and still passes', async (t) => {
  const res = await runCli(['validate', '--rules', rulesFile({ allow: ['example.com', '169.254.0.0/16:80'] })])
  t.equal(res.code, 0)
  t.match(res.stdout, /: ok \(2 allow/)
  t.match(res.stdout, /^warning: allow\[1\] 169\.254\.0\.0\/16:80: this range holds the cloud metadata addresses 169\.254\.169\.254 .*, which it does not allow/m)
  const clean = await runCli(['validate', '--rules', rulesFile({ allow: ['169.254.169.254:80'] })])
  t.equal(clean.code, 0)
  t.notMatch(clean.stdout, /warning/)
})

/** The promise, or a failure naming what never came (instead of the file hanging until tap's timeout). */
function within<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`never came: ${what}`)), ms)))
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

t.test('start and every reload log the warning', async (t) => {
  const file = rulesFile({ allow: ['100.64.0.0/10:80'] })
  const cli = await startCli(['start', '--rules', file, '--listen', '127.0.0.1:0', '--log-format', 'json', '--admin-listen', 'off'])
  t.teardown(() => cli.stop())
  const warned = (entry: string) => (l: Record<string, unknown>) => l.level === 'warn' && Array.isArray(l.warnings) && l.warnings.some((w) => String(w).startsWith(`allow[0] ${entry}:`))
  const atStart = await within(cli.waitFor(warned('100.64.0.0/10:80')), 'the warning at start')
  t.match(atStart, { message: /rules with warnings/, rules: file })
  t.match(String((atStart.warnings as unknown[])[0]), /100\.100\.100\.200/)
  writeFileSync(`${file}.tmp`, JSON.stringify({ allow: ['[fd00::/8]:80'] }))
  renameSync(`${file}.tmp`, file)
  cli.child.kill('SIGHUP')
  const atReload = await within(cli.waitFor(warned('[fd00::/8]:80')), 'the warning after a reload')
  t.match(String((atReload.warnings as unknown[])[0]), /fd00:ec2::254/)
})

t.test('through the proxy: fd00::/8 reaches fd00::10, never fd00:ec2::254, by literal or by name', { skip: NETNS_SKIP }, async (t) => {
  const other = await startCanary('fd00::10')
  const metadata = await startCanary('fd00:ec2::254', other.port)
  const dns = await startDns({ 'svc.test': { AAAA: ['fd00::10'] }, 'meta.test': { AAAA: ['fd00:ec2::254'] } })
  const proxy = await startProxy({ allow: [`[fd00::/8]:${other.port}`, `svc.test:${other.port}`, { host: 'meta.test', ports: [other.port], private: true }], dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([other.close(), metadata.close(), dns.close()])
  })
  const connect = async (authority: string) => statusOf((await rawExchange(proxy.port, connectHead(authority), { until: (text) => text.includes('\r\n\r\n') })).text)
  t.equal(await connect(`[fd00::10]:${other.port}`), 200)
  t.equal(await connect(`svc.test:${other.port}`), 200)
  t.equal(await connect(`[fd00:ec2::254]:${other.port}`), 403)
  t.equal(await connect(`meta.test:${other.port}`), 403)
  t.equal(metadata.connections(), 0, 'nothing reached the metadata address')
  t.ok(other.connections() >= 2, 'the rest of the range was reached')
})
