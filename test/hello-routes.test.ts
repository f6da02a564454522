// The ClientHello in every flow, end to end through a real proxy-gate to a real TLS origin that
// records the server name of every ClientHello it reads:
//   finding 1: an empty TLS record, then a real ClientHello for evil.test (OpenSSL skips the empty
//   record). On a port not listed as TLS it was relayed as "non-TLS bytes": refused now, on every port
//   and flow, and the origin never sees evil.test.
//   finding 3: a real ClientHello split over several TCP writes on a port not listed as TLS was refused
//   after tls.helloTimeoutMs (the held socket stayed paused): read now, in every flow.
import { connect as netConnect, type Socket } from 'node:net'
import { createServer as createHttpsServer } from 'node:https'
import { Duplex } from 'node:stream'
import { connect as tlsConnect, createSecureContext, type SecureContext } from 'node:tls'
import t, { type Test } from 'tap'
import { createCa } from '../lib/certs/ca.js'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { captureHello, EXT, helloMessage, helloParts, record, serverNameData, sslv2Hello } from './helpers/client-hello.js'
import { NETNS_SKIP, rawSession, selfSigned, startCanary, type TlsMaterial } from './helpers/net.js'
import { logLine, startProxy, type StartOptions, type TestProxy } from './helpers/proxy.js'

const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n'
const SANDBOX = '127.80.0.1'

interface Origin {
  readonly port: number
  readonly tls: TlsMaterial
  /** the server name of every ClientHello it read, in order */
  readonly names: string[]
  close(): Promise<void>
}

/** An HTTPS origin for origin.test and evil.test that records each server name it is asked for. */
async function startOrigin(host: string): Promise<Origin> {
  const tls = selfSigned(['origin.test', 'evil.test'], [host])
  const context: SecureContext = createSecureContext(tls)
  const names: string[] = []
  const server = createHttpsServer(
    {
      ...tls,
      SNICallback: (name, done) => {
        names.push(name)
        done(null, context)
      },
    },
    (req, res) => res.end(`origin ${req.url ?? ''}`),
  )
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  return { port, tls, names, close: () => new Promise((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) }
}

/** Finding 1's bytes: an empty handshake record, then Node's ClientHello for evil.test. */
async function frontedHello(): Promise<Buffer> {
  return Buffer.concat([Buffer.from('1603010000', 'hex'), await captureHello({ servername: 'evil.test' })])
}

/** The next turn of the event loop: whatever was written before it has been read by the (in-process) proxy. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/**
 * A stream for a TLS client over `socket` that sends its first write (the ClientHello) in pieces,
 * each written in a turn of its own, `before` ahead of the first one; `skip` (what the proxy answers
 * first) is taken off what comes back before the TLS client sees it.
 */
function splitting(socket: Socket, cuts: readonly number[], before = '', skip = ''): Duplex {
  let first = true
  let pending = skip
  const duplex = new Duplex({
    write(chunk: Buffer, _encoding, done) {
      if (!first) return void socket.write(chunk, () => done())
      first = false
      const pieces = [...cuts, chunk.length].map((end, i, all) => chunk.subarray(i === 0 ? 0 : (all[i - 1] ?? 0), end))
      pieces[0] = Buffer.concat([Buffer.from(before, 'latin1'), pieces[0] ?? Buffer.alloc(0)])
      void (async () => {
        for (const piece of pieces) {
          await new Promise<void>((written) => socket.write(piece, () => written()))
          await turn()
        }
        done()
      })()
    },
    read() {},
    final(done) {
      socket.end()
      done()
    },
    destroy(error, done) {
      socket.destroy()
      done(error)
    },
  })
  socket.on('data', (d: Buffer) => {
    let data = d
    if (pending.length > 0) {
      const taken = Math.min(pending.length, data.length)
      pending = pending.slice(taken)
      data = data.subarray(taken)
    }
    if (data.length > 0) duplex.push(data)
  })
  socket.on('end', () => duplex.push(null))
  socket.on('error', () => duplex.destroy())
  socket.on('close', () => duplex.destroy())
  return duplex
}

/** A TLS handshake and one GET over `stream`: the response body, or 'closed' when the proxy cut it. */
function getOverTls(stream: Duplex, servername: string, ca: string): Promise<string> {
  return new Promise((resolve) => {
    const tls = tlsConnect({ socket: stream, servername, ca })
    let body = ''
    tls.once('secureConnect', () => tls.write(`GET /split HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`))
    tls.on('data', (d: Buffer) => (body += d.toString('latin1')))
    const done = (): void => resolve(body === '' ? 'closed' : body.slice(body.indexOf('\r\n\r\n') + 4))
    tls.once('error', () => resolve('closed'))
    tls.once('end', done)
    tls.once('close', done)
  })
}

/** A CONNECT answered with the 200: the raw socket. */
function connectTunnel(proxy: TestProxy, target: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: proxy.port })
    socket.once('error', reject)
    socket.once('data', (d: Buffer) => (d.toString('latin1') === ESTABLISHED ? resolve(socket) : reject(new Error(d.toString('latin1')))))
    socket.write(connectHead(target))
  })
}

/**
 * Sends `bytes` on a fresh connection (in a tunnel to `target` when given: after its 200, or with the
 * CONNECT in one write) and waits until the proxy closes it or answers with more than a 200.
 */
async function sendRaw(port: number, host: string, bytes: Buffer, tunnel?: { target: string; withConnect: boolean }): Promise<{ closed: boolean; answer: string }> {
  const session = await rawSession(port, host)
  if (tunnel?.withConnect) await session.send(Buffer.concat([Buffer.from(connectHead(tunnel.target), 'latin1'), bytes]))
  else {
    if (tunnel) {
      await session.send(connectHead(tunnel.target))
      await session.waitFor((got) => got === ESTABLISHED)
    }
    await session.send(bytes)
  }
  const answer = (await session.waitFor((got) => got.replace(ESTABLISHED, '') !== '')).replace(ESTABLISHED, '')
  const closed = session.isClosed()
  session.destroy()
  return { closed, answer }
}

interface Setup {
  readonly proxy: TestProxy
  readonly origin: Origin
  readonly ca: string
}

/** An origin on 127.0.0.1 (a port not listed as TLS unless `tlsPort`), origin.test resolving to it, and a proxy allowing origin.test. */
async function setup(t: Test, { opened = false, tlsPort = false } = {}): Promise<Setup> {
  const origin = await startOrigin('127.0.0.1')
  const dns = await startDns({ 'origin.test': { A: ['127.0.0.1'] } })
  const ca = opened ? await createCa() : undefined
  const rule = opened ? { host: 'origin.test', ports: [origin.port], methods: ['GET'], paths: ['/**'] } : `origin.test:${origin.port}`
  const options: StartOptions = ca ? { ca, upstreamCa: [origin.tls.cert] } : {}
  // the IP rule lets origin.test's loopback address through the address guard
  const proxy = await startProxy({ allow: [rule, `127.0.0.1:${origin.port}`], dns: { servers: [dns.server] }, tls: { helloTimeoutMs: 2_000, ...(tlsPort ? { ports: [origin.port] } : {}) } }, options)
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })
  return { proxy, origin, ca: ca?.certPem ?? origin.tls.cert }
}

const refusal = (proxy: TestProxy, what: string) => logLine(proxy, (l) => l.message === 'decision' && l.reason === 'bad-client-hello', what)

const FLOWS = [
  { what: 'relayed tunnel, port not listed as TLS', setup: {}, withConnect: false },
  { what: 'hello sent with the CONNECT, port not listed as TLS', setup: {}, withConnect: true },
  { what: 'opened tunnel (methods/paths), port not listed as TLS', setup: { opened: true }, withConnect: false },
  { what: 'TLS port', setup: { tlsPort: true }, withConnect: false },
]

t.test('finding 1: an empty record before a ClientHello for evil.test is refused in every CONNECT flow; the origin never reads it', async (t) => {
  const bytes = await frontedHello()
  for (const flow of FLOWS) {
    await t.test(flow.what, async (t) => {
      const { proxy, origin } = await setup(t, flow.setup)
      const target = `origin.test:${origin.port}`
      const result = await sendRaw(proxy.port, '127.0.0.1', bytes, { target, withConnect: flow.withConnect })
      t.same(result, { closed: true, answer: '' }, 'the proxy closed the tunnel, no TLS byte came back')
      t.match(await refusal(proxy, flow.what), { target, detail: /malformed TLS ClientHello .*empty record/ }, 'logged as bad-client-hello with the reason')
      t.same(origin.names, [], 'the origin read no ClientHello')
    })
  }
})

t.test('finding 3: a ClientHello split over several TCP writes is read in every CONNECT flow', async (t) => {
  // pieces: a lone first byte (it cannot tell TLS yet), the rest of the record header, two of the body
  const cuts = [1, 5, 100]
  for (const flow of FLOWS) {
    await t.test(flow.what, async (t) => {
      const { proxy, origin, ca } = await setup(t, flow.setup)
      const target = `origin.test:${origin.port}`
      let stream: Duplex
      if (flow.withConnect) {
        const socket = netConnect({ host: '127.0.0.1', port: proxy.port })
        await new Promise((resolve) => socket.once('connect', resolve))
        stream = splitting(socket, cuts, connectHead(target), ESTABLISHED)
      } else stream = splitting(await connectTunnel(proxy, target), cuts)
      t.equal(await getOverTls(stream, 'origin.test', ca), 'origin /split', 'the handshake and a request went through')
      t.same(origin.names, ['origin.test'], 'the origin read origin.test')
    })
  }
})

t.test('ports not listed as TLS: first bytes that need more to tell are read on, then relayed whole if no TLS server would take them for a ClientHello', async (t) => {
  let received = Buffer.alloc(0)
  let arrived = (): void => undefined
  const sink = await startCanary('127.0.0.1', 0, (socket) =>
    socket.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d])
      arrived()
    }),
  )
  const proxy = await startProxy({ allow: [`127.0.0.1:${sink.port}`], tls: { helloTimeoutMs: 2_000 } })
  t.teardown(async () => {
    await proxy.close()
    await sink.close()
  })
  const tunnel = await connectTunnel(proxy, `127.0.0.1:${sink.port}`)
  // 0x16 opens a handshake record; 0x16 0x00 opens nothing a TLS server reads
  const pieces = [Buffer.from([0x16]), Buffer.from([0x00, 0xff, 0x01]), Buffer.from('plain after', 'latin1')]
  const all = Buffer.concat(pieces)
  const got = new Promise<void>((resolve) => (arrived = () => received.length >= all.length && resolve()))
  const cut = new Promise<void>((resolve) => tunnel.once('close', () => resolve()))
  for (const piece of pieces) {
    await new Promise<void>((written) => tunnel.write(piece, () => written()))
    await turn()
  }
  await Promise.race([got, cut])
  t.same(received, all, 'the origin got every byte, once, in order')
  tunnel.destroy()

  const v2 = await sendRaw(proxy.port, '127.0.0.1', sslv2Hello(0x0303, Buffer.from('00002f000035', 'hex'), Buffer.alloc(32, 7)), { target: `127.0.0.1:${sink.port}`, withConnect: false })
  t.same(v2, { closed: true, answer: '' }, 'an SSLv2-format ClientHello (OpenSSL reads one) is refused, not relayed')
  t.match(await refusal(proxy, 'the SSLv2 refusal'), { detail: /SSLv2-format ClientHello/ })
  t.equal(received.length, all.length, 'none of it reached the origin')
})

t.test('a server name that is not a host name (an IP address) is refused, tls.requireSni false or not: the origin would read it', async (t) => {
  const origin = await startOrigin('127.0.0.1')
  const dns = await startDns({ 'origin.test': { A: ['127.0.0.1'] } })
  const proxy = await startProxy({ allow: [`origin.test:${origin.port}`, `127.0.0.1:${origin.port}`], dns: { servers: [dns.server] }, tls: { ports: [origin.port], requireSni: false } })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })
  const parts = helloParts(await captureHello({ servername: 'origin.test' }))
  const extensions = (parts.extensions ?? []).map((e) => (e.type === EXT.serverName ? { type: e.type, data: serverNameData([[0, '10.1.2.3']]) } : e))
  const bytes = record(0x16, 0x0301, helloMessage({ ...parts, extensions }))
  const target = `origin.test:${origin.port}`
  t.same(await sendRaw(proxy.port, '127.0.0.1', bytes, { target, withConnect: false }), { closed: true, answer: '' })
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.reason === 'sni-missing', 'the refusal'), { target, sni: '10.1.2.3', detail: /names 10\.1\.2\.3, which is not a host name/ })
  t.same(origin.names, [], 'the origin read no ClientHello')
})

t.test('transparent TLS listener: finding 1 refused, a split ClientHello read', { skip: NETNS_SKIP }, async (t) => {
  const origin = await startOrigin('11.22.33.44')
  const dns = await startDns({ 'origin.test': { A: ['11.22.33.44'] }, 'evil.test': { A: ['11.22.33.44'] } })
  const proxy = await startProxy({ allow: [`origin.test:${origin.port}`], dns: { servers: [dns.server] }, tls: { helloTimeoutMs: 2_000 }, sandbox: { socks: false, address: SANDBOX, dns: false, http: [], tls: [origin.port] } })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })

  const fronted = await sendRaw(origin.port, SANDBOX, await frontedHello())
  t.same(fronted, { closed: true, answer: '' }, 'closed without a byte back')
  t.match(await refusal(proxy, 'the transparent refusal'), { listener: 'transparent', detail: /malformed TLS ClientHello on .*empty record/ })
  t.same(origin.names, [], 'the origin read no ClientHello')

  const socket = netConnect({ host: SANDBOX, port: origin.port })
  await new Promise((resolve) => socket.once('connect', resolve))
  t.equal(await getOverTls(splitting(socket, [1, 5, 100]), 'origin.test', origin.tls.cert), 'origin /split', 'a split ClientHello went through')
  t.same(origin.names, ['origin.test'])
})
