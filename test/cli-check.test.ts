// `proxy-gate check` decides as the proxy does: methods and paths of a URL, the rule even when DNS
// fails or the guard refuses, and internationalised names as rules take them.
import t from 'tap'
import { runCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { rulesFile } from './helpers/files.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

const LIMITED = { host: 'api.test', ports: [18443, 18080], methods: ['GET'], paths: ['/yes/**'] }

t.test('check: a URL is one request, decided by method and path where rules limit them', async (t) => {
  const dns = await startDns({ 'api.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const file = rulesFile({ allow: [LIMITED, '127.0.0.1:18443', '127.0.0.1:18080'], dns: { servers: [dns.server], timeoutMs: 2000 } })
  const no = await runCli(['check', 'https://api.test:18443/no', '--rules', file])
  t.equal(no.code, 1, no.stdout)
  t.match(no.stdout, /request: +GET \/no/)
  t.match(no.stdout, /decision: deny/)
  t.match(no.stdout, /why: +GET \/no is not allowed on api\.test:18443/)
  t.match(no.stdout, /rule: +allow\[0\] /)
  const yes = await runCli(['check', 'https://api.test:18443/yes/x', '--rules', file])
  t.equal(yes.code, 0, yes.stdout)
  t.match(yes.stdout, /why: +GET \/yes\/x allowed by allow\[0\]/)
  const post = await runCli(['check', 'http://api.test:18080/yes/x', '--method', 'post', '--rules', file])
  t.equal(post.code, 1, post.stdout)
  t.match(post.stdout, /request: +POST \/yes\/x/)
  const root = await runCli(['check', 'https://api.test:18443', '--rules', file])
  t.equal(root.code, 1, 'a URL without a path asks for /')
  t.match(root.stdout, /request: +GET \/\n/)
  const tunnel = await runCli(['check', 'api.test:18443', '--rules', file])
  t.equal(tunnel.code, 0, 'the tunnel itself is allowed')
  t.match(tunnel.stdout, /requests: every rule for this host limits methods or paths/)
  const methodOnTunnel = await runCli(['check', 'api.test:18443', '--method', 'GET', '--rules', file])
  t.equal(methodOnTunnel.code, 2)
  t.match(methodOnTunnel.stderr, /--method needs a URL/)
  const badMethod = await runCli(['check', 'https://api.test:18443/yes/x', '--method', 'G T', '--rules', file])
  t.equal(badMethod.code, 2)
  const scheme = await runCli(['check', 'ftp://api.test/x', '--rules', file])
  t.equal(scheme.code, 2)
  t.match(scheme.stderr, /unsupported scheme "ftp:"/)
})

t.test('check: the rule is named when DNS fails and when the guard refuses the addresses', async (t) => {
  const dns = await startDns({ 'inside.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const file = rulesFile({ allow: ['nx.test:443', 'inside.test:443'], dns: { servers: [dns.server], timeoutMs: 2000 } })
  const nx = await runCli(['check', 'nx.test:443', '--rules', file])
  t.equal(nx.code, 2)
  t.match(nx.stdout, /rule: +allow\[0\] nx\.test:443 \(its name could not be resolved\)/)
  const guarded = await runCli(['check', 'inside.test:443', '--rules', file])
  t.equal(guarded.code, 1)
  t.match(guarded.stdout, /rule: +allow\[1\] inside\.test:443 \(the address guard refused it\)/)
  const unknown = await runCli(['check', 'other.test:443', '--rules', file])
  t.match(unknown.stdout, /rule: +\(none\)/)
})

t.test('check: internationalised names, as rules accept them (punycode)', async (t) => {
  const dns = await startDns({ 'xn--bcher-kva.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const file = rulesFile({ allow: ['bücher.test:443', '127.0.0.1:443'], dns: { servers: [dns.server], timeoutMs: 2000 } })
  for (const target of ['bücher.test:443', 'https://bücher.test/x', 'BÜCHER.test:443']) {
    const res = await runCli(['check', target, '--rules', file])
    t.equal(res.code, 0, `${target}: ${res.stdout}${res.stderr}`)
    t.match(res.stdout, /target: +xn--bcher-kva\.test:443/)
    t.match(res.stdout, /rule: +allow\[0\] bücher\.test:443\n/)
  }
  const invisible = await runCli(['check', 'b\u00adücher.test:443', '--rules', file])
  t.equal(invisible.code, 2, 'a soft hyphen IDNA would drop is refused, as in rules')
  t.match(invisible.stderr, /not a valid internationalised domain name/)
})

t.test('check and the proxy agree on each request: the same rules, the same verdicts', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const dns = await startDns({ 'api.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const rules = { allow: [{ host: 'api.test', ports: [upstream.port], methods: ['GET'], paths: ['/yes/**'] }, `127.0.0.1:${upstream.port}`], dns: { servers: [dns.server], timeoutMs: 2000 } }
  const proxy = await startProxy(rules)
  t.teardown(() => proxy.close())
  const file = rulesFile(rules)
  const requests: [string, string][] = [['GET', '/no'], ['GET', '/yes/x'], ['POST', '/yes/x'], ['GET', '/yes/../no']]
  for (const [method, path] of requests) {
    const url = `http://api.test:${upstream.port}${path}`
    const answer = await rawExchange(proxy.port, `${method} ${url} HTTP/1.1\r\nHost: api.test:${upstream.port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    const status = statusOf(answer.text)
    const checked = await runCli(['check', url, '--method', method, '--rules', file])
    t.equal(checked.code, status === 403 ? 1 : 0, `${method} ${path}: the proxy answered ${status}, check said ${checked.code === 0 ? 'allow' : 'deny'}`)
  }
})
