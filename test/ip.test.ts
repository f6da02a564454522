// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/policy/ip.ts: the strict IP parser, RFC 5952 formatting, CIDR parsing and the special-range
// classifier. Pure functions, so every case is a table row (corpus sections A and B).
import { isIPv4, isIPv6 } from 'node:net'
import t from 'tap'
import {
  cidrContains,
  cidrWithin,
  classifyIp,
  formatCidr,
  formatIp,
  parseCidr,
  parseIp,
  specialRangeHolding,
  type Cidr,
  type SpecialKind,
} from '../lib/policy/ip.js'
import { ip } from './helpers/fixtures.js'

function cidr(text: string): Cidr {
  const parsed = parseCidr(text)
  if (typeof parsed === 'string') throw new Error(`test fixture ${text}: ${parsed}`)
  return parsed
}

t.test('parseIp accepts canonical literals and gives family and value', async (t) => {
  const rows: Array<[string, 4 | 6, bigint]> = [
    ['0.0.0.0', 4, 0n],
    ['127.0.0.1', 4, 0x7f000001n],
    ['255.255.255.255', 4, 0xffffffffn],
    ['8.8.8.8', 4, 0x08080808n],
    ['10.0.0.1', 4, 0x0a000001n],
    ['::', 6, 0n],
    ['::1', 6, 1n],
    ['0:0:0:0:0:0:0:1', 6, 1n], // case 13
    ['0000::1', 6, 1n], // case 13
    ['000:0:0000::01', 6, 1n], // CVE-2024-29415 spelling of ::1
    ['FE80::1', 6, (0xfe80n << 112n) | 1n],
    ['2001:db8::', 6, 0x20010db8n << 96n],
    ['::127.0.0.1', 6, 0x7f000001n], // IPv4-compatible stays IPv6 (classified reserved below)
    ['64:ff9b::a9fe:a9fe', 6, (0x64ff9bn << 96n) | 0xa9fea9fen],
    ['64:ff9b::169.254.169.254', 6, (0x64ff9bn << 96n) | 0xa9fea9fen],
  ]
  for (const [text, family, value] of rows) {
    t.same(parseIp(text), { family, value }, text)
  }
})

t.test('parseIp refuses lenient spellings, zones, brackets and garbage', async (t) => {
  const rows = [
    '127.1', // case 4: dropped octets
    '127.0.1',
    '0x7f.0.0.1', // hex octet
    '0x7f000001',
    '0177.0.0.1', // case 2: octal
    '012.0.0.1', // case 5: leading zero (octal 10.0.0.1 to getaddrinfo)
    '1.2.3.04',
    '2130706433', // case 1: decimal dword
    '01200034567',
    '0', // case 7: "0" means 0.0.0.0 to dns.lookup
    '256.0.0.1',
    '1.2.3.4.5',
    '1.2.3.',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '',
    'fe80::1%eth0', // case 20: zone ids
    'fe80::1%25eth0',
    '::1%lo',
    '[::1]', // case 22: brackets are not part of an address
    '1::2::3',
    ':::1',
    '12345::1',
    '::ffff:012.0.0.1', // leading zero inside an embedded IPv4
    '1.2.3.4::', // a dotted quad only at the end
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:1.2.3.4:5',
    ':1:2:3:4:5:6:7',
    'localhost',
  ]
  for (const text of rows) t.equal(parseIp(text), undefined, JSON.stringify(text))
})

t.test('parseIp accepts exactly what Node accepts as an IP, zones aside (differential, seeded)', async (t) => {
  const alphabet = ['0', '1', '9', 'a', 'f', 'F', 'g', ':', '::', '.', '255', '256', '01', 'ffff', '12345', '%', '1.2.3.4']
  let seed = 20261203
  const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n)
  const samples = [...Array.from({ length: 20_000 }, () => Array.from({ length: 1 + random(12) }, () => alphabet[random(alphabet.length)]).join('')), '::', '::1', '1::', '::ffff:1.2.3.4', '1:2:3:4:5:6:7::', '::1:2:3:4:5:6:7', '1:2:3:4:5:6:1.2.3.4']
  let disagreements = 0
  for (const text of samples) {
    const node = (isIPv4(text) || isIPv6(text)) && !text.includes('%')
    if ((parseIp(text) !== undefined) !== node && disagreements++ < 5) t.fail(`${JSON.stringify(text)}: node says ${node}`)
  }
  t.equal(disagreements, 0)
  t.ok(samples.filter((s) => isIPv6(s)).length > 100, 'the samples hold many valid IPv6 texts')
})

t.test('IPv4-mapped IPv6 is canonicalised to the IPv4 address (case 22, DNS fixture mapped.example.com)', async (t) => {
  const rows: Array<[string, string]> = [
    ['::ffff:127.0.0.1', '127.0.0.1'],
    ['::ffff:7f00:1', '127.0.0.1'],
    ['::fFFf:127.0.0.1', '127.0.0.1'],
    ['0:0:0:0:0:ffff:a9fe:a9fe', '169.254.169.254'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::ffff:8.8.8.8', '8.8.8.8'],
  ]
  for (const [text, v4] of rows) {
    const parsed = ip(text)
    t.equal(parsed.family, 4, `${text} is IPv4`)
    t.same(parsed, ip(v4), `${text} equals ${v4}`)
    t.equal(formatIp(parsed), v4)
  }
  t.equal(classifyIp(ip('::ffff:127.0.0.1'))?.kind, 'loopback', 'the mapped form classifies as its IPv4 address')
  t.equal(classifyIp(ip('::ffff:169.254.169.254'))?.kind, 'metadata')
})

t.test('formatIp writes IPv4 dotted and IPv6 in RFC 5952 form', async (t) => {
  const rows: Array<[string, string]> = [
    ['1.2.3.4', '1.2.3.4'],
    ['0.0.0.0', '0.0.0.0'],
    ['::', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'], // lower case, no leading zeros
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // equal runs: the first is compressed
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'], // the longest run is compressed
    ['2001:db8::0:1', '2001:db8::1'],
    ['fe80:0:0:0:0:0:0:1', 'fe80::1'],
    ['fd00:ec2:0:0:0:0:0:254', 'fd00:ec2::254'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ]
  for (const [text, formatted] of rows) t.equal(formatIp(ip(text)), formatted, text)
  for (const [, formatted] of rows) t.equal(formatIp(ip(formatted)), formatted, `${formatted} round-trips`)
})

t.test('parseCidr parses ranges and single addresses', async (t) => {
  const rows: Array<[string, 4 | 6, string, number]> = [
    ['10.0.0.0/8', 4, '10.0.0.0', 8],
    ['10.20.0.0/16', 4, '10.20.0.0', 16],
    ['0.0.0.0/0', 4, '0.0.0.0', 0],
    ['203.0.113.10', 4, '203.0.113.10', 32],
    ['203.0.113.10/32', 4, '203.0.113.10', 32],
    ['2001:db8::/32', 6, '2001:db8::', 32],
    ['::/0', 6, '::', 0],
    ['::1', 6, '::1', 128],
    ['fe80::/10', 6, 'fe80::', 10],
  ]
  for (const [text, family, base, prefix] of rows) {
    t.same(parseCidr(text), { family, base: ip(base).value, prefix }, text)
  }
  t.equal(formatCidr(cidr('10.20.0.0/16')), '10.20.0.0/16')
  t.equal(formatCidr(cidr('203.0.113.10/32')), '203.0.113.10', 'a single address formats without /32')
  t.equal(formatCidr(cidr('2001:0db8::/32')), '2001:db8::/32')
})

t.test('parseCidr errors say what is wrong', async (t) => {
  const rows: Array<[string, RegExp]> = [
    ['10.0.0.1/8', /host bits are set: did you mean 10\.0\.0\.0\/8\?/],
    ['2001:db8::1/32', /host bits are set: did you mean 2001:db8::\/32\?/],
    ['10.0.0.0/33', /prefix length "\/33" must be a number from 0 to 32/],
    ['2001:db8::/129', /from 0 to 128/],
    ['10.0.0.0/', /prefix length/],
    ['10.0.0.0/-1', /prefix length/],
    ['10.0.0.0/08', /prefix length/],
    ['10.0.0.0/+8', /prefix length/],
    ['10.0.0.0/8/8', /prefix length/],
    ['10.0.0.0/ 8', /prefix length/],
    // case 23: a mapped range must not collapse into "all IPv4" (smokescreen PR #289)
    ['::ffff:0:0/96', /IPv4-mapped IPv6 ranges are not accepted/],
    ['::ffff:0.0.0.0/96', /IPv4-mapped/],
    ['::ffff:10.0.0.0/104', /IPv4-mapped/],
    ['::ffff:1.2.3.4', /IPv4-mapped/],
    ['127.1/32', /is not an IP address/],
    ['012.0.0.0/8', /is not an IP address/],
    ['fe80::%eth0/10', /is not an IP address/],
    ['example.com/24', /is not an IP address/],
    ['', /is not an IP address/],
  ]
  for (const [text, message] of rows) {
    const parsed = parseCidr(text)
    t.type(parsed, 'string', `${JSON.stringify(text)} is refused`)
    t.match(parsed, message, text)
  }
})

t.test('cidrContains and cidrWithin never cross families (case 23: ::/0 is IPv6 only)', async (t) => {
  t.ok(cidrContains(cidr('10.20.0.0/16'), ip('10.20.255.255')))
  t.notOk(cidrContains(cidr('10.20.0.0/16'), ip('10.21.0.0')))
  t.notOk(cidrContains(cidr('10.20.0.0/16'), ip('10.19.255.255')))
  t.ok(cidrContains(cidr('0.0.0.0/0'), ip('255.255.255.255')))
  t.notOk(cidrContains(cidr('::/0'), ip('169.254.169.254')), '::/0 does not hold IPv4')
  t.notOk(cidrContains(cidr('::/0'), ip('::ffff:169.254.169.254')), 'nor an IPv4-mapped address')
  t.notOk(cidrContains(cidr('0.0.0.0/0'), ip('::1')))
  t.ok(cidrWithin(cidr('10.20.0.0/16'), cidr('10.0.0.0/8')))
  t.ok(cidrWithin(cidr('10.0.0.0/8'), cidr('10.0.0.0/8')))
  t.notOk(cidrWithin(cidr('10.0.0.0/8'), cidr('10.20.0.0/16')))
  t.notOk(cidrWithin(cidr('0.0.0.0/0'), cidr('10.0.0.0/8')))
  t.notOk(cidrWithin(cidr('::/0'), cidr('0.0.0.0/0')))
})

t.test('classifyIp puts every special-purpose address in its range, boundaries included', async (t) => {
  const rows: Array<[string, SpecialKind]> = [
    // IPv4 (section A)
    ['0.0.0.0', 'unspecified'], // case 7
    ['0.255.255.255', 'unspecified'],
    ['127.0.0.1', 'loopback'],
    ['127.127.127.127', 'loopback'], // case 8
    ['127.255.255.255', 'loopback'],
    ['10.0.0.0', 'private'],
    ['10.255.255.255', 'private'],
    ['172.16.0.0', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.0.1', 'private'],
    ['100.64.0.0', 'cgnat'], // case 10
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['100.100.100.200', 'metadata'], // Alibaba, inside CGNAT: the more specific range wins
    ['169.254.0.1', 'link-local'],
    ['169.254.169.254', 'metadata'],
    ['169.254.170.2', 'metadata'], // ECS
    ['168.63.129.16', 'metadata'], // case 11: Azure WireServer, in public space
    ['192.0.0.192', 'metadata'], // Oracle
    ['192.0.0.1', 'reserved'],
    ['192.0.2.1', 'documentation'],
    ['198.51.100.20', 'documentation'],
    ['203.0.113.10', 'documentation'],
    ['192.88.99.1', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['198.19.255.255', 'reserved'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.254', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    // IPv6 (section B)
    ['::', 'unspecified'], // case 14
    ['::1', 'loopback'], // case 13
    ['::127.0.0.1', 'reserved'], // case 16: IPv4-compatible
    ['::a9fe:a9fe', 'metadata'], // IPv4-compatible form of 169.254.169.254
    ['::ffff:0:1.2.3.4', 'reserved'], // SIIT IPv4-translated
    ['64:ff9b::a9fe:a9fe', 'metadata'], // case 17: NAT64 form of 169.254.169.254
    ['64:ff9b::7f00:1', 'ipv6-embedding'],
    ['64:ff9b::808:808', 'ipv6-embedding'], // the whole /96, public IPv4 inside too
    ['64:ff9b:1::1', 'ipv6-embedding'], // local-use NAT64
    ['64:ff9b:1::a9fe:a9fe', 'metadata'], // local-use NAT64 form of 169.254.169.254
    ['2002::', 'ipv6-embedding'], // 6to4
    ['2002:7f00:1::', 'ipv6-embedding'],
    ['2001::', 'ipv6-embedding'], // Teredo
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'ipv6-embedding'],
    ['2001:1::1', 'reserved'], // IETF protocol assignments outside Teredo
    ['2001:db8::1', 'documentation'],
    ['100::1', 'reserved'],
    ['fc00::1', 'ula'], // case 19
    ['fd12:3456::1', 'ula'],
    ['fd00:ec2::254', 'metadata'], // AWS IPv6 IMDS, inside ULA
    ['fe80::1', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fec0::1', 'reserved'],
    ['ff02::1', 'multicast'],
    ['ff02::2', 'multicast'],
  ]
  for (const [text, kind] of rows) t.equal(classifyIp(ip(text))?.kind, kind, `${text} is ${kind}`)
  t.match(classifyIp(ip('169.254.169.254'))?.label, /metadata/, 'the label says why')
  t.match(classifyIp(ip('64:ff9b::a9fe:a9fe'))?.label, /NAT64/)
})

t.test('global unicast addresses, including the neighbours of special ranges, are unclassified', async (t) => {
  const rows = [
    '8.8.8.8',
    '11.22.33.44',
    '1.1.1.1',
    '9.255.255.255',
    '11.0.0.0',
    '100.63.255.254', // case 10 boundaries
    '100.63.255.255',
    '100.128.0.0',
    '100.128.0.1',
    '126.255.255.255',
    '128.0.0.0',
    '169.253.255.255',
    '169.255.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '192.167.255.255',
    '192.169.0.0',
    '198.17.255.255',
    '198.20.0.0',
    '223.255.255.255',
    '2600:1f00::10',
    '2001:4860:4860::8888',
    '2001:200::1', // just past 2001::/23
    '2003::1', // just past 6to4
    'fbff:ffff::1',
  ]
  for (const text of rows) t.equal(classifyIp(ip(text)), undefined, `${text} is global`)
})

t.test('specialRangeHolding: only a range inside special space names it', async (t) => {
  t.equal(specialRangeHolding(cidr('10.20.0.0/16'))?.kind, 'private')
  t.equal(specialRangeHolding(cidr('127.0.0.1'))?.kind, 'loopback')
  t.equal(specialRangeHolding(cidr('169.254.169.254'))?.kind, 'metadata')
  t.equal(specialRangeHolding(cidr('fd00::/8'))?.kind, 'ula')
  t.equal(specialRangeHolding(cidr('0.0.0.0/0')), undefined, '0.0.0.0/0 holds special space but is not inside it')
  t.equal(specialRangeHolding(cidr('::/0')), undefined)
  t.equal(specialRangeHolding(cidr('8.0.0.0/6')), undefined, 'a range that holds 10/8 and public space is not special')
  t.equal(specialRangeHolding(cidr('8.8.8.0/24')), undefined)
})
