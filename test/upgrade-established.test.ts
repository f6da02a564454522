// Once an upgrade's 101 has gone to the client, the connection carries the new protocol: an
// origin that fails after that closes it, and no HTTP answer is ever written into it.
import { createServer, connect, type AddressInfo, type Socket } from 'node:net'
import t from 'tap'
import { startProxy } from './helpers/proxy.js'

const SWITCHED = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'

t.test('an origin reset after its 101: the client\'s connection is closed, with nothing after the 101', async (t) => {
  // answers the upgrade, and resets the connection at the first byte relayed after it
  const origin = createServer((socket: Socket) => {
    let switched = false
    socket.on('error', () => undefined)
    socket.on('data', (d: Buffer) => {
      if (switched) return socket.resetAndDestroy()
      if (!d.toString('latin1').includes('\r\n\r\n')) return
      switched = true
      socket.write(SWITCHED)
    })
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  const port = (origin.address() as AddressInfo).port
  const proxy = await startProxy({ allow: [`127.0.0.1:${port}`] })
  t.teardown(async () => {
    await proxy.close()
    origin.close()
  })

  const client = connect(proxy.port, '127.0.0.1')
  client.on('error', () => undefined)
  let received = ''
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
  client.on('data', (d: Buffer) => {
    const first = received === ''
    received += d.toString('latin1')
    if (first) client.write('ping') // past the 101: the origin resets on this
  })
  client.write(`GET http://127.0.0.1:${port}/ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`)
  const guard = setTimeout(() => client.destroy(), 5_000)
  await closed
  clearTimeout(guard)
  t.match(received, /^HTTP\/1\.1 101 Switching Protocols\r\n/, 'the 101 reached the client')
  t.equal(received.split('HTTP/1.1 ').length - 1, 1, `nothing after it: ${JSON.stringify(received)}`)
  t.match(await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'upgrade'), { kind: 'upgrade' }, 'the upgrade\'s closed line')
})
