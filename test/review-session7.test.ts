// Review of the clientError answer (d87b532): bytes node:http's parser refuses, after requests whose
// responses are still under way, get one 400 after every earlier response, and once only; a CONNECT or
// Upgrade behind them (on the proxy port and inside opened tunnels) waits for all of them.
import type { ServerResponse } from 'node:http'
import t, { type Test } from 'tap'
import { createCa } from '../lib/certs/ca.js'
import { startDns } from './helpers/dns.js'
import { parseResponses, rawSession, startHttpUpstream, type RawSession, type Upstream } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

interface Held {
  readonly up: Upstream
  readonly proxy: TestProxy
  /** the upstream responses waiting, by path */
  readonly held: Map<string, ServerResponse>
  /** resolves once the upstream holds the response for `path` */
  holding(path: string): Promise<ServerResponse>
}

/** An upstream that answers each request's head (and a first body byte) only, the rest when the test says so. */
async function heldFixture(t: Test, opened = false, limits: Record<string, number> = {}): Promise<Held> {
  const held = new Map<string, ServerResponse>()
  const waiters = new Map<string, (res: ServerResponse) => void>()
  const up = await startHttpUpstream('127.0.0.1', (req, res) => {
    const path = req.url ?? ''
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '4' })
    res.write('a')
    held.set(path, res)
    waiters.get(path)?.(res)
  })
  // opened: a rule with paths, so that a CONNECT to HOST is opened and its requests decided one by one
  const dns = opened ? await startDns({ [HOST]: { A: ['127.0.0.1'] } }) : undefined
  const allow = opened ? [{ host: HOST, ports: [up.port], methods: ['GET'], paths: ['/first', '/long'] }, `127.0.0.1:${up.port}`] : [`127.0.0.1:${up.port}`]
  const proxy = await startProxy({ allow, limits, ...(dns ? { dns: { servers: [dns.server] } } : {}) }, opened ? { ca: await createCa() } : {})
  t.teardown(async () => {
    for (const res of held.values()) res.destroy()
    await proxy.close()
    await Promise.all([up.close(), dns?.close()])
  })
  const holding = (path: string): Promise<ServerResponse> => {
    const res = held.get(path)
    return res ? Promise.resolve(res) : new Promise((resolve) => waiters.set(path, resolve))
  }
  return { up, proxy, held, holding }
}

const HOST = 'api.allowed.test'
const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n'

const get = (port: number, path: string): string => `GET http://127.0.0.1:${port}${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`
const isError = (l: LogLine): boolean => l.message === 'decision' && l.decision === 'error'

/** One full event-loop turn (its poll phase reads what a loopback peer already sent). */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(() => setImmediate(resolve)))

/**
 * With /long's first byte out and the rest held: a garbage head, then 12 more chunks (node:http's
 * parser reports its error again for every later chunk), then /long ends and the connection closes.
 */
async function garbageWhileHeld(client: RawSession, f: Held): Promise<void> {
  await client.waitFor((text) => text.endsWith('a'))
  await client.send('\x01garbage')
  await logLine(f.proxy, isError, 'the 400 decided')
  for (let i = 0; i < 12; i++) {
    await client.send(`\x01more ${i}`)
    await turn()
  }
  ;(await f.holding('/long')).end('bcd')
  await client.closed
}

t.test('bytes after a garbage head, while a response is under way, are not answered (nor logged) again', async (t) => {
  const f = await heldFixture(t)
  const client = await rawSession(f.proxy.port)
  t.teardown(() => client.destroy())
  await client.send(get(f.up.port, '/long'))
  await garbageWhileHeld(client, f)
  t.same(parseResponses(client.text()).map((r) => [r.status, r.body]), [[200, 'abcd'], [400, parseResponses(client.text())[1]?.body ?? '']], 'the response, then one 400')
  t.equal(f.proxy.logs().filter(isError).length, 1, 'one refusal logged, not one per chunk')
})

t.test('a garbage head after two pipelined requests: its 400 comes after both responses, not inside or before the second', async (t) => {
  const f = await heldFixture(t)
  const client = await rawSession(f.proxy.port)
  t.teardown(() => client.destroy())
  await client.send(get(f.up.port, '/first') + get(f.up.port, '/second') + '\x01garbage')
  await logLine(f.proxy, isError, 'the 400 decided')
  const [first, second] = await Promise.all([f.holding('/first'), f.holding('/second')])
  first.end('bcd')
  await client.waitFor((text) => parseResponses(text)[0]?.complete === true)
  await turn()
  second.end('efg')
  await client.closed
  const responses = parseResponses(client.text())
  t.same(responses.map((r) => [r.status, r.status === 200 ? r.body : '']), [[200, 'abcd'], [200, 'aefg'], [400, '']], 'both responses whole and in order, then the 400')
})

t.test('a CONNECT after two pipelined requests: the tunnel opens after both responses, neither lands inside it', async (t) => {
  const f = await heldFixture(t)
  const client = await rawSession(f.proxy.port)
  t.teardown(() => client.destroy())
  const authority = `127.0.0.1:${f.up.port}`
  await client.send(get(f.up.port, '/first') + get(f.up.port, '/second') + `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`)
  const [first, second] = await Promise.all([f.holding('/first'), f.holding('/second')])
  first.end('bcd')
  await client.waitFor((text) => parseResponses(text)[0]?.complete === true)
  await turn()
  second.end('efg')
  const text = await client.waitFor((seen) => seen.includes('efg') && seen.includes('Connection established'))
  t.same(parseResponses(text).map((r) => [r.status, r.body]), [[200, 'abcd'], [200, 'aefg'], [200, '']], 'both responses, then the tunnel (empty so far)')
})

t.test('a connection whose garbage head waits behind a response that does not end is closed at the header timeout', async (t) => {
  const f = await heldFixture(t, false, { headerTimeoutMs: 300 })
  const client = await rawSession(f.proxy.port)
  t.teardown(() => client.destroy())
  await client.send(get(f.up.port, '/long'))
  await client.waitFor((text) => text.endsWith('a'))
  await client.send('\x01garbage')
  // the timeout (300 ms, swept every 300 ms) closes it; the response never ends here
  await client.waitFor(() => false, 5_000)
  t.ok(client.isClosed(), 'closed at the header timeout')
  t.same(parseResponses(client.text()).map((r) => [r.status, r.complete]), [[200, false]], 'the response cut off, no 400 inside it')
})

/** A plain-HTTP tunnel to HOST, opened: what the client received inside it, after the 200. */
async function openedTunnel(t: Test, f: Held): Promise<{ client: RawSession; inside: () => string }> {
  const client = await rawSession(f.proxy.port)
  t.teardown(() => client.destroy())
  await client.send(`CONNECT ${HOST}:${f.up.port} HTTP/1.1\r\nHost: ${HOST}:${f.up.port}\r\n\r\n`)
  await client.waitFor((text) => text.startsWith(ESTABLISHED))
  return { client, inside: () => client.text().slice(ESTABLISHED.length) }
}

const inTunnel = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`

t.test('inside an opened tunnel: bytes after a garbage head, while a response is under way, get one 400 after it, logged once', async (t) => {
  const f = await heldFixture(t, true)
  const { client, inside } = await openedTunnel(t, f)
  await client.send(inTunnel('/long'))
  await garbageWhileHeld(client, f)
  t.same(parseResponses(inside()).map((r) => r.status), [200, 400], 'the response, then one 400')
  t.equal(f.proxy.logs().filter(isError).length, 1, 'one refusal logged, not one per chunk')
})

t.test('inside an opened tunnel: an Upgrade pipelined behind a request is answered after that response', async (t) => {
  const f = await heldFixture(t, true)
  const { client, inside } = await openedTunnel(t, f)
  // /ws is not among the rule's paths: refused with 403
  await client.send(inTunnel('/first') + inTunnel('/ws', 'Connection: Upgrade\r\nUpgrade: websocket\r\n'))
  // a refusal written at once closes the connection, and /first may never reach the origin
  const first = await Promise.race([f.holding('/first'), client.closed.then(() => undefined)])
  first?.end('bcd')
  await client.waitFor(() => parseResponses(inside()).filter((r) => r.complete).length >= 2)
  t.same(parseResponses(inside()).map((r) => [r.status, r.status === 200 ? r.body : '']), [[200, 'abcd'], [403, '']], 'the response, then the refusal')
})
