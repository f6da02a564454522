// The PAC file evaluated by a real PAC engine (pac-resolver on QuickJS): what it answers, that
// it agrees with the proxy's own matcher, and that rule text can never become code.
import { readFileSync } from 'node:fs'
import { createPacResolver } from 'pac-resolver'
import { QuickJS } from 'quickjs-wasi'
import t from 'tap'
import { parseConfig } from '../lib/rules/config.js'
import { generatePac, type PacFlavor } from '../lib/wiring/pac.js'
import { compilePolicy, matchIp, matchName, patternMatches, type HostPattern, type Policy } from '../lib/policy/rules.js'
import { parseHost } from '../lib/policy/target.js'
import { runCli } from './helpers/cli.js'
import { rawExchange, statusOf } from './helpers/net.js'
import { configFrom, startProxy } from './helpers/proxy.js'

const qjs = await QuickJS.create({ wasm: readFileSync(new URL('../node_modules/quickjs-wasi/quickjs.wasm', import.meta.url)) })

const RULES = {
  allow: ['registry-1.docker.io:443', '*.docker.io:443', 'github.com:80,443', 'api.example.com:8000-8100', '203.0.113.0/24:443', '[2001:db8::/32]:443'],
  bypass: ['localhost', '127.0.0.1', '::1', '*.local', '10.0.0.0/8', 'fd00::/8', 'intranet.corp'],
}

function resolverFor(config: ReturnType<typeof configFrom>, flavor: PacFlavor) {
  const text = generatePac({ advertise: '127.0.0.1:3128', bypass: config.bypass, policy: config.policy, flavor, version: 'test' })
  return createPacResolver(qjs, text)
}

/** How a PAC caller's host string maps onto the proxy's grammar: brackets off, then parseHost. */
function libHost(host: string) {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  return parseHost(bare.includes(':') ? `[${bare}]` : bare)
}

function libBypass(bypass: readonly HostPattern[], host: string): boolean {
  const parsed = libHost(host)
  return parsed.ok && bypass.some((p) => patternMatches(p, parsed.value))
}

function libAllowed(policy: Policy, host: string, port: number): boolean {
  const parsed = libHost(host)
  if (!parsed.ok) return false
  const h = parsed.value
  return (h.kind === 'name' ? matchName(policy, 'allow', h.name, port) : matchIp(policy, 'allow', h.ip, port)) !== undefined
}

t.test('standard flavor: bypass hosts go DIRECT, every other host to the proxy', async (t) => {
  const find = resolverFor(configFrom(RULES), 'standard')
  const cases: Array<[string, string]> = [
    ['http://localhost/', 'DIRECT'],
    ['http://LOCALHOST./x', 'DIRECT'],
    ['http://127.0.0.1:8080/', 'DIRECT'],
    ['http://[::1]/', 'DIRECT'],
    ['http://printer.local/', 'DIRECT'],
    ['http://a.b.printer.local/', 'DIRECT'],
    ['http://local/', 'PROXY 127.0.0.1:3128'],
    ['http://10.1.2.3/', 'DIRECT'],
    ['http://[fd00::5]/', 'DIRECT'],
    ['http://[::ffff:10.0.0.9]/', 'DIRECT'],
    ['http://intranet.corp/', 'DIRECT'],
    ['http://intranet.corp.evil.test/', 'PROXY 127.0.0.1:3128'],
    ['http://xintranet.corp/', 'PROXY 127.0.0.1:3128'],
    ['https://registry-1.docker.io:443', 'PROXY 127.0.0.1:3128'],
    ['https://unknown.example:443', 'PROXY 127.0.0.1:3128'],
    ['http://11.0.0.1/', 'PROXY 127.0.0.1:3128'],
  ]
  for (const [url, expected] of cases) t.equal(await find(url), expected, url)
  // a caller that passes the host as written (not WHATWG-normalised) still gets no bypass for it
  t.equal(await find('http://127.1/', '127.1'), 'PROXY 127.0.0.1:3128', 'lenient IPv4 spelling is not 127.0.0.1')
})

t.test('docker flavor: hosts no allow rule can match are refused by Docker itself', async (t) => {
  const find = resolverFor(configFrom(RULES), 'docker')
  const cases: Array<[string, string]> = [
    ['https://registry-1.docker.io:443', 'PROXY 127.0.0.1:3128'],
    ['https://auth.docker.io:443', 'PROXY 127.0.0.1:3128'],
    ['https://docker.io:443', 'PROXY reject.docker.internal:1'],
    ['http://registry-1.docker.io:80', 'PROXY reject.docker.internal:1'],
    ['http://api.example.com:8200', 'PROXY reject.docker.internal:1'],
    ['http://api.example.com:8050', 'PROXY 127.0.0.1:3128'],
    ['https://203.0.113.9:443', 'PROXY 127.0.0.1:3128'],
    ['https://[2001:db8::1]:443', 'PROXY 127.0.0.1:3128'],
    ['https://140.82.112.3:443', 'PROXY reject.docker.internal:1'],
    ['https://evil.test:443', 'PROXY reject.docker.internal:1'],
    ['http://printer.local:631', 'DIRECT'],
  ]
  for (const [url, expected] of cases) t.equal(await find(url), expected, url)
})

const HOSTS = [
  'localhost', 'LOCALHOST', 'localhost.', 'sub.localhost', 'printer.local', 'x.y.local', 'local', 'local.', '.local', 'a..local',
  '127.0.0.1', '127.0.0.2', '127.1', '0177.0.0.1', '2130706433', '10.0.0.1', '10.255.255.255', '11.0.0.1', '012.0.0.1',
  '::1', '[::1]', '[0:0:0:0:0:0:0:1]', '::ffff:127.0.0.1', '[::ffff:10.1.1.1]', 'fd00::1', 'fd12::1', 'fe80::1', '2001:db8::5',
  'registry-1.docker.io', 'REGISTRY-1.DOCKER.IO.', 'a.docker.io', 'docker.io', 'xdocker.io', 'docker.io.evil.test',
  'github.com', 'api.example.com', '203.0.113.9', '203.0.114.1', 'intranet.corp', 'intranet.corp.', 'bad_host.local', '-x.local',
  'x'.repeat(64) + '.local', 'a b.local', 'a"b.local', '', '.', '[', '[::1', 'xn--bcher-kva.local',
]

t.test('the PAC and the proxy agree on every host (parity table)', async (t) => {
  const config = configFrom(RULES)
  const standard = resolverFor(config, 'standard')
  const docker = resolverFor(config, 'docker')
  for (const host of HOSTS) {
    const bypass = libBypass(config.bypass, host)
    t.equal(await standard('http://example.invalid/', host), bypass ? 'DIRECT' : 'PROXY 127.0.0.1:3128', `standard ${JSON.stringify(host)}`)
    const allowed = libAllowed(config.policy, host, 443)
    const expected = bypass ? 'DIRECT' : allowed ? 'PROXY 127.0.0.1:3128' : 'PROXY reject.docker.internal:1'
    t.equal(await docker(`https://example.invalid:443`, host), expected, `docker ${JSON.stringify(host)}`)
  }
})

t.test('random hosts never make the PAC throw and never yield DIRECT outside bypass', async (t) => {
  const config = configFrom(RULES)
  const find = resolverFor(config, 'standard')
  let seed = 42
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed % n
  }
  const alphabet = 'abcxyz019.-_:[]*"\\/%\u2028\u0000lLoOcCaA'
  let direct = 0
  for (let i = 0; i < 400; i++) {
    const host = Array.from({ length: 1 + random(20) }, () => alphabet[random(alphabet.length)]).join('')
    const answer = await find('http://example.invalid/', host)
    const bypass = libBypass(config.bypass, host)
    if (answer === 'DIRECT') direct++
    if (answer !== (bypass ? 'DIRECT' : 'PROXY 127.0.0.1:3128')) t.fail(`host ${JSON.stringify(host)}: ${answer}`)
  }
  t.pass(`400 random hosts checked, ${direct} bypassed`)
})

t.test('hostile text handed straight to the generator stays data', async (t) => {
  const hostile = ['a"; return "DIRECT"; //', 'x\u2028FindProxyForURL = function(){return "DIRECT"}', '*/ return "DIRECT"; /*', 'a|.*', '(', '</script>', "'; DIRECT; '", 'x\r\nreturn "DIRECT"']
  const bypass: HostPattern[] = hostile.map((name) => ({ kind: 'exact', name }))
  const policy = compilePolicy({ allow: [] })
  if (!policy.ok) throw new Error('empty policy')
  const text = generatePac({ advertise: '127.0.0.1:3128', bypass, policy: policy.value, flavor: 'docker', version: 'test' })
  t.notOk(/[\u2028\u2029]/.test(text), 'no raw line separators in the script')
  const find = createPacResolver(qjs, text)
  for (const host of ['example.com', 'www.google.com', 'a', '127.0.0.1']) {
    t.equal(await find(`https://${host}:443`), 'PROXY reject.docker.internal:1', `${host} is not let through`)
  }
  t.equal(await find('https://x:443', hostile[0]), 'PROXY reject.docker.internal:1', 'even the hostile string itself is not a valid host to bypass')
})

t.test('rule text that could break a PAC is rejected when the rules load', async (t) => {
  // messages name entries by encodeURIComponent(), so that U+2028 never reaches tap's line-based output
  for (const entry of ['a"; return "DIRECT"; //', 'a\u2028b.test', 'a|.*', '(x).test', 'a b.test', "a'b.test"]) {
    t.notOk(parseConfig({ allow: [entry] }).ok, `allow ${encodeURIComponent(entry)} rejected`)
    t.notOk(parseConfig({ bypass: [entry] }).ok, `bypass ${encodeURIComponent(entry)} rejected`)
  }
})

t.test('served at /proxy.pac and /wpad.dat with its type and an ETag, regenerated on reload', async (t) => {
  const proxy = await startProxy(RULES)
  t.teardown(() => proxy.close())
  const until = (text: string) => /\r\n\r\n/.test(text) && text.includes('FindProxyForURL(url, host)') && text.trimEnd().endsWith('}')
  const first = await rawExchange(proxy.port, 'GET /proxy.pac HTTP/1.1\r\nHost: x\r\n\r\n', { until })
  t.equal(statusOf(first.text), 200)
  t.match(first.text, /Content-Type: application\/x-ns-proxy-autoconfig/)
  t.match(first.text, new RegExp(`var PG_PROXY = "PROXY 127\\.0\\.0\\.1:${proxy.port}";`))
  const etag = /ETag: (".*")/.exec(first.text)?.[1] ?? ''
  t.ok(etag.length > 2, 'has an ETag')
  const wpad = await rawExchange(proxy.port, 'GET /wpad.dat HTTP/1.1\r\nHost: x\r\n\r\n', { until })
  t.equal(/ETag: (".*")/.exec(wpad.text)?.[1], etag, '/wpad.dat serves the same file')
  const same = await rawExchange(proxy.port, `GET /proxy.pac HTTP/1.1\r\nHost: x\r\nIf-None-Match: ${etag}\r\n\r\n`, { until: (x) => x.includes('\r\n\r\n') })
  t.equal(statusOf(same.text), 304)
  const docker = await rawExchange(proxy.port, 'GET /proxy.pac?flavor=docker HTTP/1.1\r\nHost: x\r\n\r\n', { until })
  t.match(docker.text, /reject\.docker\.internal:1/)

  proxy.reload({ ...RULES, bypass: ['localhost'] })
  const after = await rawExchange(proxy.port, `GET /proxy.pac HTTP/1.1\r\nHost: x\r\nIf-None-Match: ${etag}\r\n\r\n`, { until })
  t.equal(statusOf(after.text), 200, 'a reload changes the file and its ETag')
  t.notMatch(after.text, /"local"/)
  const post = await rawExchange(proxy.port, 'POST /proxy.pac HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n', { until: (x) => x.includes('\r\n\r\n') })
  t.equal(statusOf(post.text), 405)
})

t.test('proxy-gate pac prints the same script, with --advertise and --flavor', async (t) => {
  const rules = new URL('../rules.json', import.meta.url).pathname
  const { stdout } = await runCli(['pac', '--rules', rules, '--advertise', 'host.docker.internal:3128', '--flavor', 'docker'])
  t.match(stdout, /var PG_PROXY = "PROXY host\.docker\.internal:3128";/)
  const find = createPacResolver(qjs, stdout)
  t.equal(await find('https://registry-1.docker.io:443'), 'PROXY host.docker.internal:3128')
  t.equal(await find('https://example.com:443'), 'PROXY reject.docker.internal:1')
  const bad = await runCli(['pac', '--rules', rules, '--advertise', 'nope'])
  t.equal(bad.code, 2)
})
