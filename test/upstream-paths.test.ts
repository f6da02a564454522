// "upstream" for the paths that used to connect directly: opened tunnels (rules with methods/paths,
// TLS terminated and each request checked) and ws:// upgrades. A small real CONNECT parent on
// loopback relays to the origin and records what it was asked and the local port of each
// connection it made, so the origin's peer port shows the connection came from the parent.
import { createHash } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { ProxyAgent, request } from 'undici'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { WebSocket, WebSocketServer } from 'ws'
import { createCa, type Ca } from '../lib/certs/ca.js'
import { startDns, type TestDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { closedPort, NETNS_SKIP, parseResponses, rawSession, selfSigned, startWsUpstream, type TlsMaterial } from './helpers/net.js'
import { logLine, startProxy, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))
process.on('uncaughtException', (error) => t.fail(`uncaught exception: ${String(error)}`))

// ---- a real CONNECT parent that relays, and origins that record their peer's port ------------

interface Parent {
  readonly port: number
  readonly hop: string
  /** the CONNECT request lines it received */
  readonly asked: string[]
  /** the local port of every connection it opened to an origin */
  readonly outgoing: number[]
  /** emits 'asked' for each CONNECT head and 'gone' when a client's connection closes */
  readonly events: EventEmitter
}

/**
 * Relays CONNECT name:port to 127.0.0.1:port (every test name lives there); `refuse` answers 403 instead.
 * With `hold`, it connects to the origin only once that promise settles.
 */
async function startParent(t: Test, refuse = false, hold: Promise<void> = Promise.resolve()): Promise<Parent> {
  const asked: string[] = []
  const outgoing: number[] = []
  const events = new EventEmitter()
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    sockets.add(client)
    client.on('error', () => client.destroy())
    client.on('close', () => events.emit('gone'))
    let head = ''
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) return
      client.off('data', onData)
      const line = head.slice(0, head.indexOf('\r\n'))
      asked.push(line)
      events.emit('asked')
      if (refuse) return void client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
      void hold.then(() => relay(Number(/^CONNECT \S+:(\d+) HTTP\/1\.1$/.exec(line)?.[1]), head.slice(end + 4)))
    }
    const relay = (port: number, early: string): void => {
      const origin = connect({ host: '127.0.0.1', port }, () => {
        outgoing.push(origin.localPort ?? 0)
        client.write('HTTP/1.1 200 Connection established\r\n\r\n')
        if (early !== '') origin.write(Buffer.from(early, 'latin1'))
        client.pipe(origin).pipe(client)
      })
      sockets.add(origin)
      origin.on('error', () => client.destroy())
      client.on('close', () => origin.destroy())
    }
    client.on('data', onData)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  )
  return { port, hop: `127.0.0.1:${port}`, asked, outgoing, events }
}

interface Origin {
  readonly port: number
  /** the peer port of each request (or accepted upgrade) */
  readonly peers: number[]
  readonly paths: string[]
}

function recorder(peers: number[], paths: string[]) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    peers.push(req.socket.remotePort ?? 0)
    paths.push(req.url ?? '')
    res.end(`hello ${req.method ?? ''} ${req.url ?? ''}`)
  }
}

async function listening(t: Test, server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as Server & { closeAllConnections(): void }).closeAllConnections()
      }),
  )
  return (server.address() as AddressInfo).port
}

async function httpsOrigin(t: Test, tls: TlsMaterial): Promise<Origin> {
  const peers: number[] = []
  const paths: string[] = []
  return { port: await listening(t, createHttpsServer({ cert: tls.cert, key: tls.key }, recorder(peers, paths))), peers, paths }
}

/** A WebSocket echo origin (wss with `tls`) recording the peer port of each upgrade it accepted. */
async function wsOrigin(t: Test, tls?: TlsMaterial): Promise<Origin> {
  const peers: number[] = []
  const paths: string[] = []
  const refuse = (_req: IncomingMessage, res: ServerResponse): void => void res.writeHead(426).end()
  const server = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, refuse) : createHttpServer(refuse)
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    peers.push(req.socket.remotePort ?? 0)
    paths.push(req.url ?? '')
    ws.on('message', (data) => ws.send(`echo: ${(data as Buffer).toString()}`))
  })
  t.teardown(() => {
    for (const c of wss.clients) c.terminate()
    wss.close()
  })
  return { port: await listening(t, server), peers, paths }
}

// ---- clients ---------------------------------------------------------------------------------

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const ACCEPT = createHash('sha1').update(`${KEY}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')

function upgradeHead(target: string): string {
  return `GET http://${target}/ws HTTP/1.1\r\nHost: ${target}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`
}

function maskedTextFrame(text: string): Buffer {
  const mask = Buffer.from([1, 2, 3, 4])
  const payload = Buffer.from(text).map((b, i) => b ^ (mask[i % 4] as number))
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload])
}

/** An upgrade through the proxy, then one message echoed back: the raw text the client received. */
async function wsRoundTrip(t: Test, proxy: TestProxy, target: string): Promise<string> {
  const s = await rawSession(proxy.port)
  t.teardown(() => s.destroy())
  await s.send(upgradeHead(target))
  const head = await s.waitFor((text) => text.includes('\r\n\r\n'))
  if (!head.startsWith('HTTP/1.1 101')) return head
  await s.send(maskedTextFrame('through'))
  const text = await s.waitFor((all) => all.includes('echo: through'))
  s.destroy()
  return text
}

function proxyStatusOf(value: string | string[] | undefined): string {
  return Array.isArray(value) ? value.join(', ') : (value ?? '')
}

// ---- fixtures --------------------------------------------------------------------------------

interface World {
  readonly ca: Ca
  readonly tls: TlsMaterial
  readonly dns: TestDns
  readonly https: Origin
  readonly ws: Origin
}

async function world(t: Test): Promise<World> {
  const ca = await createCa()
  const tls = selfSigned(['api.allowed.test'])
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  return { ca, tls, dns, https: await httpsOrigin(t, tls), ws: await wsOrigin(t) }
}

/** proxy-gate opening TLS tunnels to the HTTPS origin (GET /ok/** only) and allowing the ws origin. */
async function gate(t: Test, w: World, upstream: string | undefined, upstreamCa = [w.tls.cert]): Promise<TestProxy> {
  const proxy = await startProxy(
    {
      // the IP literals let the names resolve to loopback (the address guard)
      allow: [{ host: 'api.allowed.test', ports: [w.https.port], methods: ['GET'], paths: ['/ok/**'] }, `api.allowed.test:${w.ws.port}`, `127.0.0.1:${w.https.port}`, `127.0.0.1:${w.ws.port}`],
      dns: { servers: [w.dns.server], timeoutMs: 2000 },
      tls: { ports: [w.https.port] },
      ...(upstream === undefined ? {} : { upstream }),
    },
    { ca: w.ca, upstreamCa },
  )
  t.teardown(() => proxy.close())
  return proxy
}

function tunnelAgent(t: Test, proxy: TestProxy, w: World): ProxyAgent {
  const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: w.ca.certPem } })
  t.teardown(() => agent.destroy())
  return agent
}

// ---- opened tunnels --------------------------------------------------------------------------

t.test('opened tunnels reach the origin through a CONNECT to the parent, TLS to the origin verified inside it', async (t) => {
  const w = await world(t)
  const parent = await startParent(t)
  const proxy = await gate(t, w, `http://${parent.hop}`)
  const agent = tunnelAgent(t, proxy, w)
  const url = `https://api.allowed.test:${w.https.port}`
  const ok = await request(`${url}/ok/1`, { dispatcher: agent })
  t.equal(ok.statusCode, 200)
  t.equal(await ok.body.text(), 'hello GET /ok/1')
  const denied = await request(`${url}/other`, { dispatcher: agent })
  t.equal(denied.statusCode, 403, 'each request inside is still checked')
  await denied.body.text()
  t.same(parent.asked, [`CONNECT api.allowed.test:${w.https.port} HTTP/1.1`], 'the parent was asked for the name, once')
  t.same(w.https.paths, ['/ok/1'], 'only the allowed request reached the origin')
  t.ok(parent.outgoing.includes(w.https.peers[0] ?? -1), "the origin's peer is the parent's connection")
  await agent.destroy()
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'tunnel' && l.intercepted === true, 'closed tunnel')
  t.equal(closed.via, parent.hop, 'the closed tunnel names the parent')
  t.equal(closed.chosen, undefined, 'the parent chose the address')
  const forwarded = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'forward' && l.status === 200, 'closed request')
  t.equal(forwarded.via, parent.hop)
})

t.test('opened tunnels through the parent: an unverifiable origin certificate and a dead or refusing parent are 502s that say so', async (t) => {
  const w = await world(t)
  const parent = await startParent(t)
  const untrusting = await gate(t, w, `http://${parent.hop}`, [])
  const bad = await request(`https://api.allowed.test:${w.https.port}/ok/cert`, { dispatcher: tunnelAgent(t, untrusting, w) })
  t.equal(bad.statusCode, 502)
  t.match(proxyStatusOf(bad.headers['proxy-status']), new RegExp(`error=tls_certificate_error; details="api\\.allowed\\.test:${w.https.port} \\(through upstream proxy ${parent.hop}\\) presented a certificate`))
  await bad.body.text()
  t.same(w.https.paths, [], 'no request was sent to an origin that did not verify')

  const deadPort = await closedPort()
  const dead = await gate(t, w, `http://127.0.0.1:${deadPort}`)
  const down = await request(`https://api.allowed.test:${w.https.port}/ok/down`, { dispatcher: tunnelAgent(t, dead, w) })
  t.equal(down.statusCode, 502)
  t.match(proxyStatusOf(down.headers['proxy-status']), `error=connection_refused; next-hop="127.0.0.1:${deadPort}"`)
  await down.body.text()

  const refusing = await startParent(t, true)
  const refused = await gate(t, w, `http://${refusing.hop}`)
  const no = await request(`https://api.allowed.test:${w.https.port}/ok/no`, { dispatcher: tunnelAgent(t, refused, w) })
  t.equal(no.statusCode, 502)
  t.match(proxyStatusOf(no.headers['proxy-status']), `error=destination_unavailable; next-hop="${refusing.hop}"; received-status=403`)
  await no.body.text()
})

// ---- ws:// upgrades --------------------------------------------------------------------------

t.test('ws:// upgrades go in a CONNECT tunnel to the parent; a refusing parent is 502 naming it', async (t) => {
  const w = await world(t)
  const parent = await startParent(t)
  const proxy = await gate(t, w, `http://${parent.hop}`)
  const target = `api.allowed.test:${w.ws.port}`
  const text = await wsRoundTrip(t, proxy, target)
  t.match(text, `HTTP/1.1 101 Switching Protocols\r\n`)
  t.match(text.toLowerCase(), `sec-websocket-accept: ${ACCEPT.toLowerCase()}`)
  t.match(text, 'echo: through', 'frames cross both proxies')
  t.same(parent.asked, [`CONNECT ${target} HTTP/1.1`])
  t.ok(parent.outgoing.includes(w.ws.peers[0] ?? -1), "the origin's peer is the parent's connection")
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'upgrade', 'closed upgrade')
  t.equal(closed.via, parent.hop)
  t.equal(closed.chosen, undefined)

  const refusing = await startParent(t, true)
  const refused = await gate(t, w, `http://${refusing.hop}`)
  const answer = parseResponses(await wsRoundTrip(t, refused, target))[0]
  t.equal(answer?.status, 502)
  t.match(answer?.headers['proxy-status']?.[0], `error=destination_unavailable; next-hop="${refusing.hop}"; received-status=403`)
  t.equal(w.ws.peers.length, 1, 'nothing reached the origin through the refusing parent')
})

t.test('a client gone while its upgrade waits for the parent: the tunnel to the parent is closed once it opens, not left idle', async (t) => {
  const w = await world(t)
  let release = (): void => undefined
  const parent = await startParent(t, false, new Promise<void>((resolve) => (release = resolve)))
  const proxy = await gate(t, w, `http://${parent.hop}`)
  const s = await rawSession(proxy.port)
  const asked = once(parent.events, 'asked')
  await s.send(upgradeHead(`api.allowed.test:${w.ws.port}`))
  await asked
  s.destroy()
  const gone = once(parent.events, 'gone')
  release()
  const bound = setTimeout(() => parent.events.emit('error', new Error('the tunnel through the parent stayed open')), 5_000)
  t.teardown(() => clearTimeout(bound))
  await gone
  t.pass('proxy-gate closed its connection to the parent')
  await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'upgrade', 'the closed upgrade')
})

t.test('without upstream both go direct, as before', async (t) => {
  const w = await world(t)
  const parent = await startParent(t)
  const proxy = await gate(t, w, undefined)
  const ok = await request(`https://api.allowed.test:${w.https.port}/ok/direct`, { dispatcher: tunnelAgent(t, proxy, w) })
  t.equal(ok.statusCode, 200)
  t.equal(await ok.body.text(), 'hello GET /ok/direct')
  t.match(await wsRoundTrip(t, proxy, `api.allowed.test:${w.ws.port}`), 'echo: through')
  t.same(parent.asked, [], 'no parent involved')
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'upgrade', 'closed upgrade')
  t.equal(closed.chosen, '127.0.0.1')
  t.equal(closed.via, undefined)
})

t.test('ws:// upgrades try each checked address while connecting fails, as CONNECT does', { skip: NETNS_SKIP }, async (t) => {
  const origin = await startWsUpstream('11.22.33.45') // nothing listens on 11.22.33.44 at this port
  t.teardown(() => origin.close())
  const dns = await startDns({ 'two.public.test': { A: ['11.22.33.44', '11.22.33.45'] } })
  t.teardown(() => dns.close())
  const proxy = await startProxy({ allow: [`two.public.test:${origin.port}`], dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.teardown(() => proxy.close())
  const s = await rawSession(proxy.port)
  t.teardown(() => s.destroy())
  await s.send(upgradeHead(`two.public.test:${origin.port}`))
  t.match(await s.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 101 /, 'upgraded by the second address')
  s.destroy()
  t.match(await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'upgrade', 'closed upgrade'), { chosen: '11.22.33.45' })

  const dead = await closedPort()
  const none = await startDns({ 'dead.public.test': { A: ['11.22.33.44', '11.22.33.46'] } })
  t.teardown(() => none.close())
  const refusing = await startProxy({ allow: [`dead.public.test:${dead}`], dns: { servers: [none.server], timeoutMs: 2000 } })
  t.teardown(() => refusing.close())
  const r = await rawSession(refusing.port)
  t.teardown(() => r.destroy())
  await r.send(upgradeHead(`dead.public.test:${dead}`))
  const answer = parseResponses(await r.waitFor((text) => text.includes('\r\n\r\n')))[0]
  t.equal(answer?.status, 502)
  t.equal(answer?.headers['proxy-status']?.[0], `proxy-gate; error=connection_refused; details="11.22.33.44:${dead}, 11.22.33.46:${dead} refused the connection"`)
})

t.test('wss inside an opened tunnel goes through the parent too, the origin verified', async (t) => {
  const w = await world(t)
  const wss = await wsOrigin(t, w.tls)
  const parent = await startParent(t)
  const proxy = await startProxy(
    {
      allow: [{ host: 'api.allowed.test', ports: [wss.port], methods: ['GET'], paths: ['/ok/**'] }, `127.0.0.1:${wss.port}`],
      dns: { servers: [w.dns.server], timeoutMs: 2000 },
      tls: { ports: [wss.port] },
      upstream: `http://${parent.hop}`,
    },
    { ca: w.ca, upstreamCa: [w.tls.cert] },
  )
  t.teardown(() => proxy.close())
  const target = `api.allowed.test:${wss.port}`
  // CONNECT, then TLS to the leaf proxy-gate mints, then the WebSocket over it
  const inner = await new Promise<TLSSocket>((resolve, reject) => {
    const raw = connect({ host: '127.0.0.1', port: proxy.port })
    raw.once('error', reject)
    raw.once('data', () => {
      const tls = tlsConnect({ socket: raw, servername: 'api.allowed.test', ca: w.ca.certPem })
      tls.once('secureConnect', () => resolve(tls))
      tls.once('error', reject)
    })
    raw.write(connectHead(target))
  })
  t.teardown(() => inner.destroy())
  const echoed = await new Promise<string>((resolve) => {
    const ws = new WebSocket(`wss://${target}/ok/socket`, { createConnection: () => inner })
    ws.on('open', () => ws.send('hi'))
    ws.on('message', (m) => {
      resolve((m as Buffer).toString())
      ws.close()
    })
    ws.on('unexpected-response', (_req, res) => resolve(`status ${res.statusCode ?? 0}`))
    ws.on('error', (error) => resolve(`error ${error.message}`))
  })
  t.equal(echoed, 'echo: hi')
  t.same(parent.asked, [`CONNECT ${target} HTTP/1.1`])
  t.ok(parent.outgoing.includes(wss.peers[0] ?? -1), "the origin's peer is the parent's connection")
})
