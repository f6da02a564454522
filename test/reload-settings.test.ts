// Settings that used to be read only at start and now follow a reload: limits.maxHeaderBytes (the
// proxy port and opened tunnels), limits.connectTimeoutMs for plain HTTP (direct and through the
// parent: undici fixes it per agent/pool, so new ones are made) and tls.upstreamCaFiles (the roots
// that verify origins behind opened tunnels).
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ProxyAgent, request } from 'undici'
import { caPaths, createCa, type Ca } from '../lib/certs/ca.js'
import { leafKey, mintLeaf } from '../lib/certs/leaf.js'
import { runCli, startCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { PYTHON, rawExchange, startBlackhole, startHttpUpstream, statusOf } from './helpers/net.js'
import { configFrom, logLine, startProxy, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))

const BIG = 'a'.repeat(3_000)

interface Fetched {
  readonly status: number
  readonly proxyStatus: string | undefined
  readonly body: string
}

/** One GET through the proxy with a fresh agent (so no tunnel opened before is reused), trusting `ca`. */
async function fetchThrough(proxyUrl: string, ca: string, url: string): Promise<Fetched> {
  const agent = new ProxyAgent({ uri: proxyUrl, requestTls: { ca } })
  try {
    const res = await request(url, { dispatcher: agent })
    const proxyStatus = res.headers['proxy-status']
    return { status: res.statusCode, proxyStatus: Array.isArray(proxyStatus) ? proxyStatus.join(', ') : proxyStatus, body: await res.body.text() }
  } finally {
    await agent.close()
  }
}

/** An HTTPS origin for api.allowed.test on loopback whose certificate `ca` signed; the paths it was asked for. */
async function originSignedBy(t: Test, ca: Ca): Promise<{ port: number; requests: string[] }> {
  const key = await leafKey()
  const requests: string[] = []
  const server = createHttpsServer({ key: key.pem, cert: mintLeaf(ca, key, { kind: 'dns', name: 'api.allowed.test' }) }, (req, res) => {
    requests.push(req.url ?? '')
    res.end(`hello ${req.method ?? ''} ${req.url ?? ''}`)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))))
  return { port: (server.address() as AddressInfo).port, requests }
}

async function started(t: Test, rules: Record<string, unknown>, options: Parameters<typeof startProxy>[1] = {}): Promise<TestProxy> {
  const proxy = await startProxy(rules, options)
  t.teardown(() => proxy.close())
  return proxy
}

t.test('maxHeaderBytes follows a reload: on the proxy port and inside opened tunnels', async (t) => {
  const origin = await startHttpUpstream('127.0.0.1')
  t.teardown(() => origin.close())
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const ca = await createCa()
  const rules = (limits: Record<string, number>): Record<string, unknown> => ({
    allow: [`127.0.0.1:${origin.port}`, { host: 'api.allowed.test', ports: [origin.port], methods: ['GET'] }],
    dns: { servers: [dns.server], timeoutMs: 2000 },
    limits,
  })
  const proxy = await started(t, rules({}), { ca })
  const plain = `GET http://127.0.0.1:${origin.port}/big HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nX-Big: ${BIG}\r\nConnection: close\r\n\r\n`
  const inTunnel = `${connectHead(`api.allowed.test:${origin.port}`)}GET /tunnel HTTP/1.1\r\nHost: api.allowed.test:${origin.port}\r\nX-Big: ${BIG}\r\nConnection: close\r\n\r\n`
  const tunnelled = (text: string): number | undefined => statusOf(text.slice(text.indexOf('\r\n\r\n') + 4))
  t.equal(statusOf((await rawExchange(proxy.port, plain)).text), 200, 'a 3 KB header passes the default 16 KB')
  t.equal(tunnelled((await rawExchange(proxy.port, inTunnel)).text), 200, 'also inside an opened tunnel')
  t.equal(origin.requests.length, 2)

  proxy.reload(rules({ maxHeaderBytes: 2_048 }))
  t.equal(statusOf((await rawExchange(proxy.port, plain)).text), 431, 'new connections get the new limit')
  const refused = await rawExchange(proxy.port, inTunnel)
  t.equal(statusOf(refused.text), 200, 'the CONNECT itself is small')
  t.equal(tunnelled(refused.text), 431, 'inside the opened tunnel the oversized request gets the proxy port\'s answer')
  t.ok(refused.closed)
  t.equal(origin.requests.length, 2, 'neither oversized request reached the origin')
})

t.test('connectTimeoutMs follows a reload for plain HTTP, direct and through the parent', { skip: PYTHON ? false : 'needs python3 for a listener that never accepts' }, async (t) => {
  const hole = await startBlackhole()
  t.teardown(() => hole.close())
  const rules = (connectTimeoutMs: number, upstream?: string): Record<string, unknown> => ({ allow: [`127.0.0.1:${hole.port}`], limits: { connectTimeoutMs }, ...(upstream ? { upstream } : {}) })
  const proxy = await started(t, rules(30_000))
  const get = `GET http://127.0.0.1:${hole.port}/ HTTP/1.1\r\nHost: 127.0.0.1:${hole.port}\r\n\r\n`
  for (const upstream of [undefined, `http://127.0.0.1:${hole.port}`]) {
    // 30 s first, then 300 ms: the second reload must apply (to the direct agent, then to the parent's pool)
    proxy.reload(rules(30_000, upstream))
    proxy.reload(rules(300, upstream))
    const begun = Date.now()
    const answer = await rawExchange(proxy.port, get)
    const elapsed = Date.now() - begun
    t.equal(statusOf(answer.text), 504, upstream ? 'through the parent' : 'direct')
    t.match(answer.text, /error=connection_timeout/)
    t.ok(elapsed >= 290 && elapsed < 5_000, `at the reloaded 300 ms (${elapsed} ms), not 30 s`)
  }
})

t.test('tls.upstreamCaFiles follows a reload: origins of opened tunnels are verified against the new roots', async (t) => {
  const originCa = await createCa({ commonName: 'origin CA' })
  const origin = await originSignedBy(t, originCa)
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const ca = await createCa()
  const rules = {
    allow: [{ host: 'api.allowed.test', ports: [origin.port], methods: ['GET'] }, `127.0.0.1:${origin.port}`], // the IP rule vouches for loopback
    dns: { servers: [dns.server], timeoutMs: 2000 },
    tls: { ports: [origin.port] },
  }
  const proxy = await started(t, rules, { ca })
  const get = (path: string): Promise<Fetched> => fetchThrough(proxy.url, ca.certPem, `https://api.allowed.test:${origin.port}${path}`)

  const before = await get('/before')
  t.equal(before.status, 502, 'an origin signed by a CA proxy-gate does not know is refused')
  t.match(before.proxyStatus, /error=tls_certificate_error/)

  proxy.proxy.reload(configFrom(rules), [originCa.certPem])
  await logLine(proxy, (l) => l.message.startsWith('tls.upstreamCaFiles changed'), 'CA change logged')
  t.same(await get('/after'), { status: 200, proxyStatus: undefined, body: 'hello GET /after' }, 'reached through the opened tunnel once its CA is a root')

  proxy.proxy.reload(configFrom(rules), [])
  t.equal((await get('/removed')).status, 502, 'and refused again once the CA is removed')
  t.same(origin.requests, ['/after'], 'only the request made while its CA was trusted reached the origin')
})

t.test('proxy-gate start reads tls.upstreamCaFiles again on reload; one it cannot read fails the reload and keeps the roots', async (t) => {
  const dir = tempDir('reload-ca')
  t.equal((await runCli(['ca', 'init', '--dir', dir])).code, 0, 'a local CA, to open tunnels with')
  const localCa = readFileSync(caPaths(dir).cert, 'utf8')
  const originCa = await createCa({ commonName: 'origin CA' })
  const origin = await originSignedBy(t, originCa)
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const rules = (files: string[]): Record<string, unknown> => ({
    allow: [{ host: 'api.allowed.test', ports: [origin.port], methods: ['GET'] }, `127.0.0.1:${origin.port}`], // the IP rule vouches for loopback
    dns: { servers: [dns.server], timeoutMs: 2000 },
    tls: { ports: [origin.port], upstreamCaFiles: files },
  })
  const file = writeJson(dir, 'rules.json', rules([]))
  const cli = await startCli(['start', '--log-format', 'json', '--rules', file, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', join(dir, 'admin-token'), '--dir', dir])
  t.teardown(() => cli.stop())
  const get = (path: string): Promise<Fetched> => fetchThrough(cli.url, localCa, `https://api.allowed.test:${origin.port}${path}`)
  const before = await get('/before')
  t.equal(before.status, 502, 'before the reload the origin is refused')
  t.match(before.proxyStatus, /error=tls_certificate_error/)

  writeFileSync(join(dir, 'origin-ca.pem'), originCa.certPem)
  writeJson(dir, 'rules.json', rules(['origin-ca.pem']))
  cli.child.kill('SIGHUP')
  await cli.waitFor((l) => typeof l.message === 'string' && l.message.startsWith('tls.upstreamCaFiles changed'))
  await cli.waitFor((l) => l.message === 'reloaded' && l.trigger === 'SIGHUP')
  t.same(await get('/after'), { status: 200, proxyStatus: undefined, body: 'hello GET /after' }, 'the file named on reload, relative to the rules file, is a root now')

  writeJson(dir, 'rules.json', rules(['missing.pem']))
  cli.child.kill('SIGHUP')
  const failed = await cli.waitFor((l) => l.message === 'reload failed: keeping the previous rules')
  t.match(JSON.stringify(failed.errors), /tls\.upstreamCaFiles: cannot read .*missing\.pem/)
  t.equal((await get('/kept')).status, 200, 'the previous roots are kept')
  t.same(origin.requests, ['/after', '/kept'])
})

t.test('a local CA that changed on disk is named in the reload line as needing a restart', async (t) => {
  const dir = tempDir('reload-localca')
  const file = writeJson(dir, 'rules.json', { allow: ['127.0.0.1:1'] })
  const cli = await startCli(['start', '--log-format', 'json', '--rules', file, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', join(dir, 'admin-token'), '--dir', dir])
  t.teardown(() => cli.stop())
  cli.child.kill('SIGHUP')
  const same = await cli.waitFor((l) => l.message === 'reloaded')
  t.equal(same.restartNeeded, undefined, 'nothing to restart for')
  t.equal((await runCli(['ca', 'init', '--dir', dir])).code, 0)
  cli.child.kill('SIGHUP')
  const changed = await cli.waitFor((l) => l.message === 'reloaded' && l !== same)
  t.same(changed.restartNeeded, ['ca'])
  t.ok(cli.lines.some((l) => typeof l.message === 'string' && l.message.startsWith('the local CA changed on disk')))
})
