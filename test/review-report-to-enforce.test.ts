// Review finding: a reload re-decides open tunnels on their host alone, never on what their
// ClientHello said. A tunnel that report mode let through although its ClientHello named another
// host (sni-mismatch, domain fronting: logged wouldDeny) stays open when a reload switches to
// enforce mode, and keeps serving evil.test through the tunnel to origin.test after the reload
// is logged. The same holds for tls.allowNonTls or tls.ports changed by a reload.
//   report mode: CONNECT origin.test:PORT, ClientHello for evil.test -> allowed, wouldDeny sni-mismatch
//   reload { mode: enforce } -> { closed: 0 } -> GET /after for evil.test reaches the origin
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import t from 'tap'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { startHttpsUpstream } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'

const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n'

/** One request on an open TLS connection: the response text, or '' if the connection closed first. */
function get(tls: TLSSocket, path: string, host: string): Promise<string> {
  return new Promise((resolve) => {
    let text = ''
    const onData = (d: Buffer): void => {
      text += d.toString('latin1')
      if (/\r\n\r\n[^]*\S/.test(text)) finish()
    }
    const finish = (): void => {
      tls.off('data', onData)
      tls.off('close', finish)
      resolve(text)
    }
    tls.on('data', onData)
    tls.once('close', finish)
    tls.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`)
  })
}

t.test('a tunnel report mode let through with a ClientHello for another host is closed by a reload to enforce mode', async (t) => {
  const origin = await startHttpsUpstream('127.0.0.1', ['origin.test', 'evil.test'])
  const dns = await startDns({ 'origin.test': { A: ['127.0.0.1'] } })
  const rules = (mode: string): Record<string, unknown> => ({ mode, allow: [`origin.test:${origin.port}`, `127.0.0.1:${origin.port}`], dns: { servers: [dns.server] }, tls: { ports: [origin.port] } })
  const proxy = await startProxy(rules('report'))
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })

  const socket = netConnect({ host: '127.0.0.1', port: proxy.port })
  t.teardown(() => socket.destroy())
  const established = new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString('latin1'))))
  socket.write(connectHead(`origin.test:${origin.port}`))
  t.equal(await established, ESTABLISHED)
  const tls = tlsConnect({ socket, servername: 'evil.test', ca: origin.tls.cert })
  tls.on('error', () => tls.destroy())
  await new Promise((resolve) => tls.once('secureConnect', resolve))
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.sni === 'evil.test', 'the ClientHello decision'), { decision: 'allow', wouldDeny: true, sni: 'evil.test' }, 'report mode: would deny (domain fronting)')
  t.match(await get(tls, '/before', 'evil.test'), /^HTTP\/1\.1 200 /, 'served in report mode')

  const outcome = proxy.reload(rules('enforce'))
  t.equal(outcome.closed, 1, 'the reload to enforce mode closed the fronted tunnel')
  const after = await get(tls, '/after', 'evil.test')
  t.equal(after, '', 'nothing was answered after the reload')
  t.same(origin.requests.map((r) => `${r.headers.host ?? ''} ${r.url}`), ['evil.test /before'], 'the origin served evil.test nothing after the reload')
})
