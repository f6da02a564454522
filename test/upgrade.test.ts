// WebSocket (HTTP Upgrade) through the proxy: absolute-form upgrade requests from a raw socket,
// hand-encoded frames, a real `ws` echo origin, and raw TCP origins where the exact byte order
// matters. Corpus: case 97 (no byte spliced before the 101), J (credentials and routing headers
// on upgrade), and the implicit assertions for denials (no connection reaches the canary).
import { createHash } from 'node:crypto'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import t from 'tap'
import { startDns, type TestDns } from './helpers/dns.js'
import { completeResponses, parseResponses, rawSession, startCanary, startHttpUpstream, startWsUpstream, statusOf, type Canary, type RawSession, type Upstream } from './helpers/net.js'
import { logLine, startProxy, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))
process.on('uncaughtException', (error) => t.fail(`uncaught exception: ${String(error)}`))

interface Teardown {
  teardown(fn: () => unknown): void
}

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const ACCEPT = createHash('sha1').update(`${KEY}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
const SECRET = Buffer.from('carol:ws-pr0xy-secret').toString('base64')

function upgradeHead(target: string, extra: readonly string[] = []): string {
  return [
    `GET http://${target}/ws?room=1 HTTP/1.1`,
    'Host: evil.test',
    'Connection: Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Version: 13',
    `Sec-WebSocket-Key: ${KEY}`,
    ...extra,
    '',
    '',
  ].join('\r\n')
}

/** A client-to-server text frame: FIN + opcode 1, mask bit set, 4-byte mask, masked payload. */
function maskedTextFrame(text: string, mask = Buffer.from([0x12, 0x34, 0x56, 0x78])): Buffer {
  const payload = Buffer.from(text, 'utf8')
  if (payload.length > 125) throw new Error('test frames are short')
  const masked = Buffer.from(payload.map((b, i) => b ^ (mask[i % 4] as number)))
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked])
}

interface Frame {
  readonly fin: boolean
  readonly opcode: number
  readonly masked: boolean
  readonly payload: string
}

/** Server-to-client frames (unmasked, short) found in raw bytes. */
function parseFrames(bytes: Buffer): Frame[] {
  const frames: Frame[] = []
  let pos = 0
  while (pos + 2 <= bytes.length) {
    const b0 = bytes[pos] as number
    const b1 = bytes[pos + 1] as number
    const len = b1 & 0x7f
    if (len > 125 || pos + 2 + len > bytes.length) break
    frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, masked: (b1 & 0x80) !== 0, payload: bytes.subarray(pos + 2, pos + 2 + len).toString('utf8') })
    pos += 2 + len
  }
  return frames
}

/** The bytes after the first response head, as a Buffer. */
function afterHead(text: string): Buffer {
  const end = text.indexOf('\r\n\r\n')
  return Buffer.from(end < 0 ? '' : text.slice(end + 4), 'latin1')
}

interface Fixture {
  readonly proxy: TestProxy
  readonly ws: Upstream
  readonly canary: Canary
  readonly dns: TestDns
}

async function fixture(t: Teardown, allow: (ws: Upstream) => string[] = (ws) => [`127.0.0.1:${ws.port}`, `api.allowed.test:${ws.port}`]): Promise<Fixture> {
  const ws = await startWsUpstream()
  const canary = await startCanary('127.0.0.1')
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] }, 'evil.test': { A: ['127.0.0.1'] } })
  const proxy = await startProxy({ allow: allow(ws), dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.teardown(async () => {
    await proxy.close()
    await ws.close()
    await canary.close()
    await dns.close()
  })
  return { proxy, ws, canary, dns }
}

async function session(t: Teardown, port: number): Promise<RawSession> {
  const s = await rawSession(port)
  t.teardown(() => s.destroy())
  return s
}

t.test('a WebSocket through the proxy: 101 from the ws origin, a masked frame out, the echo back', async (t) => {
  const f = await fixture(t)
  const target = `127.0.0.1:${f.ws.port}`
  const s = await session(t, f.proxy.port)
  await s.send(upgradeHead(target, [`Proxy-Authorization: Basic ${SECRET}`, 'X-Forwarded-For: 10.9.9.9', 'Forwarded: for=10.9.9.9', 'Proxy-Connection: keep-alive', 'Connection: X-Hop', 'X-Hop: 1', 'X-Forwarded-Port: 8443', 'Proxy-Extra: 1']))
  const handshake = await s.waitFor((x) => x.includes('\r\n\r\n'))
  const [res] = parseResponses(handshake)
  t.equal(res?.status, 101)
  t.same(res?.headers['sec-websocket-accept'], [ACCEPT])
  t.match(res?.headers.upgrade?.join() ?? '', /websocket/i)

  await s.send(maskedTextFrame('hello through the gate'))
  const text = await s.waitFor((x) => parseFrames(afterHead(x)).length >= 1)
  t.same(parseFrames(afterHead(text)), [{ fin: true, opcode: 1, masked: false, payload: 'echo: hello through the gate' }])

  const got = f.ws.requests[0]
  t.equal(got?.url, '/ws?room=1', 'origin-form path upstream')
  t.equal(got?.headers.host, target, 'Host comes from the URL, not the client header')
  for (const name of ['proxy-authorization', 'proxy-connection', 'x-forwarded-for', 'forwarded', 'x-hop', 'x-forwarded-port', 'proxy-extra']) {
    t.equal(got?.headers[name], undefined, `${name} is not forwarded on upgrade`)
  }
  t.notMatch(JSON.stringify(f.proxy.logs()), SECRET, 'Proxy-Authorization is not logged')
  const decision = await f.proxy.waitForLog((l) => l.message === 'decision' && l.target === target)
  t.match(decision, { method: 'GET', decision: 'allow', rule: `allow[0] ${target}`, chosen: '127.0.0.1' })
  t.equal(f.proxy.proxy.open.size, 1, 'the upgrade is registered as open')
  s.destroy()
  t.match(await f.proxy.waitForLog((l) => l.message === 'closed' && l.id === decision.id), { kind: 'upgrade', chosen: '127.0.0.1' })
  t.equal(f.proxy.proxy.open.size, 0, 'and unregistered when the client goes away')
})

t.test('an upgrade by name resolves through the loopback DNS and echoes', async (t) => {
  const f = await fixture(t)
  const target = `api.allowed.test:${f.ws.port}`
  const s = await session(t, f.proxy.port)
  await s.send(Buffer.concat([Buffer.from(upgradeHead(target), 'latin1'), maskedTextFrame('by name')]))
  const text = await s.waitFor((x) => parseFrames(afterHead(x)).length >= 1)
  t.equal(statusOf(text), 101)
  t.equal(parseFrames(afterHead(text))[0]?.payload, 'echo: by name', 'a frame in the same write as the head is delivered after the 101')
  t.equal(f.ws.requests[0]?.headers.host, target)
  t.match(await f.proxy.waitForLog((l) => l.message === 'decision' && l.target === target), { decision: 'allow', resolved: ['127.0.0.1'] })
})

t.test('case 97: bytes sent with the request head reach the origin only after its 101', async (t) => {
  let received = Buffer.alloc(0)
  let headEnd = -1
  let releaseHead: () => void = () => undefined
  const headSeen = new Promise<void>((resolve) => (releaseHead = resolve))
  let originSocket: Socket | undefined
  const origin = await startCanary('127.0.0.1', 0, (s) => {
    originSocket = s
    s.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d])
      if (headEnd < 0) {
        headEnd = received.indexOf('\r\n\r\n')
        if (headEnd >= 0) releaseHead()
      }
    })
  })
  const proxy = await startProxy({ allow: [`127.0.0.1:${origin.port}`] })
  t.teardown(async () => {
    await proxy.close()
    await origin.close()
  })
  const frame = maskedTextFrame('early bytes')
  const s = await session(t, proxy.port)
  await s.send(Buffer.concat([Buffer.from(upgradeHead(`127.0.0.1:${origin.port}`), 'latin1'), frame]))
  await headSeen
  // A full round trip through the proxy's event loop: anything it meant to send with the head has been sent by now.
  const probe = await rawSession(proxy.port)
  await probe.send('GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n')
  t.equal(statusOf(await probe.waitFor((x) => completeResponses(x) >= 1)), 200)
  probe.destroy()
  t.equal(received.length, headEnd + 4, 'before the 101 the origin has the request head and nothing else')
  t.notOk(s.text().includes('101'), 'the client has no 101 yet')

  originSocket?.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`)
  await s.waitFor((x) => x.includes('\r\n\r\n'))
  t.equal(statusOf(s.text()), 101)
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (received.length < headEnd + 4 + frame.length) return
      originSocket?.removeListener('data', check)
      resolve()
    }
    originSocket?.on('data', check)
    check()
  })
  t.same(received.subarray(headEnd + 4), frame, 'after the 101 the origin gets exactly the early bytes')
  t.match(received.toString('latin1'), /^GET \/ws\?room=1 HTTP\/1\.1\r\n/, 'origin-form request line')
})

t.test('a denied upgrade is 403 with Proxy-Status, closed, and nothing reaches the canary', async (t) => {
  const f = await fixture(t)
  const refusals = [
    [`127.0.0.1:${f.canary.port}`, `destination_ip_prohibited; details="127.0.0.1:${f.canary.port}, a loopback address, which is refused unless a rule names it"`],
    [`evil.test:${f.canary.port}`, `http_request_denied; details="no allow rule matches evil.test:${f.canary.port}"`],
  ] as const
  for (const [target, proxyStatus] of refusals) {
    const s = await session(t, f.proxy.port)
    await s.send(Buffer.concat([Buffer.from(upgradeHead(target, [`Proxy-Authorization: Basic ${SECRET}`]), 'latin1'), maskedTextFrame('smuggled')]))
    await s.closed
    const [res] = parseResponses(s.text())
    t.equal(res?.status, 403, `${target}: 403`)
    t.equal(res?.headers['proxy-status']?.[0], `proxy-gate; error=${proxyStatus}`, `${target}: Proxy-Status`)
    t.match(res?.body ?? '', `denied GET ${target}`)
    t.notMatch(s.text(), SECRET)
  }
  t.equal(f.canary.connections(), 0, 'no connection reached the canary')
  t.equal(f.dns.queries('evil.test'), 0, 'the denied name was not resolved')
  t.equal(f.ws.connections(), 0)
  t.notMatch(JSON.stringify(f.proxy.logs()), SECRET)
})

t.test('malformed upgrade targets are 400 and closed', async (t) => {
  const f = await fixture(t)
  for (const target of [`user:pw@127.0.0.1:${f.ws.port}`, 'api.allowed.test:0']) {
    const s = await session(t, f.proxy.port)
    await s.send(upgradeHead(target))
    await s.closed
    t.equal(statusOf(s.text()), 400, `${target}: 400`)
    t.match(s.text(), /error=http_request_error/)
  }
  const https = await session(t, f.proxy.port)
  await https.send(upgradeHead(`127.0.0.1:${f.ws.port}`).replace('GET http://', 'GET https://'))
  await https.closed
  t.equal(statusOf(https.text()), 400)
  t.match(https.text(), /use CONNECT/)
  t.equal(f.ws.connections(), 0)
  t.notMatch(JSON.stringify(f.proxy.logs()), /user:pw/, 'URL credentials are not logged')
})

t.test('an origin that answers the upgrade with 400: the client gets that response, then the connection closes', async (t) => {
  // Node's http server without an 'upgrade' listener hands an Upgrade request to the ordinary
  // 'request' handler, so this origin answers it like any request.
  const origin = await startHttpUpstream('127.0.0.1', (_req, res) => {
    res.writeHead(400, { 'Content-Type': 'text/plain', 'X-Origin': 'plain' }).end('no upgrade here')
  })
  const proxy = await startProxy({ allow: [`127.0.0.1:${origin.port}`] })
  t.teardown(async () => {
    await proxy.close()
    await origin.close()
  })
  const s = await session(t, proxy.port)
  await s.send(Buffer.concat([Buffer.from(upgradeHead(`127.0.0.1:${origin.port}`, [`Proxy-Authorization: Basic ${SECRET}`]), 'latin1'), maskedTextFrame('not for http')]))
  await s.closed
  const [res] = parseResponses(s.text())
  t.equal(res?.status, 400)
  t.same(res?.headers['x-origin'], ['plain'])
  t.equal(res?.headers['transfer-encoding'], undefined, 'no chunked header over an unchunked body')
  t.equal(res?.headers['keep-alive'], undefined, "the origin's hop-by-hop headers are not relayed")
  t.same(res?.headers.connection, ['close'])
  t.equal(afterHead(s.text()).toString('latin1'), 'no upgrade here', 'the body, close-delimited, and nothing after it')
  const decision = await proxy.waitForLog((l) => l.message === 'decision' && l.target === `127.0.0.1:${origin.port}`)
  t.ok(await logLine(proxy, (l) => l.message === 'closed' && l.id === decision.id, 'the closed line'), "the proxy freed the client's socket")
  t.equal(proxy.proxy.open.size, 0)
  t.equal(origin.requests.length, 1, 'the origin saw one request')
  t.equal(origin.requests[0]?.headers['proxy-authorization'], undefined)
  t.equal(origin.requests[0]?.body, '', 'the bytes after the head were not sent as a body')
})

t.test('the origin closing closes the client side', async (t) => {
  const f = await fixture(t)
  const s = await session(t, f.proxy.port)
  await s.send(Buffer.concat([Buffer.from(upgradeHead(`127.0.0.1:${f.ws.port}`), 'latin1'), maskedTextFrame('ping')]))
  await s.waitFor((x) => parseFrames(afterHead(x)).length >= 1)
  t.equal(statusOf(s.text()), 101)
  await f.ws.close()
  await s.closed
  t.pass('client connection closed after the origin went away')
  await f.proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'upgrade')
  t.equal(f.proxy.proxy.open.size, 0, 'no open upgrade left')
})

t.test('an origin that refuses the connection: 502 connection_refused on the upgrade', async (t) => {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  const proxy = await startProxy({ allow: [`127.0.0.1:${port}`] })
  t.teardown(() => proxy.close())
  const s = await session(t, proxy.port)
  await s.send(upgradeHead(`127.0.0.1:${port}`))
  await s.closed
  t.equal(statusOf(s.text()), 502)
  t.match(s.text(), new RegExp(`Proxy-Status: proxy-gate; error=connection_refused; details="127\\.0\\.0\\.1:${port} refused the connection"`))
})
