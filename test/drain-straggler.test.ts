// Shutdown and a connection accepted just before the listener closed, whose request is still on the
// way (a load balancer's, mid rolling restart): it is answered (with Connection: close), not closed
// unread; one that never sends is closed a moment later and the shutdown completes.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { startHttpUpstream } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

function silentClient(port: number): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    let text = ''
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
    socket.on('error', () => undefined)
    const closed = new Promise<void>((done) => socket.once('close', () => done()))
    socket.once('connect', () => resolve({ socket, received: () => text, closed }))
    socket.once('error', reject)
  })
}

t.test('a request that comes after shutdown began, on a connection accepted before, is answered', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const target = `127.0.0.1:${upstream.port}`
  const proxy = await startProxy({ allow: [target], limits: { drainDelayMs: 300, shutdownGraceMs: 5_000 } })
  const late = await silentClient(proxy.port)
  const silent = await silentClient(proxy.port)
  const stopped = proxy.close()
  const line = await proxy.waitForLog((l) => l.message === 'stopped accepting')
  t.equal(line.connections, 2, `both connections were accepted before the listener closed: ${JSON.stringify(line)}`)
  late.socket.write(`GET http://${target}/late HTTP/1.1\r\nHost: ${target}\r\n\r\n`)
  await late.closed
  t.match(late.received(), /^HTTP\/1\.1 200 /, 'the late request was served')
  t.match(late.received(), /connection: close/i, 'and told to go elsewhere next time')
  t.match(late.received(), /hello GET \/late$/)
  await silent.closed
  t.equal(silent.received(), '', 'a connection that never sent anything is closed without an answer')
  await stopped
  t.pass('the shutdown completed')
})
