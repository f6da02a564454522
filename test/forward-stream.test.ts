// Streaming a forwarded response body (route-forward.ts relayBody): a large body arrives whole
// under backpressure, an upstream that dies mid-body cuts the client's response (never a clean
// end), and a client that goes away mid-body releases the upstream request. Each is logged.
import { createServer, type Server, type ServerResponse } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { startProxy, type TestProxy } from './helpers/proxy.js'

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
function get(proxy: TestProxy, port: number, onData?: (socket: Socket, received: number) => void): Promise<{ text: string; bytes: number; error: string | undefined }> {
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
      onData?.(socket, bytes)
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
  const up = await origin(t, (res, socket) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '100000' })
    res.write(Buffer.alloc(1000, 0x63), () => setTimeout(() => socket.destroy(), 50))
  })
  const proxy = await proxyFor(t, up.port)
  const got = await get(proxy, up.port)
  t.match(got.text, /^HTTP\/1\.1 200 /, 'the head was already on its way')
  const headEnd = got.text.indexOf('\r\n\r\n') + 4
  t.ok(got.bytes - headEnd < 100_000, `the body is cut short (${got.bytes - headEnd} of 100000 bytes)`)
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
