// Review of the CONNECT fast path: a CONNECT that follows a keep-alive request on the same connection
// is node:http's on both paths, and node:http hands the socket over as soon as it has read the head,
// even while the earlier request's response is still to be written. That response must come first
// (RFC 9112 9.3.2) and never be written into the tunnel opened after it; a refusal of the CONNECT
// must still be an HTTP answer after it.
import { createServer as createHttpServer } from 'node:http'
import { createServer, type AddressInfo, type Server } from 'node:net'
import t from 'tap'
import { rawSession, startWsUpstream } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

/** the proxy's answers without their Date lines (node:http writes the time into its own) */
const undated = (text: string): string => text.replace(/^date: [^\r\n]*\r\n/gim, '')

const SLOW = 'HTTP/1.1 200 OK\r\ncontent-length: 7\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nslow /a'

async function listening<S extends Server | ReturnType<typeof createHttpServer>>(server: S): Promise<{ server: S; target: string }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, target: `127.0.0.1:${(server.address() as AddressInfo).port}` }
}

for (const fast of [true, false]) {
  t.test(`a CONNECT pipelined behind a response still on its way waits for it (${fast ? 'fast path' : 'node:http'})`, async (t) => {
    // the plain-HTTP origin answers after the CONNECT behind it was read; the tunnel's server speaks first
    const arrived: Array<(answer: () => void) => void> = []
    /** resolves, once the origin has the next GET, with what answers it */
    const nextGet = (): Promise<() => void> => new Promise((resolve) => arrived.push(resolve))
    const slow = await listening(createHttpServer((req, res) => arrived.shift()?.(() => res.end(`slow ${req.url ?? ''}`))))
    const tunnelServer = await listening(createServer((socket) => socket.on('error', () => socket.destroy()).end('tunnel-open')))
    t.teardown(() => {
      slow.server.closeAllConnections()
      slow.server.close()
      tunnelServer.server.close()
    })
    const ws = await startWsUpstream()
    t.teardown(() => ws.close())
    const wsTarget = `127.0.0.1:${ws.port}`
    const proxy = await startProxy({ allow: [slow.target, tunnelServer.target, wsTarget] }, { connectFastPath: fast })
    t.teardown(() => proxy.close())

    const client = await rawSession(proxy.port)
    t.teardown(() => client.destroy())
    const get = nextGet()
    await client.send(`GET http://${slow.target}/a HTTP/1.1\r\nHost: ${slow.target}\r\n\r\nCONNECT ${tunnelServer.target} HTTP/1.1\r\n\r\n`)
    ;(await get)()
    const text = await client.waitFor((x) => x.endsWith('tunnel-open'))
    t.equal(undated(text), `${SLOW}HTTP/1.1 200 Connection established\r\n\r\ntunnel-open`, 'the GET is answered first, then the tunnel opens; nothing of one inside the other')

    const refused = await rawSession(proxy.port)
    t.teardown(() => refused.destroy())
    const second = nextGet()
    await refused.send(`GET http://${slow.target}/a HTTP/1.1\r\nHost: ${slow.target}\r\n\r\nCONNECT denied.test:443 HTTP/1.1\r\n\r\n`)
    ;(await second)()
    await refused.closed
    t.match(undated(refused.text()), new RegExp(`^${SLOW.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}HTTP/1\\.1 403 Forbidden\\r\\n`), 'the refusal is an HTTP answer after the GET\'s')
  
    const upgrading = await rawSession(proxy.port)
    t.teardown(() => upgrading.destroy())
    const third = nextGet()
    const upgrade = `GET http://${wsTarget}/ HTTP/1.1\r\nHost: ${wsTarget}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`
    await upgrading.send(`GET http://${slow.target}/a HTTP/1.1\r\nHost: ${slow.target}\r\n\r\n${upgrade}`)
    ;(await third)()
    const upgraded = await upgrading.waitFor((x) => x.indexOf('101 Switching') >= 0 && x.includes('\r\n\r\n', x.indexOf('101 Switching')))
    t.ok(undated(upgraded).startsWith(`${SLOW}HTTP/1.1 101 Switching Protocols\r\n`), 'an Upgrade pipelined the same way is answered after the GET too')
  })
}
