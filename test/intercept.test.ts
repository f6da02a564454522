// Rules with methods/paths: plain HTTP requests are checked directly; CONNECT tunnels are opened
// (TLS terminated with a leaf from the local CA) and each request inside is checked, then sent on
// over verified TLS to the checked address. Clients: curl with --cacert, undici ProxyAgent, ws,
// and raw TLS for what a normal client would never send.
import { execFile } from 'node:child_process'
import { createServer as createHttpsServer } from 'node:https'
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { ProxyAgent, request } from 'undici'
import { WebSocket, WebSocketServer } from 'ws'
import { createCa, type Ca } from '../lib/certs/ca.js'
import { startDns, type TestDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { completeResponses, NETNS_SKIP, selfSigned, startHttpUpstream, startHttpsUpstream, type Upstream } from './helpers/net.js'
import { startProxy, type TestProxy } from './helpers/proxy.js'

const run = promisify(execFile)

interface Setup {
  ca: Ca
  https: Upstream & { tls: { cert: string } }
  http: Upstream
  dns: TestDns
  proxy: TestProxy
}

const ruleFor = (port: number) => ({ host: 'api.allowed.test', ports: [port], methods: ['GET', 'HEAD'], paths: ['/repos/our-org/**', '/meta'] })

async function setup(t: Test, host = '127.0.0.1', limits: Record<string, number> = {}): Promise<Setup> {
  const ca = await createCa()
  const https = await startHttpsUpstream(host, ['api.allowed.test'])
  const http = await startHttpUpstream(host)
  const dns = await startDns({ 'api.allowed.test': { A: [host] } })
  const proxy = await startProxy(
    {
      allow: [ruleFor(https.port), ruleFor(http.port), ...(host === '127.0.0.1' ? [`127.0.0.1:${https.port}`, `127.0.0.1:${http.port}`] : [])],
      dns: { servers: [dns.server] },
      tls: { ports: [https.port] },
      limits,
    },
    { ca, upstreamCa: [https.tls.cert] },
  )
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([https.close(), http.close(), dns.close()])
  })
  return { ca, https, http, dns, proxy }
}

async function curl(args: string[], ca: string): Promise<{ status: number; text: string; headers: string }> {
  const { stdout } = await run('bash', ['-c', `curl -s -i --max-time 10 --cacert <(printf '%s' "$CA") "$@"`, 'curl', ...args], { env: { ...process.env, CA: ca } }).catch((e: unknown) => ({ stdout: (e as { stdout: string }).stdout }))
  const blocks = stdout.split('\r\n\r\n')
  const last = blocks.findLastIndex((b) => /^HTTP\/\S+ \d{3}/.test(b) && !/^HTTP\/\S+ 200 Connection established/.test(b))
  const head = blocks[last] ?? ''
  return { status: Number(/^HTTP\/\S+ (\d+)/.exec(head)?.[1] ?? 0), headers: head, text: blocks.slice(last + 1).join('\r\n\r\n') }
}

/** CONNECT, then TLS to the proxy-minted leaf, trusting only the local CA. */
function openTls(proxy: TestProxy, target: string, servername: string, ca: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const raw: Socket = netConnect({ host: '127.0.0.1', port: proxy.port })
    raw.once('error', reject)
    raw.once('data', (d) => {
      if (!d.toString().startsWith('HTTP/1.1 200')) return reject(new Error(d.toString()))
      const tls = tlsConnect({ socket: raw, servername, ca })
      tls.once('secureConnect', () => resolve(tls))
      tls.once('error', reject)
    })
    raw.write(connectHead(target))
  })
}

function exchange(socket: TLSSocket, text: string, responses: number): Promise<string> {
  return new Promise((resolve) => {
    let got = ''
    const onData = (d: Buffer) => {
      got += d.toString('latin1')
      if (completeResponses(got) >= responses) {
        socket.off('data', onData)
        resolve(got)
      }
    }
    socket.on('data', onData)
    socket.write(text)
  })
}

t.test('an opened TLS tunnel allows the rule\'s methods and paths and refuses the rest, seen by curl', async (t) => {
  const { ca, https, proxy } = await setup(t)
  const base = `https://api.allowed.test:${https.port}`
  const ok = await curl(['-x', proxy.url, `${base}/repos/our-org/tool/issues?state=open`], ca.certPem)
  t.equal(ok.status, 200)
  t.equal(ok.text, 'hello GET /repos/our-org/tool/issues?state=open', 'query string passed on unchanged')
  t.equal(https.requests.at(-1)?.headers.host, `api.allowed.test:${https.port}`)

  const other = await curl(['-x', proxy.url, `${base}/repos/someone-else/x`], ca.certPem)
  t.equal(other.status, 403, 'a path outside the rule')
  t.match(other.headers, /Proxy-Status: proxy-gate; error=http_request_denied; details="GET \/repos\/someone-else\/x is not allowed/)
  t.match(other.text, /"methods":\["GET"\],"paths":\["\/repos\/someone-else\/x"\]/, 'the body suggests the rule that would allow it')

  const post = await curl(['-x', proxy.url, '-X', 'POST', '-d', 'x=1', `${base}/repos/our-org/tool`], ca.certPem)
  t.equal(post.status, 403, 'a method outside the rule')

  const dots = await curl(['-x', proxy.url, '--path-as-is', `${base}/repos/our-org/../../admin`], ca.certPem)
  t.equal(dots.status, 403, 'dot segments are refused, not resolved')
  t.match(dots.headers, /dot segments/)
  const encoded = await curl(['-x', proxy.url, `${base}/repos/our-org%2F..%2F..%2Fadmin`], ca.certPem)
  t.equal(encoded.status, 403, 'encoded slashes are refused')
  const decoded = await curl(['-x', proxy.url, `${base}/repos/our-%6Frg/x`], ca.certPem)
  t.equal(decoded.status, 200, 'percent-encoded ordinary characters are matched decoded')

  t.equal(https.requests.filter((r) => !r.url.startsWith('/repos/our-')).length, 0, 'no refused request reached the origin')
  const log = proxy.logs().find((l) => l.message === 'decision' && l.reason === 'request-not-allowed')
  t.match(log, { intercepted: true, path: '/repos/someone-else/x', method: 'GET', decision: 'deny' })
})

t.test('inside one opened connection: keep-alive, Host binding, and each request decided', async (t) => {
  const { ca, https, proxy } = await setup(t)
  const target = `api.allowed.test:${https.port}`
  const tls = await openTls(proxy, target, 'api.allowed.test', ca.certPem)
  t.teardown(() => tls.destroy())
  t.equal(tls.alpnProtocol, false, 'no ALPN offered by this client; HTTP/1.1 spoken')
  const text = await exchange(
    tls,
    `GET /meta HTTP/1.1\r\nHost: ${target}\r\n\r\n` + `GET /admin HTTP/1.1\r\nHost: ${target}\r\n\r\n` + `GET /meta HTTP/1.1\r\nHost: evil.test\r\n\r\n` + `GET /repos/our-org/a HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n`,
    4,
  )
  const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))
  t.same(statuses, [200, 403, 403, 200], text)
  t.match(text, `Proxy-Status: proxy-gate; error=http_request_denied; details="Host \\"evil.test\\" in a tunnel to ${target}: requests must name the tunnel's host"`, 'the Host mismatch is explained')
  t.same(https.requests.map((r) => r.url), ['/meta', '/repos/our-org/a'])
})

t.test('undici ProxyAgent trusts the local CA and gets through; an origin that does not verify is a 502', async (t) => {
  const { ca, https, proxy } = await setup(t)
  const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: ca.certPem } })
  t.teardown(() => agent.close())
  const res = await request(`https://api.allowed.test:${https.port}/repos/our-org/x`, { dispatcher: agent })
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'hello GET /repos/our-org/x')

  const stranger = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  t.teardown(() => stranger.close())
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  proxy.reload({ allow: [ruleFor(stranger.port), `127.0.0.1:${stranger.port}`], dns: { servers: [dns.server] }, tls: { ports: [stranger.port] } })
  const bad = await request(`https://api.allowed.test:${stranger.port}/meta`, { dispatcher: agent })
  t.equal(bad.statusCode, 502)
  t.match(bad.headers['proxy-status'], /error=tls_certificate_error/)
  await bad.body.text()
  t.equal(stranger.requests.length, 0)
})

t.test('WebSocket inside an opened tunnel (wss) is checked and relayed', async (t) => {
  const { ca } = await setup(t)
  const tlsMaterial = selfSigned(['api.allowed.test'])
  const server = createHttpsServer({ cert: tlsMaterial.cert, key: tlsMaterial.key })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo: ${(m as Buffer).toString()}`)))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate()
    server.close()
    await dns.close()
  })
  const wsProxy = await startProxy(
    { allow: [{ host: 'api.allowed.test', ports: [port], methods: ['GET'], paths: ['/socket'] }, `127.0.0.1:${port}`], dns: { servers: [dns.server] }, tls: { ports: [port] } },
    { ca, upstreamCa: [tlsMaterial.cert] },
  )
  t.teardown(() => wsProxy.close())
  const connectWs = async (path: string): Promise<string> => {
    const tls = await openTls(wsProxy, `api.allowed.test:${port}`, 'api.allowed.test', ca.certPem)
    return new Promise((resolve) => {
      const ws = new WebSocket(`wss://api.allowed.test:${port}${path}`, { createConnection: () => tls })
      ws.on('open', () => ws.send('hi'))
      ws.on('message', (m) => {
        resolve((m as Buffer).toString())
        ws.close()
      })
      ws.on('unexpected-response', (_req, res) => resolve(`status ${res.statusCode ?? 0}`))
      ws.on('error', () => resolve('error'))
    })
  }
  t.equal(await connectWs('/socket'), 'echo: hi')
  t.equal(await connectWs('/other'), 'status 403')
})

t.test('plain HTTP: absolute-form requests and CONNECT to a non-TLS port are checked the same way', async (t) => {
  const { ca, http, proxy } = await setup(t)
  const base = `http://api.allowed.test:${http.port}`
  const ok = await curl(['-x', proxy.url, `${base}/repos/our-org/x`], ca.certPem)
  t.equal(ok.status, 200)
  const no = await curl(['-x', proxy.url, `${base}/elsewhere`], ca.certPem)
  t.equal(no.status, 403)
  t.match(no.headers, /error=http_request_denied/)
  const tunnelled = await curl(['-x', proxy.url, '--proxytunnel', `${base}/repos/our-org/y`], ca.certPem)
  t.equal(tunnelled.status, 200, 'inside a CONNECT tunnel to a plain port')
  const tunnelledNo = await curl(['-x', proxy.url, '--proxytunnel', `${base}/elsewhere`], ca.certPem)
  t.equal(tunnelledNo.status, 403)
  t.same(http.requests.map((r) => r.url), ['/repos/our-org/x', '/repos/our-org/y'])
})

t.test('the opened tunnel dials the checked address and sends the SNI upstream', { skip: NETNS_SKIP }, async (t) => {
  const { ca, https, dns, proxy } = await setup(t, '11.22.33.44')
  const res = await curl(['-x', proxy.url, `https://api.allowed.test:${https.port}/meta`], ca.certPem)
  t.equal(res.status, 200)
  t.equal(dns.queries('api.allowed.test') > 0, true)
  t.match(proxy.logs().find((l) => l.message === 'decision' && l.path === '/meta'), { chosen: '11.22.33.44', intercepted: true })
})

t.test('an opened tunnel is closed at its maximum lifetime, like any tunnel', async (t) => {
  const { http, proxy } = await setup(t, '127.0.0.1', { tunnelMaxLifetimeMs: 300 })
  const socket = netConnect(proxy.port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  let received = ''
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')))
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.write(connectHead(`api.allowed.test:${http.port}`))
  socket.write(`GET /meta HTTP/1.1\r\nHost: api.allowed.test:${http.port}\r\n\r\n`)
  const guard = setTimeout(() => socket.destroy(new Error('still open')), 5_000)
  await closed
  clearTimeout(guard)
  t.match(received, /^HTTP\/1\.1 200 Connection established\r\n\r\nHTTP\/1\.1 200 /, 'opened, and the keep-alive request answered')
  const line = await proxy.waitForLog((l) => l.message === 'closed' && l.intercepted === true)
  t.ok(Number(line.durationMs) >= 300, `closed after its lifetime (${String(line.durationMs)} ms)`)
})

t.test('a methods/paths rule on a port not listed as TLS: HTTPS is opened (first byte 0x16), plain HTTP is checked as is', async (t) => {
  const ca = await createCa()
  const https = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  const http = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  // tls.ports stays the default (443)
  const proxy = await startProxy({ allow: [ruleFor(https.port), ruleFor(http.port), `127.0.0.1:${https.port}`, `127.0.0.1:${http.port}`], dns: { servers: [dns.server] } }, { ca, upstreamCa: [https.tls.cert] })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([https.close(), http.close(), dns.close()])
  })
  const ok = await curl(['-x', proxy.url, `https://api.allowed.test:${https.port}/repos/our-org/x`], ca.certPem)
  t.equal(ok.status, 200, 'curl over TLS through an opened tunnel on a port not listed as TLS')
  t.equal(ok.text, 'hello GET /repos/our-org/x')
  const no = await curl(['-x', proxy.url, `https://api.allowed.test:${https.port}/elsewhere`], ca.certPem)
  t.equal(no.status, 403, 'a path outside the rule is refused inside the tunnel')
  const plain = await curl(['-x', proxy.url, '--proxytunnel', `http://api.allowed.test:${http.port}/meta`], ca.certPem)
  t.equal(plain.status, 200, 'plain HTTP through a CONNECT tunnel still works')
  t.equal(https.requests.filter((r) => r.url === '/elsewhere').length, 0, 'the refused request never reached the origin')
})
