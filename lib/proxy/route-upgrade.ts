// WebSocket and other Upgrade requests, relayed by http-proxy once the gate allows them.
//   client --GET http://host/ws Upgrade--> decideHttp (absolute-form.ts) -> http-proxy ws to a checked IP (each in turn) -> 101 -> relay
//   with "upstream": ... -> decideHttp -> CONNECT host:port to the parent (upstream.ts) -> the upgrade request inside it -> 101 -> relay
//   transparent listener: client --GET /ws Upgrade, Host: host--> decideHttp (port = the listener's) -> as above
//   opened tunnels (intercept.ts): the request decided there -> relayUpgrade as above (TLS to the origin for wss)
// The connection is always connectOrigin's (net/origin.ts): never a second lookup of the name.
// Through a parent the upgrade travels in a CONNECT tunnel, as browsers send ws:// through a proxy
// (RFC 6455 4.1): parents commonly pass no Upgrade on forwarded requests (Squid: not before
// http_upgrade_request_protocols, and then only where configured).
import type { Agent as HttpAgent, IncomingMessage } from 'node:http'
import { http, https } from '../core/builtins.js'
import type { Socket } from 'node:net'
import type httpProxy from 'http-proxy'
import { decideHttp, type RequestForm } from './absolute-form.js'
import type { ClientIdentity } from '../policy/clients.js'
import { DialFailure, upstreamFailure } from '../net/dial.js'
import { connectOrigin, originWhere, type OriginRoute } from '../net/origin.js'
import { parentFor, type TunnelLimits } from '../net/upstream.js'
import { clientResponseHeaders, upgradeRequestHeaders } from './headers.js'
import { formatIp, type Ip } from '../policy/ip.js'
import { refuserFor, replyOnSocket } from './respond.js'
import { type OpenConnection, type Runtime } from './runtime.js'
import { headerObject } from './secrets.js'
import { hostHeader, hostText } from '../policy/target.js'

/** An agent for one upgrade whose connection is `open`'s: it never looks a name up. */
function agentFor(open: () => Promise<Socket>, secure: boolean): HttpAgent {
  const agent = secure ? new https.Agent() : new http.Agent()
  agent.createConnection = (_options, callback) => {
    const done = callback as (error: Error | null, socket?: Socket) => void
    open().then((socket) => done(null, socket), (error: unknown) => done(error as Error))
    return undefined
  }
  return agent
}

/** What the client is told when the upgrade fails: a dial or parent failure as it is, else who failed. */
function upgradeFailure(error: NodeJS.ErrnoException, where: string): ReturnType<typeof upstreamFailure> {
  return error instanceof DialFailure ? error.reply : upstreamFailure(error.code ?? 'EUNKNOWN', where)
}

/**
 * Relays an allowed upgrade (its head already rewritten) over connectOrigin's connection: the
 * checked addresses, or the parent; direct and in opened tunnels alike. Returns where it went, once connected.
 */
export function relayUpgrade(proxy: httpProxy, req: IncomingMessage, socket: Socket, head: Buffer, route: OriginRoute, limits: TunnelLimits, conceal?: (text: string) => string): () => Ip | undefined {
  if (conceal) concealers.set(req, conceal)
  let chosen: Ip | undefined
  const open = async (): Promise<Socket> => {
    const connection = await connectOrigin(route, limits)
    chosen = connection.ip
    return connection.socket
  }
  // the agent makes the connection: the host only completes the URL (Host is the request's own)
  const host = hostText(route.target.host)
  const target = { protocol: route.tls ? 'https:' : 'http:', host, hostname: host, port: String(route.target.port) }
  // an error after the 101 (or the origin's refusal) went out: the socket is closed, never answered into
  const refuse = refuserFor(socket)
  proxy.ws(req, socket, head, { target, agent: agentFor(open, route.tls !== undefined), changeOrigin: false }, (error: NodeJS.ErrnoException) => {
    refuse(upgradeFailure(error, originWhere(route, chosen)))
  })
  return () => chosen
}

export async function upgradeRoute(rt: Runtime, proxy: httpProxy, who: ClientIdentity, req: IncomingMessage, socket: Socket, head: Buffer, form: RequestForm): Promise<void> {
  const allowed = await decideHttp(rt, who, req, form, (r) => replyOnSocket(socket, r))
  if (!allowed || socket.destroyed) return
  const { id, target, path, resolved, wire } = allowed
  req.headers = upgradeRequestHeaders(wire ? headerObject(wire.rawHeaders) : req.headers)
  req.headers.host = hostHeader(target)
  req.url = wire?.path ?? path
  const limits = rt.limits()
  const route: OriginRoute = { target, addresses: allowed.dial, parent: parentFor(rt.upstream?.(), target), tls: undefined }
  const started = Date.now()
  const entry: OpenConnection = { id, kind: 'upgrade', target, resolved, who, request: { method: req.method ?? 'GET', path }, close: () => socket.destroy() }
  rt.open.add(entry)
  const lifetime = setTimeout(() => socket.destroy(), limits.tunnelMaxLifetimeMs).unref()
  const chosen = relayUpgrade(proxy, req, socket, head, route, limits, wire?.conceal)
  socket.once('close', () => {
    clearTimeout(lifetime)
    rt.open.delete(entry)
    const ip = chosen()
    rt.record({ type: 'closed', id, kind: 'upgrade', chosen: ip && formatIp(ip), via: route.parent?.hop, bytesFromClient: socket.bytesRead, bytesToClient: socket.bytesWritten, durationMs: Date.now() - started })
  })
}

/** For upgrades that carry secrets' values: their answers' headers get placeholders back (an echoed subprotocol). */
const concealers = new WeakMap<IncomingMessage, (text: string) => string>()

function concealHeaders(req: IncomingMessage, headers: IncomingMessage['headers']): void {
  const conceal = concealers.get(req)
  if (!conceal) return
  for (const [name, value] of Object.entries(headers)) headers[name] = Array.isArray(value) ? value.map(conceal) : value === undefined ? value : conceal(value)
}

/** One http-proxy instance for all upgrades: ties both sockets' lifetimes and the idle timeout together. */
export function createUpgradeProxy(rt: Runtime, proxyFactory: typeof httpProxy): httpProxy {
  const proxy = proxyFactory.createProxyServer({ ws: true, xfwd: false, changeOrigin: false })
  proxy.on('proxyReqWs', (proxyReq, req, socket) => {
    proxyReq.setTimeout(rt.limits().connectTimeoutMs, () => proxyReq.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })))
    // these listeners run before http-proxy's own, which write the answer's head
    proxyReq.on('upgrade', (res: IncomingMessage, upstream: Socket) => {
      concealHeaders(req, res.headers)
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
      concealHeaders(req, res.headers)
      socket.once('finish', () => socket.destroy())
    })
  })
  proxy.on('error', (_error, _req, target) => {
    if ('destroy' in target) target.destroy()
  })
  return proxy
}
