// Opened tunnels, for rules that limit methods and paths: proxy-gate terminates the client's TLS
// with a leaf for the server name, reads each request, and sends the allowed ones on over a new,
// verified TLS connection to the address it checked (with "upstream": through the parent's CONNECT tunnel).
//   tunnel --TLS (leaf for the SNI)--> inner HTTP -> Host == SNI -> decide (host and request, rules in force) -> undici over connectOrigin (the checked IP, TLS verified) -> client
//   with "upstream": ... -> decide (host and request, rules in force) -> undici over CONNECT name:port to the parent, TLS to the origin inside (verified) -> client
//   Upgrade requests inside: decide (host and request, rules in force) -> relayUpgrade (route-upgrade.ts) over the same connectOrigin route
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { http, tls as nodeTls } from '../core/builtins.js'
import type { Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import type { SecureContext } from 'node:tls'
import type httpProxy from 'http-proxy'
import type { Client } from 'undici'
import { undici } from '../core/lazy.js'
import { answerClientError, checkRequestHead, hasBody } from './checks.js'
import { upgradeRequestHeaders } from './headers.js'
import type { ClientIdentity } from '../policy/clients.js'
import { formatIp, type Ip } from '../policy/ip.js'
import type { LeafMinter } from '../certs/leaf.js'
import { checkInnerHost, type Decision } from '../policy/decide.js'
import { redecide } from '../net/gate.js'
import { afterResponse, denial, destroySocket, pendingResponse, replyOnResponse, replyOnSocket } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { relayRequest } from './route-forward.js'
import { parentFor, type Upstream } from '../net/upstream.js'
import { connectOrigin, type OriginRoute } from '../net/origin.js'
import { relayUpgrade } from './route-upgrade.js'
import { logDecision, type OpenConnection, type Runtime, type TunnelEntry } from './runtime.js'
import { carrySecrets, headerObject, type Carried } from './secrets.js'
import { formatHost, formatTarget, hostText, type Target } from '../policy/target.js'

/** A tunnel handed over for opening: what was already read, where it goes, and whose it is. */
export interface TunnelToOpen {
  /** its registration: id, owner, the name the rules matched (the CONNECT host, or the SNI for an IP-literal CONNECT) */
  readonly entry: TunnelEntry
  readonly socket: Socket
  /** bytes already read from the socket (the ClientHello, or what followed the CONNECT) */
  readonly first: Buffer
  /** the checked address to dial */
  readonly ip: Ip
  readonly tls: boolean
}

interface OpenedTunnel {
  readonly id: string
  readonly who: ClientIdentity
  /** the name the rules matched (the CONNECT host, or the SNI for an IP-literal CONNECT) */
  readonly target: Target
  readonly ip: Ip
  readonly resolved: readonly Ip[]
  readonly client: Client
  readonly tls: boolean
  /** the parent proxy the tunnel's requests go through (fixed when it opens), or undefined: direct */
  readonly parent: Upstream | undefined
}

export interface Interceptor {
  /** takes over a tunnel whose first bytes were already read from its socket */
  open(tunnel: TunnelToOpen): Promise<void>
  close(): Promise<void>
}

/** Trust for origins: Node's bundled roots, NODE_EXTRA_CA_CERTS, and any configured extra CAs. */
export function upstreamTrust(extra: readonly string[]): string[] {
  const file = process.env.NODE_EXTRA_CA_CERTS
  const fromEnv = file ? [readFileSync(file, 'utf8')] : []
  return [...nodeTls.rootCertificates, ...fromEnv, ...extra]
}

/**
 * `originTls` verifies origins: built once per trust list (a `ca` list on each connection makes Node
 * build a context per origin connection, ~16 ms for the bundled roots), swapped when it changes.
 */
export function createInterceptor(rt: Runtime, minter: LeafMinter, originTls: () => SecureContext, wsProxy: () => httpProxy): Interceptor {
  const tunnels = new WeakMap<Socket, OpenedTunnel>()
  // Host, header count and the rest are checkRequestHead's (checks.ts), with the proxy port's answers
  const server: Server = http.createServer({ maxHeaderSize: rt.limits().maxHeaderBytes, insecureHTTPParser: false, requireHostHeader: false })
  server.maxHeadersCount = 0

  // each request under the rules in force: the host's as well as the methods' and paths' (a reload may have removed either);
  // then the secrets it carries, toward the tunnel's own checked host and nowhere else
  const decide = (tunnel: OpenedTunnel, req: IncomingMessage): Carried => {
    const gate = rt.gate(tunnel.who)
    const request = { method: req.method ?? 'GET', path: req.url ?? '' }
    const decision = checkInnerHost(gate.ctx, tunnel.target, req.headers.host) ?? redecide(gate, { target: tunnel.target, resolved: tunnel.resolved, request })
    return carrySecrets(gate, tunnel.target, decision, { url: request.path, rawHeaders: req.rawHeaders, path: request.path }, 'the request', !tunnel.tls)
  }

  const log = (tunnel: OpenedTunnel, req: IncomingMessage, decision: Decision): void => {
    const shown = decision.verdict === 'allow' ? { ...decision, dial: [tunnel.ip] } : decision
    const policy = rt.gate(tunnel.who).policyName
    logDecision(rt, { id: tunnel.id, req, method: req.method ?? 'GET', target: tunnel.target, rawTarget: '', decision: shown, resolved: tunnel.resolved, path: (req.url ?? '').split('?')[0], intercepted: true, policy })
  }

  /** The proxy port's head checks (checks.ts), before anything else: a refusal is logged here, and answered as there. */
  const refusedHead = (tunnel: OpenedTunnel, req: IncomingMessage): ProxyReply | undefined => {
    const problem = checkRequestHead(req, rt.limits())
    if (!problem) return undefined
    const policy = rt.gate(tunnel.who).policyName
    logDecision(rt, { id: tunnel.id, req, method: req.method ?? 'GET', target: tunnel.target, rawTarget: '', reply: problem, path: (req.url ?? '').split('?')[0], intercepted: true, policy })
    return problem
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const tunnel = tunnels.get(req.socket)
    if (!tunnel) return replyOnResponse(res, reply(500, 'proxy_internal_error', 'request outside an opened tunnel'), true)
    const problem = refusedHead(tunnel, req)
    if (problem) return replyOnResponse(res, problem, true)
    const { decision, wire } = decide(tunnel, req)
    log(tunnel, req, decision)
    const method = req.method ?? 'GET'
    if (decision.verdict === 'deny') return replyOnResponse(res, denial(method, `${formatTarget(tunnel.target)}${(req.url ?? '').split('?')[0]}`, decision), hasBody(req))
    const origin = `${tunnel.tls ? 'https' : 'http'}://${formatHost(tunnel.target.host)}:${tunnel.target.port}`
    const authority = req.headers.host ?? formatTarget(tunnel.target)
    const via = tunnel.parent ? { via: tunnel.parent.hop, tunnelled: true } : {}
    const up = { id: tunnel.id, kind: 'forward' as const, who: tunnel.who, target: tunnel.target, resolved: tunnel.resolved, origin, authority, chosen: tunnel.ip, path: req.url ?? '/', wire, ...via }
    relayRequest(rt, tunnel.client, up, req, res).catch(() => res.destroy())
  })

  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', destroySocket)
    // pipelined behind requests whose responses are still being written: answered after them, as on the proxy port
    const pending = pendingResponse(socket)
    if (pending) return afterResponse(pending, socket, () => upgrade(req, socket, head))
    upgrade(req, socket, head)
  })

  function upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const tunnel = tunnels.get(req.socket)
    if (!tunnel) return void socket.destroy()
    const problem = refusedHead(tunnel, req)
    if (problem) return replyOnSocket(socket, problem)
    const { decision, wire } = decide(tunnel, req)
    log(tunnel, req, decision)
    if (decision.verdict === 'deny') return replyOnSocket(socket, denial(req.method ?? 'GET', formatTarget(tunnel.target), decision))
    const host = req.headers.host // checked against the server name
    req.headers = { ...upgradeRequestHeaders(wire ? headerObject(wire.rawHeaders) : req.headers), host }
    const path = req.url ?? '/' // what the reload re-decides: the path as the client sent it
    if (wire) req.url = wire.path
    let proxy: httpProxy
    try {
      proxy = wsProxy()
    } catch (error) {
      rt.log.error('internal error', { where: 'intercepted-upgrade', error: error instanceof Error ? error.stack : String(error) })
      return replyOnSocket(socket, reply(500, 'proxy_internal_error', 'internal error in proxy-gate'))
    }
    const { id, target, ip, parent, who } = tunnel
    const started = Date.now()
    // re-decided by a reload with its own method and path, as upgrades on the proxy port are
    const entry: OpenConnection = { id, kind: 'upgrade', target, resolved: tunnel.resolved, who, request: { method: req.method ?? 'GET', path }, close: () => socket.destroy() }
    rt.open.add(entry)
    // the tunnel's own address (or parent), as its requests: the address its decision logged
    const chosen = relayUpgrade(proxy, req, socket, head, { target, addresses: [ip], parent, tls: tunnel.tls ? originTls() : undefined }, rt.limits(), wire?.conceal)
    // bytes stay on the tunnel's closed line
    socket.once('close', () => {
      rt.open.delete(entry)
      const went = chosen()
      rt.record({ type: 'closed', id, kind: 'upgrade', intercepted: true, chosen: went && formatIp(went), via: parent?.hop, durationMs: Date.now() - started })
    })
  }

  // a head the parser refuses (too large, malformed) is answered as on the proxy port; other socket errors close it
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    const tunnel = tunnels.get(socket)
    if (!tunnel || !error.code?.startsWith('HPE_')) return void socket.destroy()
    const policy = rt.gate(tunnel.who).policyName
    answerClientError(error, socket, (r) => logDecision(rt, { id: tunnel.id, req: { socket }, method: '', target: tunnel.target, rawTarget: '', reply: r, intercepted: true, policy }))
  })

  return {
    async open({ entry, socket, first, ip, tls }) {
      const { id, who, target } = entry
      const resolved = entry.resolved ?? [ip]
      // with "upstream": through the parent, unless upstreamBypass; the tunnel keeps the parent it opened with
      const parent = parentFor(rt.upstream?.(), target)
      const started = Date.now()
      // from the handover on: however far the tunnel got (a client can leave while its leaf is minted,
      // minting can fail), its end is logged and what it holds is released
      const held: { client?: Client; lifetime?: NodeJS.Timeout } = {}
      socket.once('close', () => {
        clearTimeout(held.lifetime)
        void held.client?.close().catch(() => undefined)
        rt.record({ type: 'closed', id, kind: 'tunnel', intercepted: true, ...(parent ? { via: parent.hop } : { chosen: formatIp(ip) }), bytesFromClient: socket.bytesRead, bytesToClient: socket.bytesWritten, durationMs: Date.now() - started })
      })
      socket.unshift(first)
      let inner: Socket = socket
      if (tls) {
        const leaf = await minter.contextFor(hostText(target.host))
        if (socket.destroyed) return // the client left while the leaf was minted
        inner = new nodeTls.TLSSocket(socket, { isServer: true, secureContext: leaf, ALPNProtocols: ['http/1.1'] })
        inner.on('error', destroySocket)
      }
      const route: OriginRoute = { target, addresses: [ip], parent, tls: tls ? originTls() : undefined }
      // every connection is connectOrigin's: the checked address (or the parent), never a lookup of the name
      const client = (held.client = new (undici().Client)(`${tls ? 'https' : 'http'}://${formatHost(target.host)}:${target.port}`, {
        connect: (_options, callback) => void connectOrigin(route, rt.limits()).then((c) => callback(null, c.socket), (error: unknown) => callback(error as Error, null)),
      }))
      tunnels.set(inner, { id, who, target, ip, resolved, client, tls, parent })
      const limits = rt.limits()
      inner.setTimeout(limits.tunnelIdleTimeoutMs, () => inner.destroy())
      held.lifetime = setTimeout(() => socket.destroy(), limits.tunnelMaxLifetimeMs).unref()
      Object.assign(server, { maxHeaderSize: limits.maxHeaderBytes }) // read per connection: follows reloads (server.ts)
      server.emit('connection', inner)
      if (!tls) socket.resume() // read up to the first bytes with the socket paused behind them; the HTTP parser now listens
    },
    close() {
      server.close()
      return Promise.resolve()
    },
  }
}
