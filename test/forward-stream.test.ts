// Streaming a forwarded response body (route-forward.ts relayBody): a large body arrives whole
// under backpressure, an upstream that dies mid-body cuts the client's response (never a clean
// end), and a client that goes away mid-body releases the upstream request. Each is logged.
import { createServer, type Server, type ServerResponse } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import type { Ip } from '../lib/policy/ip.js'
import { ip } from './helpers/fixtures.js'
import { logLine, startProxy, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))

async function origin(t: Test, handler: (res: ServerResponse, socket: Socket) => void): Promise<{ port: number; server: Server }> {
  const server = createServer((req, res) => {
    req.resume()
    handler(res, req.socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))))
  return { port: (server.address() as AddressInfo).port, server }
}

async function proxyFor(t: Test, port: number): Promise<TestProxy> {
  const proxy = await startProxy({ allow: [`127.0.0.1:${port}`] })
  t.teardown(() => proxy.close())
  return proxy
}

/** Sends one absolute-form GET and collects what comes back until the connection closes. */
function get(proxy: TestProxy, port: number, onData?: (socket: Socket, received: number, chunk: Buffer) => void): Promise<{ text: string; bytes: number; error: string | undefined }> {
  return new Promise((resolve) => {
    const socket = connect(proxy.port, '127.0.0.1', () => {
      socket.write(`GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`)
    })
    const chunks: Buffer[] = []
    let bytes = 0
    let error: string | undefined
    socket.on('data', (chunk: Buffer) => {
      if (chunks.length < 4) chunks.push(chunk)
      bytes += chunk.length
      onData?.(socket, bytes, chunk)
    })
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message))
    socket.on('close', () => resolve({ text: Buffer.concat(chunks).toString('latin1'), bytes, error }))
  })
}

t.test('a 4 MiB body streamed in small pieces arrives whole and is logged as finished', async (t) => {
  const piece = Buffer.alloc(16 * 1024, 0x62)
  const total = 256 * piece.length
  const up = await origin(t, (res) => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(total) })
    let sent = 0
    const pump = (): void => {
      while (sent < 256) {
        sent++
        if (!res.write(piece)) return void res.once('drain', pump)
      }
      res.end()
    }
    pump()
  })
  const proxy = await proxyFor(t, up.port)
  const got = await get(proxy, up.port)
  t.match(got.text, /^HTTP\/1\.1 200 /)
  const headEnd = got.text.indexOf('\r\n\r\n') + 4
  t.equal(got.bytes - headEnd, total, 'every body byte arrived')
  const closed = await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'forward')
  t.match(closed, { status: 200 })
  t.notOk(closed.error, 'no error')
  t.equal(proxy.proxy.open.size, 0)
})

t.test('an upstream that dies mid-body cuts the client response: no clean end, logged with an error', async (t) => {
  let die!: () => void
  const dying = new Promise<void>((resolve) => (die = resolve))
  const up = await origin(t, (res, socket) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '100000' })
    res.write(Buffer.concat([Buffer.alloc(999, 0x63), Buffer.from('~')]))
    void dying.then(() => socket.destroy())
  })
  const proxy = await proxyFor(t, up.port)
  // the origin dies once its first 1000 body bytes (the last one a "~") have reached the client
  const got = await get(proxy, up.port, (_socket, _received, chunk) => chunk.includes('~') && die())
  t.match(got.text, /^HTTP\/1\.1 200 /, 'the head was already on its way')
  const headEnd = got.text.indexOf('\r\n\r\n') + 4
  t.equal(got.bytes - headEnd, 1000, 'the body is cut where the upstream died: 1000 of 100000 bytes')
  const closed = await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'forward')
  t.ok(closed.error, `logged with error ${String(closed.error)}`)
  t.equal(proxy.proxy.open.size, 0)
})

t.test('a client that goes away mid-body releases the upstream request', async (t) => {
  let upstreamClosed!: () => void
  const released = new Promise<void>((resolve) => (upstreamClosed = resolve))
  const up = await origin(t, (res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' })
    const timer = setInterval(() => res.write(Buffer.alloc(4096, 0x64)), 5)
    res.on('close', () => {
      clearInterval(timer)
      upstreamClosed()
    })
  })
  const proxy = await proxyFor(t, up.port)
  await get(proxy, up.port, (socket, received) => {
    if (received > 20_000) socket.destroy()
  })
  await released
  t.pass('the upstream saw its request end')
  const closed = await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'forward')
  t.ok(closed.error, `logged with error ${String(closed.error)}`)
  t.equal(proxy.proxy.open.size, 0, 'no open connection left')
})

t.test('1xx responses (103 Early Hints) before the final one: the client gets the final response', async (t) => {
  const up = await origin(t, (res) => {
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '6' })
    res.end('final\n')
  })
  const proxy = await proxyFor(t, up.port)
  const got = await get(proxy, up.port)
  t.match(got.text, /^HTTP\/1\.1 200 /)
  t.match(got.text, /\r\n\r\nfinal\n$/)
  const closed = await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'forward')
  t.match(closed, { status: 200 })
  t.notOk(closed.error)
})

t.test('a client that leaves while its request is being decided: logged, released, and shutdown does not wait for it', async (t) => {
  const up = await origin(t, (res) => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(1 << 20) })
    res.end(Buffer.alloc(1 << 20, 0x65))
  })
  let asked!: () => void
  const lookupCalled = new Promise<void>((resolve) => (asked = resolve))
  let answer!: (ips: Ip[]) => void
  const proxy = await startProxy(
    { allow: [`slow.test:${up.port}`, `127.0.0.1:${up.port}`] },
    {
      lookup: () => {
        asked()
        return new Promise<Ip[]>((resolve) => (answer = resolve))
      },
    },
  )
  const client = connect(proxy.port, '127.0.0.1', () => client.write(`GET http://slow.test:${up.port}/ HTTP/1.1\r\nHost: slow.test:${up.port}\r\n\r\n`))
  client.on('error', () => undefined)
  await lookupCalled
  client.destroy()
  await new Promise((resolve) => client.once('close', resolve))
  // a later request the proxy answers itself: by then it has also read the earlier close
  t.match(await fetch(`${proxy.url}/healthz`).then((r) => r.status), 200)
  answer([ip('127.0.0.1')])
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'forward', 'the abandoned request closed')
  t.equal(closed.error, 'client went away')
  t.equal(proxy.proxy.open.size, 0, 'not left open')
  const timeout = setTimeout(() => t.fail('shutdown waited for the abandoned request'), 5_000)
  await proxy.close()
  clearTimeout(timeout)
  t.pass('shut down')
})

t.test('a reload revokes forwarded requests in flight: before the response head with a 403 that says why, after it by cutting the body', async (t) => {
  const waiting = await origin(t, () => undefined) // answers nothing
  const streaming = await origin(t, (res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' })
    res.write('partial')
  })
  const proxy = await startProxy({ allow: [`127.0.0.1:${waiting.port}`, `127.0.0.1:${streaming.port}`] })
  t.teardown(() => proxy.close())
  let headSeen!: () => void
  const head = new Promise<void>((resolve) => (headSeen = resolve))
  const cut = get(proxy, streaming.port, () => headSeen())
  const refused = get(proxy, waiting.port)
  await head
  await proxy.waitForLog((l) => l.message === 'decision' && l.target === `127.0.0.1:${waiting.port}`)
  t.same(proxy.reload({ allow: ['example.com:443'] }), { closed: 2, kept: 0 })
  const before = await refused
  t.match(before.text, /^HTTP\/1\.1 403 /)
  t.match(before.text, /Proxy-Status: proxy-gate; error=http_request_denied; details="rules changed: /)
  const after = await cut
  t.match(after.text, /^HTTP\/1\.1 200 /, 'the head had gone out')
  t.notMatch(after.text, /\r\n0\r\n\r\n$/, 'no clean end of the chunked body')
  const closes = proxy.logs().filter((l) => l.message === 'closed' && l.kind === 'forward')
  t.equal(closes.length, 2)
  for (const c of closes) t.match(c.error, /^rules changed: /)
  t.equal(proxy.proxy.open.size, 0)
})
