// Secrets in pieces: the "secrets" section's validation (never a value in a message), placeholders
// (stable, unguessable, shaped like tokens), the key file, reading values, substitution (Basic
// credentials decoded and encoded again), the policy's bindings, the sandbox DNS server's refusal,
// and plain HTTP (and its upgrades) to a bound host, only on a port the secret names.
import { chmodSync, statSync, writeFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import { connect as netConnect, type AddressInfo } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { join } from 'node:path'
import { inspect } from 'node:util'
import * as packet from 'dns-packet'
import t from 'tap'
import { WebSocket, WebSocketServer } from 'ws'
import { createCa } from '../lib/certs/ca.js'
import { connectHead } from './helpers/http.js'
import { answer } from '../lib/dns/answer.js'
import { parseQuery } from '../lib/dns/message.js'
import { needsInterception } from '../lib/policy/decide.js'
import type { RuleError } from '../lib/policy/rules.js'
import { parseSecrets, SecretValues, type SecretSpec } from '../lib/rules/secrets.js'
import { secretsKey } from '../lib/secrets/key.js'
import { placeholderFor, placeholderMarker, valuePrefix } from '../lib/secrets/placeholder.js'
import { basicCredentials, substituteHeaders } from '../lib/secrets/substitute.js'
import { armSecrets, readSecretValue } from '../lib/secrets/values.js'
import { headerObject } from '../lib/proxy/secrets.js'
import { ip, target } from './helpers/fixtures.js'
import { tempDir } from './helpers/files.js'
import { rawExchange, selfSigned, startHttpUpstream, startWsUpstream, statusOf } from './helpers/net.js'
import { startDns } from './helpers/dns.js'
import { configFrom, logLine, startProxy } from './helpers/proxy.js'
import type { Config } from '../lib/rules/config.js'

const VALUE = 'sk-ant-api03-0123456789abcdefghijklmnop'

function parsed(value: unknown): { specs: SecretSpec[]; errors: RuleError[] } {
  const errors: RuleError[] = []
  return { specs: parseSecrets(errors, value), errors }
}

function armed(rules: Record<string, unknown>, env: Record<string, string>, dir = tempDir('secrets-key')): Config {
  const result = armSecrets(configFrom(rules), dir, join(dir, 'rules.json'), env)
  if (!result.ok) throw new Error(result.error)
  return result.value
}

t.test('"secrets" validation names the secret and says what is wrong', async (t) => {
  const ok = parsed({ GH: { from: 'env:GH_VALUE', hosts: ['api.github.com', 'uploads.github.com:443,8443', { host: '*.githubusercontent.com', ports: [443] }] } })
  t.same(ok.errors, [])
  t.same(ok.specs[0]?.from, { kind: 'env', ref: 'GH_VALUE' })
  t.same(ok.specs[0]?.hosts.map((h) => [h.text, h.ports]), [
    ['api.github.com', [[443, 443]]],
    ['uploads.github.com:443,8443', [[443, 443], [8443, 8443]]],
    ['{"host":"*.githubusercontent.com","ports":[443]}', [[443, 443]]],
  ], 'a host without ports means 443 only, never cleartext')
  const rows: Array<[unknown, string, RegExp]> = [
    [[], 'secrets', /"secrets" is \{/],
    [{ '1BAD': { from: 'env:X', hosts: ['a.test'] } }, 'secrets.1BAD', /environment variable/],
    [{ GH: 'ghp_literal' }, 'secrets.GH', /must be \{ "from"/],
    [{ GH: { from: 'vault:x', hosts: ['a.test'] } }, 'secrets.GH.from', /env:VARIABLE/],
    [{ GH: { from: 'env:', hosts: ['a.test'] } }, 'secrets.GH.from', /env:VARIABLE/],
    [{ GH: { from: 'env:X', hosts: [] } }, 'secrets.GH.hosts', /non-empty list/],
    [{ GH: { from: 'env:X', hosts: ['10.0.0.0/8'] } }, 'secrets.GH.hosts[0]', /not to IP addresses/],
    [{ GH: { from: 'env:X', hosts: ['a.*.test'] } }, 'secrets.GH.hosts[0]', /wildcard/],
    [{ GH: { from: 'env:X', hosts: [{ host: 'a.test', methods: ['GET'] }] } }, 'secrets.GH.hosts[0]', /only "host" and "ports"/],
    [{ GH: { from: 'env:X', hosts: ['a.test'], value: 'x' } }, 'secrets.GH.value', /unknown key "value"/],
  ]
  for (const [value, path, message] of rows) {
    const { specs, errors } = parsed(value)
    t.same(specs, [], `${path}: not loaded`)
    t.equal(errors[0]?.path, path)
    t.match(errors[0]?.message, message)
  }
  const viaConfig = configFrom({ secrets: { GH: { from: 'file:gh', hosts: ['a.test'] } } })
  t.same(viaConfig.secrets.map((s) => s.name), ['GH'], 'rules.json takes "secrets"')
})

t.test('placeholders: stable for a key and name, different otherwise, shaped like the value', async (t) => {
  const key = Buffer.alloc(32, 1)
  const marker = placeholderMarker(key, 'GH')
  t.match(marker, /^[A-Za-z0-9_-]{43}$/)
  t.equal(placeholderMarker(Buffer.alloc(32, 1), 'GH'), marker, 'the same key and name: the same marker')
  t.not(placeholderMarker(key, 'NPM'), marker)
  t.not(placeholderMarker(Buffer.alloc(32, 2), 'GH'), marker)
  t.same(placeholderFor(key, 'GH', VALUE), { placeholder: `sk-ant-${marker}`, marker })
  const prefixes: Array<[string | undefined, string]> = [
    ['ghp_0123456789abcdefghij0123456789abcdef', 'ghp_'],
    ['github_pat_11ABCDEFG0123456789_abcdefghijklmnop', 'github_pat_'],
    ['sk-proj-0123456789abcdefghijklmnop', 'sk-proj-'],
    ['xoxb-123456789012-1234567890123-abcdefghijkl', 'xoxb-'],
    ['npm_0123456789abcdefghijklmnopqrstuvwxyz', 'npm_'],
    ['deadbeef-1234-5678-9abc-def012345678', ''],
    ['ghp_short', ''],
    ['AKIAABCDEFGHIJKLMNOP', ''],
    [undefined, ''],
  ]
  for (const [value, prefix] of prefixes) t.equal(valuePrefix(value), prefix, value ?? '(no value)')
})

t.test('the key: made once with mode 0600, refused when others can read it or it is too short', async (t) => {
  const dir = tempDir('secrets-key')
  const first = secretsKey(dir)
  t.ok(first.ok)
  t.equal(statSync(join(dir, 'secrets-key')).mode & 0o777, 0o600)
  t.same(secretsKey(dir), first, 'read again, not replaced')
  chmodSync(join(dir, 'secrets-key'), 0o644)
  t.match(secretsKey(dir), { ok: false, error: /can be read by other users/ })
  writeFileSync(join(dir, 'secrets-key'), 'short\n', { mode: 0o600 })
  chmodSync(join(dir, 'secrets-key'), 0o600)
  t.match(secretsKey(dir), { ok: false, error: /no usable key/ })
  const blocked = join(dir, 'file')
  writeFileSync(blocked, '')
  t.match(secretsKey(join(blocked, 'sub')), { ok: false, error: /cannot create/ })
})

t.test('values: from the environment or a file (one trailing newline dropped); errors name the secret, never hold the value', async (t) => {
  const dir = tempDir('secrets-values')
  const file = (name: string, text: string) => writeFileSync(join(dir, name), text)
  const spec = (from: SecretSpec['from']): SecretSpec => ({ name: 'GH', from, hosts: [] })
  const rules = join(dir, 'rules.json')
  file('crlf', `${VALUE}\r\n`)
  t.same(readSecretValue(spec({ kind: 'file', ref: 'crlf' }), rules, {}), { ok: true, value: VALUE })
  t.same(readSecretValue(spec({ kind: 'env', ref: 'V' }), rules, { V: VALUE }), { ok: true, value: VALUE })
  file('two-lines', `${VALUE}\nsecond\n`)
  file('big', 'x'.repeat(65 * 1024))
  const rows: Array<[SecretSpec['from'], RegExp]> = [
    [{ kind: 'env', ref: 'MISSING' }, /^secret GH: environment variable MISSING is not set$/],
    [{ kind: 'file', ref: 'absent' }, /^secret GH: cannot read .*absent: ENOENT$/],
    [{ kind: 'file', ref: 'two-lines' }, /^secret GH: the value holds a line break/],
    [{ kind: 'file', ref: 'big' }, /^secret GH: .* is larger than 64 KiB$/],
  ]
  for (const [from, error] of rows) {
    const read = readSecretValue(spec(from), rules, {})
    t.match(read, { ok: false, error })
    t.notOk(JSON.stringify(read).includes(VALUE))
  }
  t.match(readSecretValue(spec({ kind: 'env', ref: 'E' }), rules, { E: '' }), { ok: false, error: /the value is empty/ })
  const values = new SecretValues(new Map([['GH', VALUE]]))
  for (const shown of [JSON.stringify({ values }), inspect(values), String(values)]) t.notOk(shown.includes(VALUE), shown)
  t.match(armSecrets(configFrom({ secrets: { GH: { from: 'env:NOPE', hosts: ['a.test'] } } }), dir, rules, {}), { ok: false, error: /secret GH/ })
  const plain = configFrom({ allow: ['a.test'] })
  t.equal((armSecrets(plain, join(dir, 'never', 'made'), rules, {}) as { value: Config }).value, plain, 'no secrets: no key file, the rules as they were')
})

t.test('substitution: in Basic credentials decoded and encoded again, other schemes and headers as text', async (t) => {
  const config = armed({ secrets: { GH: { from: 'env:V', hosts: ['a.test'] } } }, { V: VALUE })
  const binding = config.policy.secrets?.[0]
  if (!binding || !config.secretValues) throw new Error('not armed')
  const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`
  const out = substituteHeaders(
    ['Authorization', basic(`git:${binding.placeholder}`), 'X-Key', `k=${binding.marker}`, 'authorization', 'Basic !!notbase64', 'Cookie', 'a=1'],
    [binding],
    config.secretValues,
  )
  t.same(out, ['Authorization', basic(`git:${VALUE}`), 'X-Key', `k=${VALUE}`, 'authorization', 'Basic !!notbase64', 'Cookie', 'a=1'])
  t.equal(basicCredentials('Bearer x'), undefined)
  t.same(headerObject(['Cookie', 'a=1', 'cookie', 'b=2', 'Accept', 'x', 'accept', 'y']), { cookie: 'a=1; b=2', accept: 'x, y' })
  t.ok(needsInterception(config.policy, target('a.test:443')), 'a bound host is opened without any methods/paths rule')
  t.notOk(needsInterception(config.policy, target('a.test:80')), 'not on a port the secret does not name')
  t.notOk(needsInterception(config.policy, target('b.test:443')))
})

t.test('the sandbox DNS server answers NXDOMAIN for a name holding a placeholder, naming the secret', async (t) => {
  const config = armed({ allow: ['*.test'], secrets: { GH: { from: 'env:V', hosts: ['a.test'] } } }, { V: VALUE })
  const marker = config.policy.secrets?.[0]?.marker ?? ''
  const ask = (name: string, mode: 'enforce' | 'report' = 'enforce') => {
    const query = parseQuery(packet.encode({ type: 'query', id: 7, questions: [{ type: 'A', name, class: 'IN' }] }), 512)
    if (query.kind === 'drop') throw new Error('dropped')
    const rules = { policies: config.policies, ctx: { mode, self: [], tls: config.tls } }
    return answer(query, { source: ip('10.0.0.5'), client: '10.0.0.5:5353', transport: 'udp' }, rules, ip('10.0.0.1'), false)
  }
  const refused = ask(`${marker.toUpperCase()}.evil.test`)
  t.match(refused.record, { answer: 'deny', reason: 'secret-misplaced', secret: 'GH', wouldDeny: false })
  t.equal((packet.decode(refused.response) as { rcode?: string }).rcode, 'NXDOMAIN')
  t.match(ask(`x${marker}.evil.test`).record, { secret: 'GH' }, 'inside a label too')
  t.match(ask(`${marker}.evil.test`, 'report').record, { answer: 'allow', reason: 'secret-misplaced', wouldDeny: true }, 'report mode lets it through, marked')
  t.match(ask('fine.test').record, { answer: 'allow', reason: 'allow-rule' })
})

t.test('plain HTTP: the value goes only where a secret names the port, upgrades included', async (t) => {
  const origin = await startHttpUpstream('127.0.0.1')
  const ws = await startWsUpstream('127.0.0.1')
  const dns = await startDns({ 'plain.test': { A: ['127.0.0.1'] } })
  const dir = tempDir('secrets-plain')
  const rules = (hosts: string[]) => ({
    allow: [`plain.test:${origin.port},${ws.port}`, `*.plain.test:${origin.port}`, `127.0.0.1:${origin.port},${ws.port}`],
    dns: { servers: [dns.server] },
    secrets: { GH: { from: 'env:V', hosts } },
  })
  const arm = (c: Config): Config => {
    const result = armSecrets(c, dir, join(dir, 'rules.json'), { V: VALUE })
    if (!result.ok) throw new Error(result.error)
    return result.value
  }
  const proxy = await startProxy(rules([`plain.test:${origin.port},${ws.port}`]), { arm })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), ws.close(), dns.close()])
  })
  const placeholder = arm(configFrom(rules(['plain.test']))).policy.secrets?.[0]?.placeholder
  const get = (port: number, extra: string[] = []) =>
    rawExchange(proxy.port, [`GET http://plain.test:${port}/x?k=${placeholder ?? ''} HTTP/1.1`, `Host: plain.test:${port}`, `X-Key: ${placeholder ?? ''}`, ...extra, '', ''].join('\r\n'), { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf((await get(origin.port)).text), 200)
  t.equal(origin.requests[0]?.url, `/x?k=${VALUE}`)
  t.equal(origin.requests[0]?.headers['x-key'], VALUE)
  const upgrade = await get(ws.port, ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='])
  t.equal(statusOf(upgrade.text), 101)
  t.equal(ws.requests[0]?.url, `/x?k=${VALUE}`)
  t.equal(ws.requests[0]?.headers['x-key'], VALUE)
  proxy.reload(rules(['plain.test']))
  const refused = await get(origin.port)
  t.equal(statusOf(refused.text), 403, 'a secret whose hosts name no port is never sent in cleartext')
  t.match(refused.text, /Proxy-Status: proxy-gate; error=http_request_denied/)
  const line = await logLine(proxy, (l) => l.reason === 'secret-misplaced', 'the refusal')
  t.match(line, { secret: 'GH', decision: 'deny', target: `plain.test:${origin.port}` })
  t.equal(origin.requests.length, 1)
  const elsewhere = await rawExchange(proxy.port, [`GET http://other.plain.test:${origin.port}/ HTTP/1.1`, `Host: other.plain.test:${origin.port}`, `X-Key: ${placeholder ?? ''}`, '', ''].join('\r\n'), { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(elsewhere.text), 403, 'toward another allowed host')
  t.equal(dns.queries('other.plain.test'), 0, 'refused before its name is looked up')
  t.notOk(JSON.stringify(proxy.logs()).includes(VALUE))
})

t.test('an opened tunnel\'s WebSocket upgrade gets the value in its URL and headers', async (t) => {
  const ca = await createCa()
  const material = selfSigned(['ws.bound.test'])
  const seen: Array<{ url: string | undefined; key: string | string[] | undefined }> = []
  const server = createHttpsServer({ cert: material.cert, key: material.key })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    seen.push({ url: req.url, key: req.headers['x-key'] })
    ws.on('message', (m) => ws.send(`echo: ${(m as Buffer).toString()}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const dns = await startDns({ 'ws.bound.test': { A: ['127.0.0.1'] } })
  const dir = tempDir('secrets-wss')
  const arm = (c: Config): Config => {
    const result = armSecrets(c, dir, join(dir, 'rules.json'), { V: VALUE })
    if (!result.ok) throw new Error(result.error)
    return result.value
  }
  const rules = { allow: [`ws.bound.test:${port}`, `127.0.0.1:${port}`], dns: { servers: [dns.server] }, tls: { ports: [port] }, secrets: { GH: { from: 'env:V', hosts: [`ws.bound.test:${port}`] } } }
  const proxy = await startProxy(rules, { ca, upstreamCa: [material.cert], arm })
  t.teardown(async () => {
    await proxy.close()
    for (const c of wss.clients) c.terminate()
    server.close()
    await dns.close()
  })
  const placeholder = arm(configFrom(rules)).policy.secrets?.[0]?.placeholder ?? ''
  const tls = await new Promise<TLSSocket>((resolve, reject) => {
    const raw = netConnect({ host: '127.0.0.1', port: proxy.port })
    raw.once('data', (d) => {
      if (!d.toString().startsWith('HTTP/1.1 200')) return reject(new Error(d.toString()))
      const socket = tlsConnect({ socket: raw, servername: 'ws.bound.test', ca: ca.certPem })
      socket.once('secureConnect', () => resolve(socket))
    })
    raw.write(connectHead(`ws.bound.test:${port}`))
  })
  const echoed = await new Promise<string>((resolve) => {
    const ws = new WebSocket(`wss://ws.bound.test:${port}/socket?k=${placeholder}`, { createConnection: () => tls, headers: { 'X-Key': placeholder } })
    ws.on('open', () => ws.send('hi'))
    ws.on('message', (m) => {
      resolve((m as Buffer).toString())
      ws.close()
    })
    ws.on('error', (e) => resolve(e.message))
  })
  t.equal(echoed, 'echo: hi')
  t.same(seen, [{ url: `/socket?k=${VALUE}`, key: VALUE }])
  const line = await logLine(proxy, (l) => l.message === 'decision' && l.intercepted === true, 'the upgrade\'s decision')
  t.match(line, { secret: 'GH', decision: 'allow', path: '/socket' })
  t.notOk(JSON.stringify(proxy.logs()).includes(VALUE))
})
