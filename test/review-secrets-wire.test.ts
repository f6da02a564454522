// Review of secrets on the wire, with real sockets: a real proxy-gate, real origins (TLS ones behind
// opened tunnels) that record what they received and answer as some servers do. Each test is one
// way the value could reach a place it must not: the network in cleartext, the workload itself.
import { join } from 'node:path'
import t from 'tap'
import { armSecrets } from '../lib/secrets/values.js'
import type { Config } from '../lib/rules/config.js'
import { tempDir } from './helpers/files.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'
import { startDns } from './helpers/dns.js'
import { configFrom, logLine, startProxy } from './helpers/proxy.js'

const VALUE = 'ghp_0123456789abcdefghijklmnopqrstuvwxyzAB'

function armer(name: string): (c: Config) => Config {
  const dir = tempDir(name)
  return (c) => {
    const result = armSecrets(c, dir, join(dir, 'rules.json'), { V: VALUE })
    if (!result.ok) throw new Error(result.error)
    return result.value
  }
}

t.test('plain HTTP to a bound host on a TLS port: the value is never sent in cleartext', async (t) => {
  // a secret's host without ports means 443: `GET http://host:443/` is plain HTTP to that port
  const origin = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'api.bound.test': { A: ['127.0.0.1'] } })
  const arm = armer('review-secrets-cleartext')
  const rules = {
    allow: [`api.bound.test:${origin.port}`, `127.0.0.1:${origin.port}`],
    dns: { servers: [dns.server] },
    tls: { ports: [origin.port] },
    secrets: { GH: { from: 'env:V', hosts: [`api.bound.test:${origin.port}`] } },
  }
  const proxy = await startProxy(rules, { arm })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })
  const placeholder = arm(configFrom(rules)).policy.secrets?.[0]?.placeholder ?? ''
  const head = [`GET http://api.bound.test:${origin.port}/user HTTP/1.1`, `Host: api.bound.test:${origin.port}`, `Authorization: Bearer ${placeholder}`, '', ''].join('\r\n')
  const answer = await rawExchange(proxy.port, head, { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(answer.text), 403, 'refused: the secret\'s port is a TLS port, and this is cleartext')
  t.same(origin.requests.map((r) => r.headers.authorization), [], 'nothing went out in cleartext')
  const line = await logLine(proxy, (l) => l.reason === 'secret-misplaced', 'the refusal')
  t.match(line, { secret: 'GH', decision: 'deny', detail: /cleartext/ })
  t.notOk(JSON.stringify(proxy.logs()).includes(VALUE))
})
