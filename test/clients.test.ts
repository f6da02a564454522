// Per-client policies and proxy authentication, with real clients from different loopback source
// addresses and curl --proxy-user: which policy decides (user over source over default), 407 and
// its challenge, rate limiting, credentials never logged or forwarded, and `proxy-gate passwd`.
import { readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { hashPassword, verifyPassword } from '../lib/proxy/auth.js'
import { choosePolicy } from '../lib/policy/clients.js'
import { parseConfig } from '../lib/rules/config.js'
import { parseIp } from '../lib/policy/ip.js'
import { runCli, startCli } from './helpers/cli.js'
import { curlOutput } from './helpers/curl.js'
import { tempDir } from './helpers/files.js'
import { startHttpUpstream, statusOf } from './helpers/net.js'
import { configFrom, startProxy } from './helpers/proxy.js'

/** A raw exchange from a chosen loopback source address. */
function from(source: string, port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: source })
    let text = ''
    socket.on('data', (d) => (text += d.toString('latin1')))
    socket.on('close', () => resolve(text))
    socket.on('error', () => resolve(text))
    socket.write(bytes)
  })
}

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

t.test('rules: policies and clients are validated, and the chosen policy follows the precedence', async (t) => {
  const bad = parseConfig({
    policies: { ci: { allow: ['*'] }, default: { allow: [] }, 'bad name!': {} },
    clients: [{ source: '10.0.0.0/33', policy: 'ci' }, { user: 'x', policy: 'nope' }, { source: '10.0.0.0/8', user: 'y', policy: 'ci' }],
  })
  t.notOk(bad.ok)
  const paths = bad.ok ? [] : bad.errors.map((e) => e.path)
  t.same(paths.sort(), ['clients[0]', 'clients[1]', 'clients[2]', 'policies.bad name!', 'policies.ci.allow[0]', 'policies.default'].sort())
  t.match(parseConfig({ policies: { dev: { allow: [] } }, clients: [{ user: 'alice', policy: 'dev' }] }), { ok: false, errors: [{ message: /need proxy authentication/ }] })

  const config = configFrom({
    allow: ['default.test:443'],
    policies: { ci: { allow: ['registry.npmjs.org:443'] }, dev: { allow: ['*.github.com:443'] } },
    clients: [{ user: 'alice', policy: 'dev' }, { source: '10.0.5.0/24', policy: 'ci' }, { source: '10.0.0.0/8', policy: 'dev' }],
    auth: { users: { alice: await hashPassword('correct horse') } },
  })
  const choose = (source: string | undefined, user?: string) => choosePolicy(config.policies, { source: source ? parseIp(source) : undefined, user }).name
  t.equal(choose('10.0.5.7'), 'ci', 'first matching source')
  t.equal(choose('10.9.9.9'), 'dev')
  t.equal(choose('10.0.5.7', 'alice'), 'dev', 'a user entry beats a source entry')
  t.equal(choose('10.0.5.7', 'bob'), 'ci', 'an unlisted user falls back to the source')
  t.equal(choose('192.168.1.1'), 'default')
  t.equal(choose('::ffff:10.0.5.1'), 'ci', 'IPv4-mapped sources are IPv4')
})

t.test('source policies: two loopback clients, two policies, logs name the policy', async (t) => {
  const a = await startHttpUpstream()
  const b = await startHttpUpstream()
  const proxy = await startProxy({
    allow: [`127.0.0.1:${a.port}`],
    policies: { other: { allow: [`127.0.0.1:${b.port}`] } },
    clients: [{ source: '127.0.0.2', policy: 'other' }],
  })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([a.close(), b.close()])
  })
  const get = (port: number) => `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`
  t.equal(statusOf(await from('127.0.0.1', proxy.port, get(a.port))), 200, 'default policy client reaches a')
  t.equal(statusOf(await from('127.0.0.1', proxy.port, get(b.port))), 403)
  t.equal(statusOf(await from('127.0.0.2', proxy.port, get(b.port))), 200, '127.0.0.2 uses "other"')
  t.equal(statusOf(await from('127.0.0.2', proxy.port, get(a.port))), 403, 'named policies do not inherit the top level')
  const lines = proxy.logs().filter((l) => l.message === 'decision')
  t.same(lines.map((l) => [l.policy, l.decision]), [['default', 'allow'], ['default', 'deny'], ['other', 'allow'], ['other', 'deny']])
})

t.test('proxy authentication: 407 with a challenge, user policies, rate limit, nothing leaks', async (t) => {
  const a = await startHttpUpstream()
  const b = await startHttpUpstream()
  const password = 'correct horse battery'
  const proxy = await startProxy({
    allow: [`127.0.0.1:${a.port}`],
    policies: { dev: { allow: [`127.0.0.1:${b.port}`] } },
    clients: [{ user: 'alice', policy: 'dev' }],
    auth: { users: { alice: await hashPassword(password), bob: await hashPassword('another password') }, realm: 'corp egress' },
  })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([a.close(), b.close()])
  })
  const request = (port: number, auth?: string) => `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n${auth ? `Proxy-Authorization: ${auth}\r\n` : ''}Connection: close\r\n\r\n`

  const none = await from('127.0.0.3', proxy.port, request(a.port))
  t.equal(statusOf(none), 407)
  t.match(none, /Proxy-Authenticate: Basic realm="corp egress"/)
  t.match(none, /Proxy-Status: proxy-gate; error=http_request_denied; details="proxy authentication required"/)
  const wrong = await from('127.0.0.3', proxy.port, request(a.port, basic('alice', 'nope')))
  t.equal(statusOf(wrong), 407)
  t.equal(statusOf(await from('127.0.0.3', proxy.port, request(a.port, basic('mallory', password)))), 407, 'unknown user')

  t.equal(statusOf(await from('127.0.0.3', proxy.port, request(b.port, basic('alice', password)))), 200, 'alice uses "dev"')
  t.equal(statusOf(await from('127.0.0.3', proxy.port, request(a.port, basic('alice', password)))), 403)
  t.equal(statusOf(await from('127.0.0.3', proxy.port, request(a.port, basic('bob', 'another password')))), 200, 'bob uses the default policy')
  t.equal(b.requests[0]?.headers['proxy-authorization'], undefined, 'credentials are not forwarded')

  const curl = await curlOutput(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-x', proxy.url, '--proxy-user', `alice:${password}`, '-p', `http://127.0.0.1:${b.port}/`])
  t.equal(curl, '200', 'curl --proxy-user over CONNECT')
  const curlNoAuth = await curlOutput(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-x', proxy.url, `http://127.0.0.1:${a.port}/`])
  t.equal(curlNoAuth, '407')

  for (let i = 0; i < 10; i++) await from('127.0.0.4', proxy.port, request(a.port, basic('alice', `guess ${i}`)))
  t.equal(statusOf(await from('127.0.0.4', proxy.port, request(b.port, basic('alice', password)))), 429, 'a source that keeps failing is held off')
  t.equal(statusOf(await from('127.0.0.5', proxy.port, request(b.port, basic('alice', password)))), 200, 'other sources are not')

  const logs = JSON.stringify(proxy.logs())
  t.notMatch(logs, /correct horse/)
  t.notMatch(logs, new RegExp(Buffer.from(`alice:${password}`).toString('base64').slice(0, 20)))
})

t.test('passwd writes a salted hash into rules.json, and auth lets a non-loopback listener start', async (t) => {
  const dir = tempDir('passwd')
  const rules = join(dir, 'rules.json')
  writeFileSync(rules, JSON.stringify({ allow: ['example.com:443'], listen: '0.0.0.0:0' }))
  const { code } = await runCli(['passwd', 'alice', '--rules', rules], { input: 's3cret-pass-word\n' })
  t.equal(code, 0)
  const written = JSON.parse(readFileSync(rules, 'utf8')) as { allow: string[]; auth: { users: { alice: string } } }
  t.same(written.allow, ['example.com:443'], 'other keys kept')
  t.match(written.auth.users.alice, /^scrypt\$16384\$8\$1\$/)
  t.notMatch(readFileSync(rules, 'utf8'), /s3cret/)
  t.ok(await verifyPassword(written.auth.users.alice, 's3cret-pass-word'))
  t.notOk(await verifyPassword(written.auth.users.alice, 's3cret-pass-wore'))
  const valid = await runCli(['validate', '--rules', rules])
  t.match(valid.stdout, /ok/)

  t.equal((await runCli(['passwd', 'bob', '--rules', rules], { input: 'short\n' })).code, 1, 'short passwords refused')

  const started = await startCli(['start', '--rules', rules, '--log-format', 'json', '--admin-listen', 'off'])
  t.match(started.url, /^http:\/\/0\.0\.0\.0:\d+$/, 'with auth, 0.0.0.0 needs no --insecure-open')
  t.equal(await started.stop(), 0)
})

t.test('a client that resets a CONNECT while its credentials are being checked takes nothing down', async (t) => {
  const a = await startHttpUpstream()
  const proxy = await startProxy({ allow: [`127.0.0.1:${a.port}`], auth: { users: { alice: await hashPassword('a password') } } })
  t.teardown(async () => {
    await proxy.close()
    await a.close()
  })
  const socket = connect(proxy.port, '127.0.0.1')
  socket.on('error', () => undefined)
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  socket.write(`CONNECT 127.0.0.1:${a.port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('alice', 'wrong')}\r\n\r\n`)
  socket.resetAndDestroy() // while scrypt runs: the proxy's socket errors with ECONNRESET before the route has it
  await proxy.waitForLog((l) => l.message === 'decision' && l.status === 407)
  const after = await from('127.0.0.3', proxy.port, `GET http://127.0.0.1:${a.port}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${basic('alice', 'a password')}\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(after), 200, 'the proxy still answers')
})
