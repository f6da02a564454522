// WebSocket and other Upgrade requests, relayed by http-proxy once the gate allows them.
//   client --GET http://host/ws Upgrade--> decideHttp (absolute-form.ts) -> http-proxy ws to checked IP -> 101 -> relay
//   transparent listener: client --GET /ws Upgrade, Host: host--> decideHttp (port = the listener's) -> as above
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type httpProxy from 'http-proxy'
import { decideHttp, type RequestForm } from './absolute-form.js'
import type { ClientIdentity } from '../policy/clients.js'
import { upstreamFailure } from '../net/dial.js'
import { clientResponseHeaders, upgradeRequestHeaders } from './headers.js'
import { formatIp, formatIpPort } from '../policy/ip.js'
import { replyOnSocket } from './respond.js'
import { logClosed, type OpenConnection, type Runtime } from './runtime.js'
import { hostHeader } from '../policy/target.js'

export async function upgradeRoute(rt: Runtime, proxy: httpProxy, who: ClientIdentity, req: IncomingMessage, socket: Socket, head: Buffer, form: RequestForm): Promise<void> {
  const allowed = await decideHttp(rt, who, req, form, (r) => replyOnSocket(socket, r))
  if (!allowed || socket.destroyed) return
  const { id, target, path, resolved, ip } = allowed
  const ipText = formatIp(ip)
  req.headers = upgradeRequestHeaders(req.headers)
  req.headers.host = hostHeader(target)
  req.url = path
  const limits = rt.limits()
  const started = Date.now()
  const open: OpenConnection = { id, kind: 'upgrade', target, resolved, who, close: () => socket.destroy() }
  rt.open.add(open)
  const lifetime = setTimeout(() => socket.destroy(), limits.tunnelMaxLifetimeMs).unref()
  socket.once('close', () => {
    clearTimeout(lifetime)
    rt.open.delete(open)
    logClosed(rt, { id, kind: 'upgrade', chosen: ipText, bytesFromClient: socket.bytesRead, bytesToClient: socket.bytesWritten, durationMs: Date.now() - started })
  })
  proxy.ws(req, socket, head, { target: { protocol: 'http:', host: ipText, hostname: ipText, port: String(target.port) } }, (error: NodeJS.ErrnoException) => {
    replyOnSocket(socket, upstreamFailure(error.code ?? 'EUNKNOWN', formatIpPort(ip, target.port)))
  })
}

/** One http-proxy instance for all upgrades: ties both sockets' lifetimes and the idle timeout together. */
export function createUpgradeProxy(rt: Runtime, proxyFactory: typeof httpProxy): httpProxy {
  const proxy = proxyFactory.createProxyServer({ ws: true, xfwd: false, changeOrigin: false })
  proxy.on('proxyReqWs', (proxyReq, _req, socket) => {
    proxyReq.setTimeout(rt.limits().connectTimeoutMs, () => proxyReq.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })))
    proxyReq.on('upgrade', (_res, upstream: Socket) => {
      proxyReq.setTimeout(0)
      upstream.setTimeout(rt.limits().tunnelIdleTimeoutMs, () => upstream.destroy())
      upstream.on('close', () => socket.destroy())
      socket.on('close', () => upstream.destroy())
    })
    // 'response' means no 101: the origin refused the upgrade. http-proxy relays this head as
    // received but pipes the de-chunked body, then only ends the client socket. Make the framing
    // close-delimited, drop hop-by-hop headers, and free the socket once the response is sent.
    proxyReq.on('response', (res: IncomingMessage) => {
      const clean = clientResponseHeaders(res.headers)
      for (const name of Object.keys(res.headers)) Reflect.deleteProperty(res.headers, name)
      Object.assign(res.headers, clean, { connection: 'close' })
      socket.once('finish', () => socket.destroy())
    })
  })
  proxy.on('error', (_error, _req, target) => {
    if ('destroy' in target) target.destroy()
  })
  return proxy
}
