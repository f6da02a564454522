// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/policy/target.ts: the one grammar for CONNECT authorities, absolute-form URLs and host names
// (corpus sections A-E). A lenient parse here is a check/dial mismatch later, so refusals are
// asserted as firmly as acceptances.
import t from 'tap'
import {
  formatHost,
  formatTarget,
  normaliseName,
  normaliseRuleName,
  parseAbsoluteUrl,
  parseAuthority,
  parseHost,
  parsePort,
  type Host,
  type Result,
  type Target,
} from '../lib/policy/target.js'
import { ip } from './helpers/fixtures.js'

function nameHost(name: string): Host {
  return { kind: 'name', name }
}

function ipHost(text: string): Host {
  return { kind: 'ip', ip: ip(text) }
}

function errorOf<T>(result: Result<T>): string {
  return result.ok ? `(accepted: ${JSON.stringify(result.value, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))})` : result.error
}

t.test('normaliseName lower-cases and strips exactly one trailing dot (cases 25, 26)', async (t) => {
  const rows: Array<[string, string]> = [
    ['www.example.com', 'www.example.com'],
    ['WWW.EXAMPLE.COM', 'www.example.com'],
    ['API.Allowed.Test', 'api.allowed.test'],
    ['a.b.', 'a.b'],
    ['www.example.com.', 'www.example.com'],
    ['LOCALHOST.', 'localhost'], // case 40: still a name, left to the rules and the guard
    ['localhost', 'localhost'],
    ['a_b.example.com', 'a_b.example.com'], // case 38: underscore accepted, as smokescreen does
    ['xn--pi-6kc.allowed.test', 'xn--pi-6kc.allowed.test'], // case 34: punycode is an ordinary name
    ['123.example', '123.example'], // digits are fine except in the last label
    ['a-b.c-d.e', 'a-b.c-d.e'],
    [`${'a'.repeat(63)}.com`, `${'a'.repeat(63)}.com`],
  ]
  for (const [text, name] of rows) t.same(normaliseName(text), { ok: true, value: name }, text)
})

t.test('normaliseName refuses empty labels, bad characters and over-long names (cases 25, 31, 37, 38)', async (t) => {
  const long = `${`${'a'.repeat(62)}.`.repeat(4)}com` // 255 characters of valid labels
  const rows: Array<[string, RegExp]> = [
    ['a.b..', /empty label/],
    ['www.example.com..', /empty label/],
    ['.a.b', /empty label/],
    ['.example.com', /empty label/],
    ['a..b', /empty label/],
    ['', /empty host name/],
    ['.', /empty host name/],
    ['-x.example.com', /label "-x"/],
    ['x-.example.com', /label "x-"/],
    [`${'a'.repeat(64)}.com`, /label "a{64}" must be 1-63/],
    [long, /longer than 253/],
    ['*.example.com', /label "\*"/], // case 31
    ['x*.example.com', /label "x\*"/],
    ['evil.test%00.example.com', /label "test%00"/], // case 37: never percent-decoded
    ['evil.test\0.example.com', /invalid host name/], // case 58
    ['a b.com', /invalid host name/],
    ['a"b.com', /invalid host name/],
    ['a/b.com', /invalid host name/],
    ['a@b.com', /invalid host name/],
    ['api\u3002allowed\u3002test', /invalid host name/], // case 58: ideographic full stop
    ['ex\u00adample.com', /invalid host name/], // case 35: soft hyphen in a request name
    ['éxample.com', /invalid host name/], // requests carry ASCII only
  ]
  for (const [text, message] of rows) {
    const result = normaliseName(text)
    t.notOk(result.ok, `${JSON.stringify(text)} is refused`)
    t.match(errorOf(result), message)
  }
  t.equal(long.length, 255)
})

t.test('numeric IPv4 spellings are refused as names, never passed on to a resolver (cases 1, 2, 4, 5, 7)', async (t) => {
  const rows = ['2130706433', '127.1', '127.0.1', '0x7f.0.0.1', '0x7f000001', '0177.0.0.1', '012.0.0.1', '0', '1.2.3', 'a.123', 'a.0x1', 'a.0x', '0x']
  for (const text of rows) {
    const result = normaliseName(text)
    t.notOk(result.ok, `${text} is not a name`)
    t.match(errorOf(result), /not a canonical IPv4 address/, text)
    t.notOk(parseHost(text).ok, `parseHost refuses ${text} too`)
  }
  t.same(parseHost('127.0.0.1'), { ok: true, value: ipHost('127.0.0.1') }, 'the canonical form is an IP')
})

t.test('normaliseRuleName converts IDN to punycode and refuses what IDNA would silently change (cases 34, 35)', async (t) => {
  const good: Array<[string, string]> = [
    ['éxämple.com', 'xn--xmple-gra7a.com'],
    ['Bücher.de', 'xn--bcher-kva.de'],
    ['bücher.de.', 'xn--bcher-kva.de'], // one trailing dot, as for ASCII names
    ['xn--bcher-kva.de', 'xn--bcher-kva.de'],
    ['Example.COM.', 'example.com'],
  ]
  for (const [text, name] of good) t.same(normaliseRuleName(text), { ok: true, value: name }, text)
  const bad: Array<[string, RegExp]> = [
    ['ex\u00adample.com', /IDNA would change it/], // soft hyphen: domainToASCII gives example.com
    ['ex\u200bample.com', /IDNA would change it/], // zero-width space
    ['ＥＸＡＭＰＬＥ.com', /IDNA would change it/], // full-width letters
    ['a\u3002b.com', /IDNA would change it/],
    ['bücher.de..', /empty label/],
    ['.bücher.de', /empty label/],
    ['*.x', /label "\*"/],
    ['127.1', /not a canonical IPv4/],
  ]
  for (const [text, message] of bad) {
    const result = normaliseRuleName(text)
    t.notOk(result.ok, `${JSON.stringify(text)} is refused`)
    t.match(errorOf(result), message)
  }
})

t.test('parseHost: IPv6 only in brackets, no zone ids, names normalised (cases 13, 20, 22)', async (t) => {
  const good: Array<[string, Host]> = [
    ['[::1]', ipHost('::1')],
    ['[0000::1]', ipHost('::1')],
    ['[0:0:0:0:0:0:0:1]', ipHost('::1')],
    ['[::]', ipHost('::')],
    ['[::ffff:127.0.0.1]', ipHost('127.0.0.1')], // case 22: canonicalised, so the guard sees loopback
    ['[64:ff9b::a9fe:a9fe]', ipHost('64:ff9b::a9fe:a9fe')],
    ['1.2.3.4', ipHost('1.2.3.4')],
    ['WWW.Example.COM.', nameHost('www.example.com')],
  ]
  for (const [text, host] of good) t.same(parseHost(text), { ok: true, value: host }, text)
  const bad: Array<[string, RegExp]> = [
    ['::1', /must be written in brackets/],
    ['fe80::1', /must be written in brackets/],
    ['[fe80::1%eth0]', /zone identifiers are not accepted/],
    ['[fe80::1%25eth0]', /zone identifiers/],
    ['[::1%lo]', /zone identifiers/],
    ['[1.2.3.4]', /not an IPv6 literal/],
    ['[]', /not an IPv6 literal/],
    ['[::1', /unbalanced bracket/],
    ['[[::1]]', /not an IPv6 literal/],
  ]
  for (const [text, message] of bad) {
    const result = parseHost(text)
    t.notOk(result.ok, `${text} is refused`)
    t.match(errorOf(result), message)
  }
})

t.test('parsePort accepts 1-65535 in plain decimal only (cases 47, 52, 53)', async (t) => {
  for (const [text, port] of [['1', 1], ['80', 80], ['443', 443], ['65535', 65535]] as const) {
    t.same(parsePort(text), { ok: true, value: port }, text)
  }
  const bad = ['0', '65536', '99999', '-1', '+443', '0x1bb', '4.43e2', '443.0', ' 443', '443 ', '443abc', '443\n', '007', '080', '', '١٢٣', 'https']
  for (const text of bad) {
    const result = parsePort(text)
    t.notOk(result.ok, `${JSON.stringify(text)} is refused`)
    t.match(errorOf(result), /must be a decimal number from 1 to 65535/)
  }
})

t.test('parseAuthority: host:port with a required port (section E)', async (t) => {
  const good: Array<[string, Target]> = [
    ['www.example.com:443', { host: nameHost('www.example.com'), port: 443 }],
    ['WWW.EXAMPLE.COM.:443', { host: nameHost('www.example.com'), port: 443 }], // cases 25, 26
    ['a.b.:443', { host: nameHost('a.b'), port: 443 }],
    ['10.0.0.1:5432', { host: ipHost('10.0.0.1'), port: 5432 }],
    ['[::1]:443', { host: ipHost('::1'), port: 443 }],
    ['[::ffff:127.0.0.1]:80', { host: ipHost('127.0.0.1'), port: 80 }],
  ]
  for (const [text, target] of good) t.same(parseAuthority(text), { ok: true, value: target }, text)
  const bad: Array<[string, RegExp]> = [
    ['api.allowed.test', /has no port/], // case 50
    ['[::1]', /has no port/],
    ['www.example.com:', /port ""/], // case 52
    ['www.example.com:99999', /port "99999"/],
    ['www.example.com:65536', /port "65536"/],
    ['www.example.com:0', /port "0"/],
    ['www.example.com:-1', /port "-1"/],
    ['www.example.com:443abc', /port "443abc"/],
    ['www.example.com:0x1bb', /port "0x1bb"/], // case 53
    ['www.example.com:+443', /port "\+443"/],
    ['www.example.com:4.43e2', /port "4.43e2"/],
    ['www.example.com: 443', /port " 443"/],
    ['www.example.com:007', /port "007"/],
    ['http://evil.test:443/', /not host:port/], // case 55: absolute-form in CONNECT
    ['api.allowed.test:443@evil.test:443', /not host:port/], // case 56: userinfo
    ['user@evil.test:443', /not host:port \(no scheme, userinfo/],
    ['www.example.com:80:80', /./],
    ['::1:443', /must be written in brackets/],
    ['www.example.com..:443', /empty label/], // case 25
    ['.example.com:443', /empty label/],
    ['*.example.com:443', /label "\*"/], // case 31
    ['x*.example.com:443', /label "x\*"/],
    ['2130706433:443', /not a canonical IPv4/], // case 1
    ['0177.0.0.1:80', /not a canonical IPv4/], // case 2
    ['127.1:22', /not a canonical IPv4/], // case 4
    ['012.0.0.1:443', /not a canonical IPv4/], // case 5
    ['0:80', /not a canonical IPv4/], // case 7
    ['[fe80::1%25eth0]:80', /zone identifiers/], // case 20
    ['[::1%lo]:80', /zone identifiers/],
    ['evil.test%00.example.com:443', /invalid host name/], // case 37
    ['evil.test\0.example.com:443', /invalid host name/], // case 58
    ['-x.example.com:443', /label "-x"/], // case 38
    [':443', /empty host name/],
  ]
  for (const [text, message] of bad) {
    const result = parseAuthority(text)
    t.notOk(result.ok, `${JSON.stringify(text)} is refused`)
    t.match(errorOf(result), message)
  }
  t.same(parseAuthority('www.example.com', 80), { ok: true, value: { host: nameHost('www.example.com'), port: 80 } }, 'a default port fills in when allowed')
})

t.test('parseAbsoluteUrl: http:// only, strict authority, path kept (section D)', async (t) => {
  const good: Array<[string, Target, string]> = [
    ['http://a', { host: nameHost('a'), port: 80 }, '/'],
    ['http://a?x', { host: nameHost('a'), port: 80 }, '/?x'],
    ['http://a/', { host: nameHost('a'), port: 80 }, '/'],
    ['http://a/p/q?r=1&s', { host: nameHost('a'), port: 80 }, '/p/q?r=1&s'],
    ['http://a/p%20q', { host: nameHost('a'), port: 80 }, '/p%20q'], // % in the path is fine
    ['HTTP://API.Allowed.Test./x', { host: nameHost('api.allowed.test'), port: 80 }, '/x'], // cases 25, 26
    ['http://api.allowed.test:8080/', { host: nameHost('api.allowed.test'), port: 8080 }, '/'],
    ['http://www.example.com:443/', { host: nameHost('www.example.com'), port: 443 }, '/'], // case 46: plain HTTP to 443
    ['http://[::1]/', { host: ipHost('::1'), port: 80 }, '/'],
    ['http://[::ffff:127.0.0.1]:80/', { host: ipHost('127.0.0.1'), port: 80 }, '/'], // case 22
    ['http://127.0.0.1:3128/proxy.pac', { host: ipHost('127.0.0.1'), port: 3128 }, '/proxy.pac'], // case 49: decided by policy
  ]
  for (const [url, target, path] of good) t.same(parseAbsoluteUrl(url), { ok: true, value: { target, path } }, url)
  const bad: Array<[string, RegExp]> = [
    ['https://api.allowed.test/', /use CONNECT/], // case 46
    ['HTTPS://api.allowed.test/', /use CONNECT/],
    ['http:api.allowed.test/', /must start with "http:\/\/"/], // case 44
    ['http:/api.allowed.test/', /must start with "http:\/\/"/],
    ['http:\\\\api.allowed.test/', /must start with "http:\/\/"/],
    ['http://api.allowed.test\\@evil.test/', /backslash/], // case 43
    ['http://evil.test#@api.allowed.test/', /fragment/],
    ['http://a/#frag', /fragment/],
    ['http://a b/', /whitespace/],
    ['http://api.allowed.test:80@evil.test/', /userinfo/], // case 41
    ['http://user:pass@api.allowed.test/', /userinfo/],
    ['http://%61pi.allowed.test/', /percent-encoding in the host/],
    ['http://%D0%B0pi.allowed.test/', /percent-encoding in the host/], // case 34
    ['http://ex%C2%ADample.com/', /percent-encoding in the host/], // case 35
    ['http://ex%E2%80%8Bample.com/', /percent-encoding in the host/],
    ['http://evil.test%00.example.com/', /percent-encoding in the host/], // case 37
    ['http://[fe80::1%25eth0]/', /percent-encoding in the host/], // case 20
    ['http://api.allowed.test:0/', /port "0"/], // case 47
    ['http://api.allowed.test:99999/', /port "99999"/],
    ['http://api.allowed.test:+80/', /port "\+80"/],
    ['http://api.allowed.test:080/', /port "080"/],
    ['http://api.allowed.test:/', /port ""/],
    ['http://api.allowed.test:80:80/', /./],
    ['http://2130706433/', /not a canonical IPv4/], // case 1
    ['http://0177.0.0.1/', /not a canonical IPv4/], // case 2
    ['http://127.0.1/', /not a canonical IPv4/], // case 4
    ['http://0/', /not a canonical IPv4/], // case 7
    ['http://::1/', /must be written in brackets/],
    ['http://', /empty host name/],
    ['http:///x', /empty host name/],
    ['ftp://a/', /unsupported scheme "ftp:"/],
    ['ws://a/', /unsupported scheme/],
    ['/path', /not an absolute http:\/\/ URL/],
    ['*', /not an absolute http:\/\/ URL/],
  ]
  for (const [url, message] of bad) {
    const result = parseAbsoluteUrl(url)
    t.notOk(result.ok, `${JSON.stringify(url)} is refused`)
    t.match(errorOf(result), message)
  }
})

t.test('formatHost and formatTarget bracket IPv6 and canonicalise', async (t) => {
  t.equal(formatHost(ipHost('0:0:0:0:0:0:0:1')), '[::1]')
  t.equal(formatHost(ipHost('::ffff:10.0.0.1')), '10.0.0.1')
  t.equal(formatHost(nameHost('a.b')), 'a.b')
  t.equal(formatTarget({ host: ipHost('2001:db8::1'), port: 443 }), '[2001:db8::1]:443')
  t.equal(formatTarget({ host: nameHost('www.example.com'), port: 443 }), 'www.example.com:443')
})
