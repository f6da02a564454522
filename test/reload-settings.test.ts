// Settings that used to be read only at start and now follow a reload: limits.maxHeaderBytes (the
// proxy port and opened tunnels), limits.connectTimeoutMs for plain HTTP (direct and through the
// parent: undici fixes it per agent/pool, so new ones are made) and tls.upstreamCaFiles (the roots
// that verify origins behind opened tunnels).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ProxyAgent, request } from 'undici'
import { createCa } from '../lib/certs/ca.js'
import { runCli, startCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { PYTHON, rawExchange, startBlackhole, startHttpsUpstream, startHttpUpstream, statusOf } from './helpers/net.js'
import { configFrom, logLine, startProxy, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))

const BIG = 'a'.repeat(3_000)

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
  t.equal(tunnelled(refused.text), undefined, 'the opened tunnel closes on the oversized request')
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
  const https = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  t.teardown(() => https.close())
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const ca = await createCa()
  const rules = {
    allow: [{ host: 'api.allowed.test', ports: [https.port], methods: ['GET'] }, `127.0.0.1:${https.port}`],
    dns: { servers: [dns.server], timeoutMs: 2000 },
    tls: { ports: [https.port] },
  }
  const proxy = await started(t, rules, { ca })
  const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: ca.certPem } })
  t.teardown(() => agent.destroy())
  const url = `https://api.allowed.test:${https.port}/ca`
  const before = await request(url, { dispatcher: agent })
  t.equal(before.statusCode, 502, 'its self-signed certificate is not trusted yet')
  t.match(before.headers['proxy-status'], /error=tls_certificate_error/)
  await before.body.text()

  proxy.proxy.reload(configFrom(rules), [https.tls.cert])
  await logLine(proxy, (l) => l.message.startsWith('tls.upstreamCaFiles changed'), 'CA change logged')
  await agent.close()
  const fresh = new ProxyAgent({ uri: proxy.url, requestTls: { ca: ca.certPem } })
  t.teardown(() => fresh.destroy())
  const after = await request(url, { dispatcher: fresh })
  t.equal(after.statusCode, 200, 'trusted after the reload')
  t.equal(await after.body.text(), 'hello GET /ca')

  proxy.proxy.reload(configFrom(rules), [])
  await fresh.close()
  const again = new ProxyAgent({ uri: proxy.url, requestTls: { ca: ca.certPem } })
  t.teardown(() => again.destroy())
  const removed = await request(url, { dispatcher: again })
  t.equal(removed.statusCode, 502, 'and no longer once it is removed')
  await removed.body.text()
})

t.test('proxy-gate start reads tls.upstreamCaFiles again on reload; one it cannot read fails the reload', async (t) => {
  const dir = tempDir('reload-ca')
  const https = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  t.teardown(() => https.close())
  const rules = (files: string[]): Record<string, unknown> => ({ allow: [`127.0.0.1:${https.port}`], tls: { upstreamCaFiles: files } })
  const file = writeJson(dir, 'rules.json', rules([]))
  const cli = await startCli(['start', '--log-format', 'json', '--rules', file, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', join(dir, 'admin-token'), '--dir', dir])
  t.teardown(() => cli.stop())
  writeFileSync(join(dir, 'origin.pem'), https.tls.cert)
  writeJson(dir, 'rules.json', rules(['origin.pem']))
  cli.child.kill('SIGHUP')
  await cli.waitFor((l) => typeof l.message === 'string' && l.message.startsWith('tls.upstreamCaFiles changed'))
  await cli.waitFor((l) => l.message === 'reloaded' && l.trigger === 'SIGHUP')
  t.pass('the file named on reload is read, relative to the rules file')

  writeJson(dir, 'rules.json', rules(['missing.pem']))
  cli.child.kill('SIGHUP')
  const failed = await cli.waitFor((l) => l.message === 'reload failed: keeping the previous rules')
  t.match(JSON.stringify(failed.errors), /tls\.upstreamCaFiles: cannot read .*missing\.pem/)
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
