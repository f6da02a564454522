// Opened tunnels that end before they carry a request: a client that leaves while its leaf
// certificate is minted, and a leaf that cannot be minted. Either way the tunnel is gone from the
// registry with its closed line, and nothing is ever written into the tunnel after its 200.
// The first test must start this process's first proxy with a CA: the leaf key is generated then (leaf.ts).
import { generateKeyPairSync, pbkdf2 } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { createCa, type Ca } from '../lib/certs/ca.js'
import { captureHello } from './helpers/client-hello.js'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { closedPort } from './helpers/net.js'
import { logLine, startProxy, type TestProxy } from './helpers/proxy.js'

const HOST = 'api.allowed.test'

async function setup(t: Test, ca: Ca, tlsPort: boolean): Promise<{ proxy: TestProxy; target: string }> {
  // never dialled: every tunnel here ends before a request (the loopback entry lets the name resolve to it)
  const port = await closedPort()
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const proxy = await startProxy({ allow: [{ host: HOST, ports: [port], methods: ['GET'] }, `127.0.0.1:${port}`], dns: { servers: [dns.server] }, tls: { ports: tlsPort ? [port] : [443] } }, { ca })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
  })
  return { proxy, target: `${HOST}:${port}` }
}

interface RawTunnel {
  readonly socket: Socket
  /** everything the proxy sent, as latin1 text */
  received(): string
  readonly closed: Promise<void>
}

/** CONNECT `target` with a ClientHello for HOST right behind it, on a raw socket. */
async function connectWithHello(proxy: TestProxy, target: string): Promise<RawTunnel> {
  const hello = await captureHello({ servername: HOST })
  const socket = netConnect(proxy.port, '127.0.0.1')
  let text = ''
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  socket.write(Buffer.concat([Buffer.from(connectHead(target), 'latin1'), hello]))
  return { socket, received: () => text, closed }
}

t.test('a client that leaves while its leaf is minted: the tunnel is closed (line, registry) at once, and minting ends in nothing left open', async (t) => {
  const ca = await createCa()
  // the proxy's leaf key is generated in libuv's thread pool as it starts, and minting waits for it:
  // with every thread busy first, the key (and so the first mint) waits for them
  const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  let busy = true
  const pool = Promise.all(Array.from({ length: threads }, () => promisify(pbkdf2)('busy', 'thread', 1_500_000, 64, 'sha512'))).then(() => (busy = false))
  const { proxy, target } = await setup(t, ca, true)
  const tunnel = await connectWithHello(proxy, target)
  const decided = await logLine(proxy, (l) => l.message === 'decision' && l.sni === HOST, 'the decision on the ClientHello')
  t.equal(decided.decision, 'allow')
  t.equal(proxy.proxy.open.size, 1, 'registered while its leaf is minted')
  tunnel.socket.resetAndDestroy()
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.id === decided.id, 'the tunnel\'s closed line')
  t.ok(busy, 'the client left, and its tunnel was closed, while the leaf was still being minted')
  t.match(closed, { kind: 'tunnel', intercepted: true, bytesFromClient: Number })
  t.equal(proxy.proxy.open.size, 0, 'gone from the registry')
  await pool

  // a second tunnel waits for the same key: once it is through, the first one's minting has finished too
  const second = await new Promise<string>((resolve, reject) => {
    const raw = netConnect(proxy.port, '127.0.0.1', () => raw.write(connectHead(target)))
    raw.once('data', () => {
      const tls = tlsConnect({ socket: raw, servername: HOST, ca: ca.certPem })
      tls.once('secureConnect', () => {
        tls.destroy()
        resolve('handshake')
      })
      tls.once('error', reject)
    })
  })
  t.equal(second, 'handshake', 'a later tunnel to the same host is opened with the minted leaf')
  const secondClosed = await logLine(proxy, (l) => l.message === 'closed' && l.id !== decided.id, 'the second tunnel\'s closed line')
  t.match(secondClosed, { kind: 'tunnel', intercepted: true })
  t.equal(proxy.proxy.open.size, 0)
  t.equal(proxy.logs().filter((l) => l.message === 'closed' && l.id === decided.id).length, 1, 'one closed line for the first tunnel')
  t.same(proxy.logs().filter((l) => l.level === 'error'), [], 'no error logged')
})

/** A CA whose key cannot sign (EC, where leaves are signed RSA): every leaf fails to mint, inside the proxy's own code. */
async function unusableCa(): Promise<Ca> {
  const real = await createCa()
  return { ...real, key: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey }
}

for (const tlsPort of [true, false]) {
  const where = tlsPort ? 'a TLS port' : 'another port (the first bytes tell TLS)'
  t.test(`a leaf that cannot be minted, on ${where}: the tunnel after its 200 is closed, no HTTP written into it, the error logged`, async (t) => {
    const { proxy, target } = await setup(t, await unusableCa(), tlsPort)
    const tunnel = await connectWithHello(proxy, target)
    const guard = setTimeout(() => tunnel.socket.destroy(), 5_000)
    await tunnel.closed
    clearTimeout(guard)
    t.equal(tunnel.received(), 'HTTP/1.1 200 Connection established\r\n\r\n', 'the 200, then nothing: the proxy closed the tunnel')
    const error = await logLine(proxy, (l) => l.message === 'internal error', 'the internal error')
    t.match(error, { level: 'error', where: 'connect', error: /.+/ })
    const decided = await logLine(proxy, (l) => l.message === 'decision' && l.decision === 'allow', 'the decision')
    t.match(await logLine(proxy, (l) => l.message === 'closed' && l.id === decided.id, 'the closed line'), { kind: 'tunnel', intercepted: true })
    t.equal(proxy.proxy.open.size, 0, 'gone from the registry')
  })
}
