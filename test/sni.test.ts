// SNI checks on CONNECT tunnels to TLS ports: the ClientHello parser on real ClientHellos (whole,
// split, re-framed, truncated), and end to end through the proxy: fronting, missing SNI,
// non-TLS bytes, IP-literal tunnels decided by their server name, timeouts. Every denial is
// checked at the upstream: it never saw a connection.
import { execFile } from 'node:child_process'
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'
import t from 'tap'
import { ProxyAgent, request } from 'undici'
import { parseClientHello } from '../lib/policy/tls-hello.js'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { NETNS_SKIP, startBannerUpstream, startCanary, startHttpsUpstream } from './helpers/net.js'
import { OPENSSL_SKIP, sClient } from './helpers/openssl.js'
import { startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

const run = promisify(execFile)

/** The exact bytes Node's TLS client sends first, captured by a plain TCP listener. */
async function captureHello(servername: string | undefined): Promise<Buffer> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const captured = new Promise<Buffer>((resolve) => {
    server.once('connection', (socket: Socket) => {
      let bytes = Buffer.alloc(0)
      socket.on('data', (d: Buffer) => {
        bytes = Buffer.concat([bytes, d])
        if (parseClientHello(bytes, 65536).kind !== 'need-more') {
          resolve(bytes)
          socket.destroy()
        }
      })
    })
  })
  const client = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }) })
  client.on('error', () => client.destroy())
  const bytes = await captured
  client.destroy()
  server.close()
  return bytes
}

/** Re-frames one ClientHello record into two records (legal TLS, rare in practice). */
function splitRecord(hello: Buffer, at: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const record = (part: Buffer) => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, part.length >> 8, part.length & 0xff]), part])
  return Buffer.concat([record(body.subarray(0, at)), record(body.subarray(at))])
}

t.test('ClientHello parser: real hellos, split and re-framed, and what is not one', async (t) => {
  const hello = await captureHello('api.allowed.test')
  t.same(parseClientHello(hello, 65536), { kind: 'hello', sni: 'api.allowed.test' })
  for (let n = 1; n < hello.length; n += 97) t.same(parseClientHello(hello.subarray(0, n), 65536), { kind: 'need-more' }, `${n} bytes: need more`)
  t.same(parseClientHello(splitRecord(hello, 40), 65536), { kind: 'hello', sni: 'api.allowed.test' }, 'handshake split across two records')
  const noSni = await captureHello(undefined)
  t.same(parseClientHello(noSni, 65536), { kind: 'hello', sni: undefined }, 'an IP host sends no SNI')
  t.same(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n'), 65536), { kind: 'not-tls' })
  t.same(parseClientHello(Buffer.from([0x05, 0x01, 0x00]), 65536), { kind: 'not-tls' }, 'SOCKS5 greeting')
  t.match(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]), 65536), { kind: 'malformed' }, 'empty record')
  t.match(parseClientHello(Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), 65536), { kind: 'malformed' }, 'record over the TLS maximum')
  const wrongType = Buffer.from(hello)
  wrongType[5] = 0x02
  t.match(parseClientHello(wrongType, 65536), { kind: 'malformed', reason: /not a ClientHello/ })
  const truncated = Buffer.from(hello)
  truncated.writeUIntBE(hello.readUIntBE(6, 3) - 60, 6, 3) // claims a shorter body than its extensions need
  t.match(parseClientHello(truncated, 65536), { kind: 'malformed' })
  t.match(parseClientHello(hello.subarray(0, 200), 100), { kind: 'malformed', reason: /no complete ClientHello in 100 bytes/ }, 'bounded')
})

interface Tunnel {
  readonly status: string
  readonly socket: Socket
}

function connectTunnel(proxy: TestProxy, target: string): Promise<Tunnel> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: proxy.port })
    socket.once('error', reject)
    socket.once('data', (d) => resolve({ status: d.toString('latin1').split('\r\n')[0] ?? '', socket }))
    socket.write(connectHead(target))
  })
}

/** TLS over an established tunnel: resolves 'ok' after a handshake, or 'closed' if the proxy cut it. */
function handshake(socket: Socket, servername: string | undefined, ca: string): Promise<'ok' | 'closed'> {
  return new Promise((resolve) => {
    const tls = tlsConnect({ socket, ca, ...(servername === undefined ? {} : { servername }), rejectUnauthorized: false })
    tls.once('secureConnect', () => {
      tls.destroy()
      resolve('ok')
    })
    tls.once('error', () => resolve('closed'))
    tls.once('close', () => resolve('closed'))
  })
}

function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())))
}

const lastDecision = (proxy: TestProxy, match: (l: LogLine) => boolean) => proxy.waitForLog((l) => l.message === 'decision' && match(l))

t.test('name targets: the SNI must be the CONNECT host', async (t) => {
  const upstream = await startHttpsUpstream('127.0.0.1', ['api.allowed.test', 'evil.test'])
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  const rules = {
    allow: [`api.allowed.test:${upstream.port}`, `127.0.0.1:${upstream.port}`],
    dns: { servers: [dns.server], timeoutMs: 2000 },
    tls: { ports: [upstream.port], helloTimeoutMs: 300 },
  }
  const proxy = await startProxy(rules)
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
    await dns.close()
  })
  const target = `api.allowed.test:${upstream.port}`

  const good = await connectTunnel(proxy, target)
  t.equal(good.status, 'HTTP/1.1 200 Connection established')
  t.equal(await handshake(good.socket, 'API.Allowed.Test.', upstream.tls.cert), 'ok', 'matching SNI (case and trailing dot aside) gets through')
  const ok = await lastDecision(proxy, (l) => l.decision === 'allow' && l.target === target)
  t.equal(ok.sni, 'API.Allowed.Test.')
  const before = upstream.connections()

  const fronted = await connectTunnel(proxy, target)
  t.equal(fronted.status, 'HTTP/1.1 200 Connection established', 'the rules allowed the CONNECT line')
  t.equal(await handshake(fronted.socket, 'evil.test', upstream.tls.cert), 'closed', 'a different SNI closes the tunnel')
  const mismatch = await lastDecision(proxy, (l) => l.reason === 'sni-mismatch')
  t.match(mismatch, { decision: 'deny', target, sni: 'evil.test', detail: /evil\.test is not the CONNECT host api\.allowed\.test \(domain fronting\)/ })

  const bare = await connectTunnel(proxy, target)
  t.equal(await handshake(bare.socket, undefined, upstream.tls.cert), 'closed', 'no SNI closes the tunnel (tls.requireSni)')
  t.match(await lastDecision(proxy, (l) => l.reason === 'sni-missing'), { decision: 'deny' })

  const plain = await connectTunnel(proxy, target)
  plain.socket.write('GET / HTTP/1.1\r\nHost: evil-tenant.test\r\n\r\n')
  await closed(plain.socket)
  t.match(await lastDecision(proxy, (l) => l.reason === 'not-tls'), { decision: 'deny' }, 'plain HTTP in a TLS tunnel is refused (case 79)')

  const silent = await connectTunnel(proxy, target)
  await closed(silent.socket)
  t.match(await lastDecision(proxy, (l) => l.reason === 'bad-client-hello'), { detail: /no TLS ClientHello within 300 ms/ })
  t.equal(upstream.connections(), before, 'no denied tunnel reached the upstream')

  // a ClientHello that arrives one byte at a time is still read
  const hello = await captureHello('api.allowed.test')
  const slow = await connectTunnel(proxy, target)
  const answered = new Promise<Buffer>((resolve) => slow.socket.once('data', resolve))
  for (const byte of hello) slow.socket.write(Buffer.from([byte]))
  t.equal((await answered)[0], 0x16, 'the upstream answered the split ClientHello with a TLS handshake record')
  slow.socket.destroy()
})

t.test('tls settings: requireSni false and allowNonTls true, and report mode', async (t) => {
  const upstream = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  let gotPlain: (text: string) => void = () => undefined
  const plainArrived = new Promise<string>((resolve) => (gotPlain = resolve))
  const sink = await startCanary('127.0.0.1', 0, (socket) => socket.once('data', (d: Buffer) => gotPlain(d.toString('latin1'))))
  const lenient = await startProxy({
    allow: [`127.0.0.1:${upstream.port}`, `127.0.0.1:${sink.port}`],
    tls: { ports: `${upstream.port},${sink.port}`, requireSni: false, allowNonTls: true },
  })
  const report = await startProxy({ mode: 'report', allow: [`127.0.0.1:${upstream.port}`], tls: { ports: [upstream.port] } })
  t.teardown(async () => {
    await lenient.close()
    await report.close()
    await upstream.close()
    await sink.close()
  })
  const noSni = await connectTunnel(lenient, `127.0.0.1:${upstream.port}`)
  t.equal(await handshake(noSni.socket, undefined, upstream.tls.cert), 'ok', 'requireSni false: no SNI is fine')
  const plain = await connectTunnel(lenient, `127.0.0.1:${sink.port}`)
  plain.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  t.equal(await plainArrived, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'allowNonTls: plain bytes reach the upstream unchanged')
  plain.socket.destroy()

  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  report.reload({ mode: 'report', allow: [`api.allowed.test:${upstream.port}`, `127.0.0.1:${upstream.port}`], dns: { servers: [dns.server] }, tls: { ports: [upstream.port] } })
  const fronted = await connectTunnel(report, `api.allowed.test:${upstream.port}`)
  t.equal(await handshake(fronted.socket, 'evil.test', upstream.tls.cert), 'ok', 'report mode lets the mismatch through')
  t.match(await lastDecision(report, (l) => l.reason === 'sni-mismatch'), { decision: 'allow', wouldDeny: true })
})

t.test('real clients: undici ProxyAgent and curl send the right SNI; openssl -servername fronting is refused', async (t) => {
  const upstream = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  const proxy = await startProxy({
    allow: [`api.allowed.test:${upstream.port}`, `127.0.0.1:${upstream.port}`],
    dns: { servers: [dns.server] },
    tls: { ports: [upstream.port] },
  })
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
    await dns.close()
  })
  const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: upstream.tls.cert, servername: 'api.allowed.test' } })
  const res = await request(`https://api.allowed.test:${upstream.port}/undici`, { dispatcher: agent })
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'hello GET /undici')
  await agent.close()

  // curl takes the CA from a process substitution, so no file is left behind
  const viaCurl = await run('bash', ['-c', `curl -s --max-time 10 --cacert <(printf '%s' "$CA") -x ${proxy.url} https://api.allowed.test:${upstream.port}/curl`], { env: { ...process.env, CA: upstream.tls.cert } })
  t.equal(viaCurl.stdout, 'hello GET /curl')

  await t.test('openssl s_client -servername evil.test through the tunnel is refused', { skip: OPENSSL_SKIP }, async (t) => {
    const before = upstream.connections()
    const fronting = await sClient(['-proxy', `127.0.0.1:${proxy.port}`, '-connect', `api.allowed.test:${upstream.port}`, '-servername', 'evil.test'])
    t.equal(fronting.code, 1, 'openssl s_client fails', { output: fronting.output })
    t.notMatch(fronting.output, /CONNECTION ESTABLISHED/, 'no handshake completed')
    t.equal(upstream.connections(), before, 'the upstream never saw the fronted connection')
    t.match(await lastDecision(proxy, (l) => l.reason === 'sni-mismatch'), { sni: 'evil.test' })
  })
})

t.test('ports not listed as TLS: a ClientHello is held until its SNI matches; server-first protocols still work', async (t) => {
  const upstream = await startHttpsUpstream('127.0.0.1', ['api.allowed.test', 'evil.test'])
  const sink = await startCanary('127.0.0.1')
  const ssh = await startBannerUpstream('127.0.0.1', 'SSH-2.0-OpenSSH_9.6\r\n')
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  // tls.ports stays the default (443): none of these ports is a TLS port
  const proxy = await startProxy({ allow: [`api.allowed.test:${upstream.port}`, `api.allowed.test:${sink.port}`, `api.allowed.test:${ssh.port}`, `127.0.0.1:${upstream.port}`, `127.0.0.1:${sink.port}`, `127.0.0.1:${ssh.port}`], dns: { servers: [dns.server] }, tls: { helloTimeoutMs: 300 } })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([upstream.close(), sink.close(), ssh.close(), dns.close()])
  })

  const fronted = await connectTunnel(proxy, `api.allowed.test:${sink.port}`)
  t.equal(fronted.status, 'HTTP/1.1 200 Connection established', 'dialled first, as before')
  t.equal(await handshake(fronted.socket, 'evil.test', upstream.tls.cert), 'closed', 'a different SNI closes the tunnel')
  t.match(await lastDecision(proxy, (l) => l.reason === 'sni-mismatch'), { decision: 'deny', target: `api.allowed.test:${sink.port}`, sni: 'evil.test', detail: /evil\.test is not the CONNECT host api\.allowed\.test \(domain fronting\)/ })
  const bare = await connectTunnel(proxy, `api.allowed.test:${sink.port}`)
  t.equal(await handshake(bare.socket, undefined, upstream.tls.cert), 'closed', 'no SNI closes it too (tls.requireSni)')
  t.match(await lastDecision(proxy, (l) => l.reason === 'sni-missing'), { decision: 'deny' })
  t.equal(sink.received(), '', 'no refused ClientHello reached the upstream')

  // the ClientHello sent along with the CONNECT line, before the 200
  const hello = await captureHello('evil.test')
  const early = netConnect({ host: '127.0.0.1', port: proxy.port })
  early.on('error', () => early.destroy())
  early.write(Buffer.concat([Buffer.from(connectHead(`api.allowed.test:${sink.port}`)), hello]))
  await closed(early)
  t.equal(sink.received(), '', 'nor one that came with the CONNECT')

  const good = await connectTunnel(proxy, `api.allowed.test:${upstream.port}`)
  t.equal(await handshake(good.socket, 'api.allowed.test', upstream.tls.cert), 'ok', 'the CONNECT host as SNI gets through')
  const viaCurl = await run('bash', ['-c', `curl -s --max-time 10 --cacert <(printf '%s' "$CA") -x ${proxy.url} https://api.allowed.test:${upstream.port}/curl`], { env: { ...process.env, CA: upstream.tls.cert } })
  t.equal(viaCurl.stdout, 'hello GET /curl', 'curl to https on a port not listed as TLS')

  await t.test('openssl s_client -servername evil.test on a port not listed as TLS is refused', { skip: OPENSSL_SKIP }, async (t) => {
    const fronting = await sClient(['-proxy', `127.0.0.1:${proxy.port}`, '-connect', `api.allowed.test:${upstream.port}`, '-servername', 'evil.test'])
    t.equal(fronting.code, 1, 'openssl s_client fails', { output: fronting.output })
    t.notMatch(fronting.output, /CONNECTION ESTABLISHED/, 'no handshake completed')
    t.match(await lastDecision(proxy, (l) => l.reason === 'sni-mismatch' && l.target === `api.allowed.test:${upstream.port}`), { sni: 'evil.test' })
  })

  // server-first: the banner reaches the client before it sends a byte, and plain bytes pass as before
  const session = netConnect({ host: '127.0.0.1', port: proxy.port })
  let seen = ''
  let arrived = (): void => undefined
  session.on('data', (d: Buffer) => {
    seen += d.toString('latin1')
    arrived()
  })
  const waitFor = (text: string) =>
    new Promise<void>((resolve) => {
      arrived = () => {
        if (seen.includes(text)) resolve()
      }
      arrived()
    })
  session.write(connectHead(`api.allowed.test:${ssh.port}`))
  await waitFor('SSH-2.0-OpenSSH_9.6\r\n')
  t.match(seen, /^HTTP\/1\.1 200 Connection established\r\n\r\nSSH-2\.0-OpenSSH_9\.6\r\n$/, 'the banner came before the client sent anything')
  session.write('SSH-2.0-client\r\n')
  await waitFor('got: SSH-2.0-client\r\n')
  t.pass('the client\'s (non-TLS) first bytes reached the origin')
  session.destroy()
})

t.test('IP-literal CONNECTs on TLS ports are decided by the SNI name and its checked addresses', { skip: NETNS_SKIP }, async (t) => {
  const upstream = await startHttpsUpstream('11.22.33.44', ['secure.example.com'])
  const other = await startCanary('11.22.33.45', upstream.port)
  const dns = await startDns({
    'secure.example.com': { A: ['11.22.33.44'] },
    'elsewhere.example.com': { A: ['11.22.33.45'] },
    'inside.example.com': { A: ['10.0.0.1'] },
  })
  const proxy = await startProxy({
    allow: [`secure.example.com:${upstream.port}`, `elsewhere.example.com:${upstream.port}`, `inside.example.com:${upstream.port}`],
    dns: { servers: [dns.server] },
    tls: { ports: [upstream.port] },
  })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([upstream.close(), other.close(), dns.close()])
  })
  const target = `11.22.33.44:${upstream.port}`

  const byName = await connectTunnel(proxy, target)
  t.equal(byName.status, 'HTTP/1.1 200 Connection established', 'no IP rule, but the decision waits for the SNI')
  t.equal(await handshake(byName.socket, 'secure.example.com', upstream.tls.cert), 'ok')
  t.match(await lastDecision(proxy, (l) => l.decision === 'allow' && l.sni === 'secure.example.com'), {
    target,
    rule: `allow[0] secure.example.com:${upstream.port}`,
    chosen: '11.22.33.44',
    detail: /TLS server name secure\.example\.com for 11\.22\.33\.44/,
  })
  const count = upstream.connections()

  const wrongIp = await connectTunnel(proxy, target)
  t.equal(await handshake(wrongIp.socket, 'elsewhere.example.com', upstream.tls.cert), 'closed', 'an allowed name that does not resolve to this IP')
  t.match(await lastDecision(proxy, (l) => l.reason === 'sni-address-mismatch'), { detail: /is not an address of elsewhere\.example\.com/ })

  const unlisted = await connectTunnel(proxy, target)
  t.equal(await handshake(unlisted.socket, 'unlisted.example.com', upstream.tls.cert), 'closed')
  t.match(await lastDecision(proxy, (l) => l.sni === 'unlisted.example.com'), { decision: 'deny', reason: 'no-rule' })
  t.equal(dns.queries('unlisted.example.com'), 0, 'a server name no rule allows is never resolved')

  const guarded = await connectTunnel(proxy, target)
  t.equal(await handshake(guarded.socket, 'inside.example.com', upstream.tls.cert), 'closed')
  t.match(await lastDecision(proxy, (l) => l.sni === 'inside.example.com'), { decision: 'deny', reason: 'address-prohibited' })

  const anonymous = await connectTunnel(proxy, target)
  t.equal(await handshake(anonymous.socket, undefined, upstream.tls.cert), 'closed')
  t.match(await lastDecision(proxy, (l) => l.reason === 'sni-missing' && l.target === target), { decision: 'deny' })

  const metadata = await connectTunnel(proxy, `169.254.169.254:${upstream.port}`)
  t.match(metadata.status, /^HTTP\/1\.1 403/, 'a special address is refused before the 200, SNI or not')

  t.equal(upstream.connections(), count, 'none of the refused tunnels reached 11.22.33.44')
  t.equal(other.connections(), 0, 'nothing reached 11.22.33.45')
})
