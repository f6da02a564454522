// Talking to the parent proxy ("upstream" in rules.json). proxy-gate decides first (rules, DNS and
// the address guard on the final destination); only allowed traffic gets here.
//   tunnels:    TCP to the parent -> CONNECT name:port (+ the configured Proxy-Authorization)
//               -> strict, bounded response head -> 2xx -> the socket goes to the relay
//   plain HTTP: absolute-form requests on a pool of connections to the parent, with the
//               configured Proxy-Authorization (the client's own never crosses: proxy/headers.ts)
//   opened tunnels and ws:// upgrades: a CONNECT tunnel as above (TLS to the origin over it for
//               https/wss, verified as a direct connection would be), and their requests inside it
// Nothing of the tunnel (the ClientHello or anything else the client sent) is written to the
// parent before its 2xx: a parent that refuses the CONNECT could read it as a request (corpus 92).
// The parent's failures become 502/504 replies whose Proxy-Status names it as next-hop.
import { http } from '../core/builtins.js'
import { connect, type Socket } from 'node:net'
import type { SecureContext } from 'node:tls'
import type { Dispatcher } from 'undici'
import { undici } from '../core/lazy.js'
import type { UpstreamProxy } from '../rules/config.js'
import { DialFailure, startTls, upstreamFailure } from './dial.js'
import { parseIp } from '../policy/ip.js'
import { patternMatches, type HostPattern } from '../policy/rules.js'
import type { SelfAddress } from '../policy/decide.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { formatTarget, type Target } from '../policy/target.js'

export interface UpstreamOptions {
  /** TCP connect timeout for the pool that carries plain HTTP (fixed when the pool is made: a change makes a new one) */
  readonly connectTimeoutMs: number
  /** where proxy-gate itself listens: a parent that turns out to be one of these is a loop */
  readonly self: () => readonly SelfAddress[]
}

export interface TunnelLimits {
  /** bounds the TCP connect to the parent, and then again the wait for its answer */
  readonly connectTimeoutMs: number
  /** the largest response head accepted from the parent */
  readonly maxHeaderBytes: number
}

/** A tunnel the parent accepted, and how many bytes the CONNECT exchange took each way. */
export interface ParentTunnel {
  readonly socket: Socket
  readonly sent: number
  readonly received: number
}

export interface Upstream {
  readonly proxy: UpstreamProxy
  /** `host:port` of the parent: the Proxy-Status next-hop */
  readonly hop: string
  /** the pool's TCP connect timeout */
  readonly connectTimeoutMs: number
  /** whether traffic to this destination goes through the parent (false: upstreamBypass) */
  routes(target: Target): boolean
  /** CONNECT through the parent; rejects with a DialFailure whose reply names the parent */
  tunnel(target: Target, limits: TunnelLimits): Promise<ParentTunnel>
  /** for plain HTTP: bound to the parent, adds the configured Proxy-Authorization */
  readonly dispatcher: Dispatcher
  /** lets requests in flight finish, then closes the connections to the parent */
  close(): Promise<void>
}

/** The parent's failure to connect or answer, as a reply that names it. */
export function parentFailure(code: string, hop: string): ProxyReply {
  const where = `upstream proxy ${hop}`
  const base = code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? reply(502, 'dns_error', `cannot resolve ${where} (${code})`) : upstreamFailure(code, where)
  return { ...base, nextHop: hop }
}

/** The parent answered, but not with a 2xx. 407 means our own "upstream" credentials are wrong or missing. */
export function parentRefused(status: number, hop: string, what: string): ProxyReply {
  const said = `upstream proxy ${hop} answered ${status} ${http.STATUS_CODES[status] ?? ''}`.trimEnd()
  const r =
    status === 407
      ? reply(502, 'proxy_configuration_error', `${said} to ${what}: check the credentials in "upstream"`)
      : reply(status === 504 ? 504 : 502, 'destination_unavailable', `${said} to ${what}`)
  return { ...r, nextHop: hop, receivedStatus: status }
}

function loopReply(hop: string): ProxyReply {
  return { ...reply(502, 'proxy_loop_detected', `upstream proxy ${hop} is proxy-gate itself`), nextHop: hop }
}

function isSelf(socket: Socket, self: readonly SelfAddress[]): boolean {
  const ip = parseIp(socket.remoteAddress ?? '')
  return ip !== undefined && self.some((s) => s.port === socket.remotePort && s.ip.family === ip.family && s.ip.value === ip.value)
}

// RFC 9112: status-line and field-line, strictly: no bare CR/LF, no obs-fold, no space before ":".
const STATUS_LINE = /^HTTP\/1\.[01] ([1-5][0-9]{2})(?: [\t\x20-\x7e\x80-\xff]*)?$/
const FIELD_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*$/

/** The status of a complete response head (latin1, ending in CRLF CRLF), or undefined when malformed. */
export function parseParentHead(head: string): number | undefined {
  const lines = head.slice(0, -4).split('\r\n')
  const status = STATUS_LINE.exec(lines[0] ?? '')
  if (!status || !lines.slice(1).every((line) => FIELD_LINE.test(line))) return undefined
  return Number(status[1])
}

/** The CONNECT request for the parent: the destination as decided, and only our own credentials. */
function connectRequest(target: Target, authorization: string | undefined): string {
  const authority = formatTarget(target)
  const auth = authorization === undefined ? '' : `Proxy-Authorization: ${authorization}\r\n`
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`
}

function openParentTunnel(proxy: UpstreamProxy, target: Target, limits: TunnelLimits, self: () => readonly SelfAddress[]): Promise<ParentTunnel> {
  const hop = proxy.hop
  const what = `CONNECT ${formatTarget(target)}`
  return new Promise((resolve, reject) => {
    const socket = connect({ host: proxy.host, port: proxy.target.port, allowHalfOpen: true, noDelay: true })
    let settled = false
    let head = Buffer.alloc(0)
    let request = Buffer.alloc(0)
    const fail = (r: ProxyReply): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      reject(new DialFailure(r))
    }
    let timer = setTimeout(() => fail(parentFailure('ETIMEDOUT', hop)), limits.connectTimeoutMs)
    // stays for the socket's life: after the 2xx the relay handles errors, this only ignores them
    socket.on('error', (error: NodeJS.ErrnoException) => fail(parentFailure(error.code ?? 'EUNKNOWN', hop)))
    const onEnd = (): void => fail({ ...reply(502, 'connection_terminated', `upstream proxy ${hop} closed the connection before answering ${what}`), nextHop: hop })
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0 ? head.length > limits.maxHeaderBytes : end + 4 > limits.maxHeaderBytes) {
        return fail({ ...reply(502, 'http_protocol_error', `upstream proxy ${hop} sent a response head larger than ${limits.maxHeaderBytes} bytes to ${what}`), nextHop: hop })
      }
      // a bare LF would never end the head: refuse it now rather than at the timeout
      const malformed = head.subarray(0, end < 0 ? head.length : end + 4).some((byte, i) => byte === 0x0a && head[i - 1] !== 0x0d)
      if (end < 0 && !malformed) return
      const status = malformed ? undefined : parseParentHead(head.subarray(0, end + 4).toString('latin1'))
      if (status === undefined) return fail({ ...reply(502, 'http_protocol_error', `upstream proxy ${hop} sent a malformed response to ${what}`), nextHop: hop })
      if (status < 200 || status > 299) return fail(parentRefused(status, hop, what))
      settled = true
      clearTimeout(timer)
      socket.pause()
      socket.off('data', onData)
      socket.off('end', onEnd)
      // whatever followed the head already belongs to the tunnel (a server that speaks first)
      if (head.length > end + 4) socket.unshift(head.subarray(end + 4))
      resolve({ socket, sent: request.length, received: end + 4 })
    }
    socket.once('connect', () => {
      if (isSelf(socket, self())) return fail(loopReply(hop))
      clearTimeout(timer)
      timer = setTimeout(() => fail({ ...reply(504, 'connection_read_timeout', `upstream proxy ${hop} did not answer ${what} within ${limits.connectTimeoutMs} ms`), nextHop: hop }), limits.connectTimeoutMs)
      request = Buffer.from(connectRequest(target, proxy.authorization()), 'latin1')
      socket.on('data', onData)
      socket.once('end', onEnd)
      socket.write(request)
    })
  })
}

/** Flat header list for the parent: any Proxy-Authorization dropped, the configured one added. */
function withParentAuth(headers: Dispatcher.DispatchOptions['headers'], authorization: string | undefined): string[] {
  const flat: string[] = []
  const add = (name: string, value: string | string[] | undefined): void => {
    if (value === undefined || name.toLowerCase() === 'proxy-authorization') return
    for (const v of Array.isArray(value) ? value : [value]) flat.push(name, v)
  }
  if (Array.isArray(headers)) for (let i = 0; i + 1 < headers.length; i += 2) add(headers[i] as string, headers[i + 1])
  else if (headers && Symbol.iterator in headers) for (const [name, value] of headers) add(name, value)
  else if (headers) for (const [name, value] of Object.entries<string | string[] | undefined>(headers)) add(name, value)
  if (authorization !== undefined) flat.push('proxy-authorization', authorization)
  return flat
}

function routesFor(bypass: readonly HostPattern[]): (target: Target) => boolean {
  return (target) => !bypass.some((pattern) => patternMatches(pattern, target.host))
}

function createUpstream(proxy: UpstreamProxy, bypass: readonly HostPattern[], options: UpstreamOptions): Upstream {
  const hop = proxy.hop
  const { buildConnector, Pool } = undici() // loaded when a parent is configured, not before
  const connector = buildConnector({ timeout: options.connectTimeoutMs })
  const pool = new Pool(`http://${hop}`, {
    connections: 64,
    keepAliveTimeout: 4_000,
    connect: (opts, callback) =>
      connector(opts, (error: Error | null, socket: Socket | null) => {
        if (error || !socket) return callback(error ?? new Error('no socket'), null)
        if (!isSelf(socket, options.self())) return callback(null, socket)
        socket.destroy()
        callback(new DialFailure(loopReply(hop)), null)
      }),
  })
  const authorization = proxy.authorization()
  const dispatcher = pool.compose((dispatch) => (opts, handler) => dispatch({ ...opts, headers: withParentAuth(opts.headers, authorization) }, handler))
  return {
    proxy,
    hop,
    connectTimeoutMs: options.connectTimeoutMs,
    routes: routesFor(bypass),
    tunnel: (target, limits) => openParentTunnel(proxy, target, limits, options.self),
    dispatcher,
    close: () => pool.close(),
  }
}

/**
 * The upstream for a (re)loaded config: the current one when the parent, its credentials and the
 * connect timeout are unchanged (its connections are kept; only upstreamBypass is refreshed), otherwise a new one,
 * and the replaced one closes once its requests finish. Open tunnels keep the parent they have.
 */
export function nextUpstream(current: Upstream | undefined, config: { readonly upstream: UpstreamProxy | undefined; readonly upstreamBypass: readonly HostPattern[] }, options: UpstreamOptions): Upstream | undefined {
  const proxy = config.upstream
  if (proxy && current && proxy.sameAs(current.proxy) && current.connectTimeoutMs === options.connectTimeoutMs) return { ...current, routes: routesFor(config.upstreamBypass) }
  if (current) void current.close().catch(() => undefined)
  return proxy ? createUpstream(proxy, config.upstreamBypass, options) : undefined
}

/** How traffic to an allowed destination leaves, in words (for `proxy-gate check`). */
export function describeRoute(config: { readonly upstream: UpstreamProxy | undefined; readonly upstreamBypass: readonly HostPattern[] }, target: Target): string {
  if (!config.upstream) return 'direct'
  return routesFor(config.upstreamBypass)(target) ? `through upstream proxy ${config.upstream.hop}` : 'direct (upstreamBypass)'
}

/** The parent this destination goes through, or undefined when it goes direct. */
export function parentFor(upstream: Upstream | undefined, target: Target): Upstream | undefined {
  return upstream?.routes(target) ? upstream : undefined
}

/** A plain-HTTP request rewritten for the parent: absolute-form, to the parent's address. */
export function throughParent<T extends { readonly origin: string; readonly authority: string; readonly path: string }>(up: T, parent: Upstream): T & { readonly via: string } {
  return { ...up, origin: `http://${parent.hop}`, path: `http://${up.authority}${up.path}`, via: parent.hop }
}

/**
 * A connection to the destination through the parent, for a client that speaks HTTP over it:
 * the parent's CONNECT tunnel, with TLS to the origin when `tls` is given. Rejects with a DialFailure.
 */
export async function connectThrough(parent: Upstream, target: Target, limits: TunnelLimits, tls: SecureContext | undefined): Promise<Socket> {
  const { socket } = await parent.tunnel(target, limits)
  return tls ? startTls(socket, target, tls, `${formatTarget(target)} (through upstream proxy ${parent.hop})`, limits.connectTimeoutMs) : resumeOnRead(socket)
}

/**
 * The tunnel is paused after the parent's 2xx, and an HTTP client only adds a 'data' listener,
 * which does not resume a paused stream. Resumed once it does: resumed earlier, what followed
 * the 2xx would be emitted to no one.
 */
function resumeOnRead(socket: Socket): Socket {
  const onListener = (event: string | symbol): void => {
    if (event !== 'data') return
    socket.off('newListener', onListener)
    process.nextTick(() => socket.resume()) // 'newListener' comes before the listener is added
  }
  socket.on('newListener', onListener)
  return socket
}
