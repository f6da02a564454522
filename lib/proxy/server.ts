// The running proxy: one HTTP listener that routes CONNECT, Upgrade and absolute-form requests,
// answers its own health check, swaps rules atomically on reload and shuts down gracefully; with
// "sandbox", transparent listeners too (transparent.ts), whose HTTP connections it also parses; with
// "socks", a SOCKS5 listener (socks.ts) whose tunnels take CONNECT's path.
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http'
import { http, tls } from '../core/builtins.js'
import type { AddressInfo, Socket } from 'node:net'
import type httpProxy from 'http-proxy'
import type { SecureContext } from 'node:tls'
import type { Agent } from 'undici'
import { httpProxy as loadHttpProxy, undici } from '../core/lazy.js'
import type { Config } from '../rules/config.js'
import { gateFor, redecide, type Gate } from '../net/gate.js'
import { createAuthenticator } from './auth.js'
import type { Ca } from '../certs/ca.js'
import { answerClientError, hasBody } from './checks.js'
import { DEFAULT_POLICY, type ClientIdentity } from '../policy/clients.js'
import { createInterceptor, upstreamTrust } from './intercept.js'
import { parseIp } from '../policy/ip.js'
import { createLeafMinter } from '../certs/leaf.js'
import { LinkedSet } from './linked-set.js'
import { generatePac, pacEtag, type PacFlavor } from '../wiring/pac.js'
import type { Logger } from '../core/log.js'
import { sandboxSocksListen, type SandboxSettings } from '../rules/sandbox.js'
import type { SelfAddress } from '../policy/decide.js'
import { createLookup, type Lookup } from '../net/resolve.js'
import { selfAddresses } from '../net/self.js'
import { afterResponse, destroySocket, pendingResponse, refuserFor, replyOnResponse } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { connectRoute } from './route-connect.js'
import type { RequestHead } from './connect-head.js'
import { takeProxyPort } from './proxy-port.js'
import { forwardRoute } from './route-forward.js'
import { ABSOLUTE_FORM, type RequestForm } from './absolute-form.js'
import { transparentConnect, transparentTlsRoute } from './route-transparent.js'
import { createTransparentListeners, sameListeners } from './transparent.js'
import { localRoute, type PacFile } from './route-local.js'
import { answerProbe, probeNonce } from './route-probe.js'
import { createUpgradeProxy, upgradeRoute } from './route-upgrade.js'
import { createRecorder, logDecision, timedLookup, type OpenConnection, type OpenView, type ProxyEvent, type ReloadRecord, type Runtime } from './runtime.js'
import { formatTarget } from '../policy/target.js'
import { nextUpstream, type UpstreamOptions } from '../net/upstream.js'
import { VERSION } from '../core/version.js'
import { createSandboxDns, dnsListener } from '../dns/server.js'
import { createSocksListener, type SocksListener, type SocksServe } from './socks.js'
import { socksRoute } from './route-socks.js'

export interface ProxyOptions {
  readonly config: Config
  readonly log: Logger
  /** DNS override for tests and embedding; default: the resolver described by config.dns */
  readonly lookup?: Lookup
  /** `host:port` written into the PAC file; default: the address the listener is bound to */
  readonly advertise?: string
  /** the local CA certificate (PEM) served at /ca.crt; absent: /ca.crt answers 404 */
  readonly caCertPem?: string
  /** the local CA with its key: needed to open tunnels for rules that limit methods or paths */
  readonly ca?: Ca
  /** extra CA certificates (PEM) trusted for origins reached through opened tunnels */
  readonly upstreamCa?: readonly string[]
  /** sees every decision and finished connection, as logged */
  readonly observe?: (event: ProxyEvent) => void
  /** false: CONNECT heads on the proxy port are read by node:http too (the fast path's differential test) */
  readonly connectFastPath?: boolean
}

export interface ReloadOutcome {
  readonly closed: number
  readonly kept: number
}

export interface Proxy {
  listen(): Promise<AddressInfo>
  address(): AddressInfo
  /** where the "socks" listener is bound, when there is one */
  socksAddress(): AddressInfo | undefined
  /** swaps in new rules; open connections the new rules deny are closed */
  /** `upstreamCa`: the tls.upstreamCaFiles contents as now read (absent: unchanged) */
  reload(config: Config, upstreamCa?: readonly string[]): ReloadOutcome
  /**
   * not ready at once; keeps accepting (answering with Connection: close) for limits.drainDelayMs,
   * then stops accepting, lets open connections finish until limits.shutdownGraceMs, closes the rest
   */
  shutdown(): Promise<void>
  /** during shutdown: skips what is left of the drain delay and the grace period */
  hurry(): void
  /** listening with rules loaded, and not shutting down */
  ready(): boolean
  /** tells observers (metrics, dashboard) how a reload went */
  noteReload(record: ReloadRecord): void
  readonly open: OpenView
}

/** The sandbox DNS server's address: never a destination either (a tunnel to it would bypass its rate limit and log). */
function dnsSelf(sandbox: SandboxSettings | undefined): SelfAddress[] {
  return sandbox?.dnsPort === undefined ? [] : [{ ip: sandbox.address, port: sandbox.dnsPort }]
}

type HeadLines = OutgoingHttpHeaders | OutgoingHttpHeader[]

/** how long a connection accepted just before shutdown has to send its request (a load balancer's, whose bytes are on the way) */
const STRAGGLER_MS = 1_000

export function createProxy(options: ProxyOptions): Proxy {
  const { log } = options
  let config = options.config
  let self: SelfAddress[] = []
  const record = createRecorder(log, options.observe)
  // the resolver and its answer cache outlive reloads that leave "dns" as it was
  let dns: { readonly settings: string; readonly lookup: Lookup } | undefined
  const lookupFor = (c: Config): Lookup => {
    const settings = JSON.stringify(c.dns, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value))
    if (dns?.settings !== settings) dns = { settings, lookup: timedLookup(options.lookup ?? createLookup(c.dns), record) }
    return dns.lookup
  }
  let generation = 0
  const makeGate = (c: Config): Gate => ({
    policy: c.policy,
    policyName: DEFAULT_POLICY,
    policies: c.policies,
    ctx: { mode: c.mode, self, tls: c.tls },
    lookup: lookupFor(c),
    generation: ++generation,
    values: c.secretValues,
  })
  let gate = makeGate(config)
  let seq = 0
  const boot = Date.now().toString(36)
  const open = new LinkedSet<OpenConnection>()
  let ready = false
  let stopping: Promise<void> | undefined
  let draining = false
  // every client socket of the HTTP listener (tunnels included), for the count closed at the deadline;
  // linked sets, as each request or tunnel joins and leaves (see linked-set.ts)
  const sockets = new LinkedSet<Socket>()
  /** one listener for every socket (`this`), not a closure each */
  function untrack(this: Socket): void {
    sockets.delete(this)
  }
  /**
   * Draining: a response whose head is not yet written sends its client elsewhere for the next
   * request (Node adds Connection: close). Read as the head is written, instead of a registry of
   * open responses with a 'close' listener each.
   */
  class DrainAwareResponse extends http.ServerResponse {
    override writeHead(status: number, message?: string | HeadLines, headers?: HeadLines): this {
      if (draining) this.shouldKeepAlive = false
      // as Node reads the arguments: headers in the second place when the first is not a status message
      return typeof message === 'object' ? super.writeHead(status, headers ?? message) : super.writeHead(status, message, headers)
    }
  }
  const hurried = new AbortController()
  const authenticator = createAuthenticator(() => config.auth)
  // the parent proxy ("upstream"): a new one on reload when its URL or credentials change
  const upstreamOptions = (): UpstreamOptions => ({ connectTimeoutMs: config.limits.connectTimeoutMs, self: () => self })
  let upstream = nextUpstream(undefined, config, upstreamOptions())
  const rt: Runtime = {
    upstream: () => upstream,
    gate: (who) => (who ? gateFor(gate, who) : gate),
    limits: () => config.limits,
    log,
    open,
    record,
    nextId: () => `${boot}-${(++seq).toString(36)}`,
  }
  // the sandbox's DNS server keeps the address and port it started on; rules and rate follow reloads
  const dnsAt = dnsListener(config.sandbox)
  const sandboxDns = config.sandbox && createSandboxDns(config.sandbox, {
    rules: () => gate,
    queriesPerSecond: () => config.sandbox?.dnsQueriesPerSecond,
    record: (r) => record({ type: 'dns', ...r }),
    observe: (r) => options.observe?.({ type: 'dns', ...r }),
    log,
  })
  const limits = config.limits
  // direct plain HTTP; a new one when connectTimeoutMs changes (undici fixes it per agent), the old one closes once idle
  // made (and undici loaded) by the first plain-HTTP request: a proxy that only tunnels never needs it
  let agent: Agent | undefined
  let agentTimeout = limits.connectTimeoutMs
  const currentAgent = (): Agent => (agent ??= new (undici().Agent)({ connect: { timeout: agentTimeout }, keepAliveTimeout: 4_000, connections: 256 }))
  const followConnectTimeout = (timeout: number): void => {
    if (timeout === agentTimeout) return
    void agent?.close().catch(() => undefined)
    agent = undefined
    agentTimeout = timeout
  }
  // roots for origins behind opened tunnels: rebuilt when tls.upstreamCaFiles' contents change, built on first use
  let trust: { readonly pems: readonly string[]; context?: SecureContext } = { pems: options.upstreamCa ?? [] }
  const originTls = (): SecureContext => (trust.context ??= tls.createSecureContext({ ca: upstreamTrust(trust.pems) }))
  const followUpstreamCa = (pems: readonly string[] | undefined): void => {
    if (pems === undefined || (pems.length === trust.pems.length && pems.every((pem, i) => pem === trust.pems[i]))) return
    trust = { pems }
    log.info('tls.upstreamCaFiles changed: origins of opened tunnels are verified against the new roots', { files: config.tls.upstreamCaFiles.length })
  }
  // made (and http-proxy loaded) by the first upgrade
  let upgradeProxy: httpProxy | undefined
  const wsProxy = (): httpProxy => (upgradeProxy ??= createUpgradeProxy(rt, loadHttpProxy()))
  const interceptor = options.ca ? createInterceptor(rt, createLeafMinter(options.ca), originTls, wsProxy) : undefined
  const pacCache = new Map<PacFlavor, PacFile>()
  const pacFile = (flavor: PacFlavor): PacFile => {
    const cached = pacCache.get(flavor)
    if (cached) return cached
    const { address, port } = server.address() as AddressInfo
    const advertise = options.advertise ?? `${address.includes(':') ? `[${address}]` : address}:${port}`
    const text = generatePac({ advertise, bypass: config.bypass, policy: config.policy, flavor, version: VERSION })
    const file = { text, etag: pacEtag(text) }
    pacCache.set(flavor, file)
    return file
  }

  const sandbox = config.sandbox // its listeners are bound once: a reload that changes them needs a restart
  const transparent =
    sandbox &&
    createTransparentListeners(sandbox, {
      http: (socket) => server.emit('connection', socket),
      tls: (socket, listener) => guarded('transparent-tls', () => socket.destroy(), () => transparentTlsRoute(rt, interceptor, listener, socket)),
    })
  /** where a request says it goes: its URL on the proxy port, its Host on a transparent one */
  // SOCKS5 listeners, bound once like the sandbox's: what each needs from this proxy, then the one "socks" asks for
  // and the sandbox's ("socks" first: socksAddress reads it)
  let socksOpen = 0
  const socksServe: SocksServe = {
    rt,
    auth: () => (config.auth ? authenticator : undefined),
    full: () => sockets.size >= config.limits.maxConnections,
    track: (socket) => {
      sockets.add(socket)
      socket.on('close', untrack)
      socksOpen++
      applyLimits(config.limits)
      socket.once('close', () => {
        socksOpen--
        applyLimits(config.limits)
      })
    },
    route: (who, socket, request, head) => guarded('socks', () => socket.destroy(), () => socksRoute(rt, interceptor, who, socket, request, head)),
  }
  const socksAt = config.socks?.listen
  const sandboxSocks = sandbox && sandboxSocksListen(sandbox)
  const socksListeners: SocksListener[] = [
    ...(socksAt ? [createSocksListener(socksAt, socksServe)] : []),
    // the sandbox's asks for no login: ALL_PROXY carries none, as transparent clients send none; source policies still apply
    ...(sandboxSocks ? [createSocksListener(sandboxSocks, { ...socksServe, auth: () => undefined })] : []),
  ]
  const formOf = (socket: Socket): RequestForm => {
    const listener = transparent?.httpListener(socket)
    return listener ? { kind: 'transparent', port: listener.port } : ABSOLUTE_FORM
  }

  const server: Server = http.createServer({
    ServerResponse: DrainAwareResponse,
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headerTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, limits.headerTimeoutMs),
    insecureHTTPParser: false,
    requireHostHeader: false, // checkRequestHead answers a missing Host with Proxy-Status
  })
  server.maxHeadersCount = 0 // count them ourselves: Node would otherwise drop headers past 2000 silently
  const fastPath = options.connectFastPath !== false
  const port = takeProxyPort(server, {
    connect: (req, socket, head) => onConnect(req, socket, head),
    clientError: (error, socket) => onClientError(error, socket),
    fast: (socket) => fastPath && !socket.destroyed && !transparent?.httpListener(socket),
    maxHeaderBytes: () => config.limits.maxHeaderBytes,
  }, Math.min(1_000, limits.headerTimeoutMs))
  const applyLimits = (l: Config['limits']): void => {
    // read for each new connection (Node 20 _http_server: server.maxHeaderSize); undocumented, so test/reload covers it
    Object.assign(server, { maxHeaderSize: l.maxHeaderBytes })
    server.headersTimeout = l.headerTimeoutMs
    server.requestTimeout = l.requestTimeoutMs
    server.keepAliveTimeout = l.keepAliveTimeoutMs
    // one budget with the SOCKS listeners: what their connections hold, the proxy port cannot take
    server.maxConnections = Math.max(0, l.maxConnections - socksOpen)
    transparent?.setMaxConnections(l.maxConnections)
  }
  applyLimits(limits)
  // node:net takes maxConnections 0 as no limit: when SOCKS clients hold the whole budget, a new one is closed here
  server.prependListener('connection', (socket: Socket) => {
    if (socksOpen >= config.limits.maxConnections && !transparent?.httpListener(socket)) socket.destroy()
  })

  const failed = (what: string, fallback: (r: ProxyReply) => void, error: unknown): void => {
    log.error('internal error', { where: what, error: error instanceof Error ? error.stack : String(error) })
    fallback(reply(500, 'proxy_internal_error', 'internal error in proxy-gate'))
  }
  /** Runs a route whose work may finish at once (undefined) or go on (a promise): an error in either is a 500, never a crash. */
  const guarded = (what: string, fallback: (r: ProxyReply) => void, work: () => Promise<void> | undefined): void => {
    let running: Promise<void> | undefined
    try {
      running = work()
    } catch (error) {
      return failed(what, fallback, error)
    }
    running?.catch((error: unknown) => failed(what, fallback, error))
  }
  /** Proxy authentication comes first: a client it refuses never reaches a route, which learns who the client is. */
  const authenticated = (what: string, req: RequestHead, refuse: (r: ProxyReply) => void, route: (who: ClientIdentity) => Promise<void> | undefined): void => {
    const source = req.socket.remoteAddress ?? ''
    // without proxy authentication (none on transparent listeners: clients there know no proxy), straight to the route
    if (!config.auth || transparent?.httpListener(req.socket)) return guarded(what, refuse, () => route({ source: parseIp(source), user: undefined }))
    guarded(what, refuse, async () => {
      const result = await authenticator.check(req.headers['proxy-authorization'], source)
      if (!result.ok) {
        logDecision(rt, { id: rt.nextId(), req, method: req.method ?? '', target: undefined, rawTarget: req.url ?? '', reply: result.reply })
        return refuse(result.reply)
      }
      await route({ source: parseIp(source), user: result.user })
    })
  }
  const onRequest = (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void => {
    const form = formOf(req.socket)
    if (form === ABSOLUTE_FORM && req.url?.startsWith('/')) return localRoute(req, res, { pac: pacFile, caCert: () => options.caCertPem ?? options.ca?.certPem, ready: () => ready })
    const probe = form === ABSOLUTE_FORM ? probeNonce(req) : undefined
    if (probe !== undefined) {
      record({ type: 'probe', nonce: probe, client: `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}` })
      return answerProbe(res, probe)
    }
    authenticated('forward', req, (r) => replyOnResponse(res, r, hasBody(req) || r.status >= 500), (who) => forwardRoute(rt, currentAgent(), who, req, res, expectsContinue, form))
  }
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', untrack) // 'close' comes once: `once` would wrap the listener in a closure per socket
  })
  server.on('request', (req, res) => onRequest(req, res, false))
  server.on('checkContinue', (req, res) => onRequest(req, res, true))
  function onConnect(req: RequestHead, socket: Socket, head: Buffer): void {
    socket.on('error', destroySocket)
    const pending = pendingResponse(socket)
    if (pending) return afterResponse(pending, socket, () => routeConnect(req, socket, head))
    routeConnect(req, socket, head)
  }
  function routeConnect(req: RequestHead, socket: Socket, head: Buffer): void {
    if (transparent?.httpListener(socket)) return transparentConnect(rt, req, socket)
    authenticated('connect', req, refuserFor(socket), (who) => connectRoute(rt, interceptor, who, req, socket, head))
  }
  server.on('connect', onConnect)
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', destroySocket)
    const route = (): void => authenticated('upgrade', req, refuserFor(socket), (who) => upgradeRoute(rt, wsProxy(), who, req, socket, head, formOf(socket)))
    const pending = pendingResponse(socket)
    if (pending) return afterResponse(pending, socket, route)
    route()
  })
  function onClientError(error: NodeJS.ErrnoException, socket: Socket): void {
    answerClientError(error, socket, (r) => {
      record({ type: 'decision', id: rt.nextId(), client: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`, method: '', target: '', decision: 'error', reason: r.type, status: r.status, detail: r.details, mode: gate.ctx.mode, wouldDeny: false })
    })
  }
  server.on('clientError', onClientError)

  return {
    open,
    address: () => server.address() as AddressInfo,
    socksAddress: () => (socksAt ? socksListeners[0]?.address() : undefined),
    listen: async () => {
      const address = await new Promise<AddressInfo>((resolve, reject) => {
        server.once('error', reject)
        server.listen(config.listen.port, config.listen.host, () => {
          server.removeListener('error', reject)
          resolve(server.address() as AddressInfo)
        })
      })
      await transparent?.listen().catch(async (error: unknown) => {
        await new Promise((closed) => server.close(closed))
        throw error
      })
      await sandboxDns?.listen().catch(async (error: unknown) => {
        await Promise.all([new Promise((closed) => server.close(closed)), transparent?.close()])
        throw error
      })
      await Promise.all(socksListeners.map((l) => l.listen())).catch(async (error: unknown) => {
        await Promise.all([new Promise((closed) => server.close(closed)), transparent?.close(), sandboxDns?.close(), ...socksListeners.map((l) => l.close())])
        throw error
      })
      self = [...selfAddresses(address), ...(transparent?.self ?? []), ...dnsSelf(config.sandbox), ...socksListeners.flatMap((l) => l.self())]
      gate = makeGate(config)
      ready = true
      return address
    },
    reload(next: Config, upstreamCa?: readonly string[]): ReloadOutcome {
      if (!sameListeners(sandbox, next.sandbox)) log.warn('"sandbox" listeners changed (address, http or tls ports): restart proxy-gate to apply it')
      config = { ...next, listen: config.listen }
      gate = makeGate(config)
      applyLimits(config.limits)
      followConnectTimeout(config.limits.connectTimeoutMs)
      followUpstreamCa(upstreamCa)
      const parentBefore = upstream?.proxy
      upstream = nextUpstream(upstream, config, upstreamOptions())
      if (upstream ? !upstream.proxy.sameAs(parentBefore) : parentBefore) log.info('upstream changed', { upstream: upstream?.proxy.display ?? 'none: direct' })
      const dnsNext = dnsListener(config.sandbox)
      if (JSON.stringify(config.socks?.listen) !== JSON.stringify(socksAt)) log.warn('"socks" listener changed: restart proxy-gate to apply it')
      if (dnsNext !== dnsAt) log.warn('sandbox DNS address or port changed: restart proxy-gate to apply it', { running: dnsAt ?? 'none', configured: dnsNext ?? 'none' })
      pacCache.clear()
      let closed = 0
      let kept = 0
      for (const conn of open) {
        const decision = redecide(gateFor(gate, conn.who), conn)
        if (decision.verdict === 'allow') {
          kept++
          continue
        }
        closed++
        log.info('revoked', { id: conn.id, kind: conn.kind, target: formatTarget(conn.target), reason: decision.reason, detail: decision.detail })
        conn.close(`rules changed: ${decision.detail}`)
      }
      return { closed, kept }
    },
    ready: () => ready,
    noteReload: (r) => record({ type: 'reload', ...r }),
    shutdown: () => (stopping ??= stop()),
    hurry: () => hurried.abort(),
  }

  /** Resolves after `ms`, or at once when hurried. */
  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (hurried.signal.aborted) return resolve()
      const timer = setTimeout(resolve, ms)
      hurried.signal.addEventListener('abort', () => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Load balancers see /readyz say 503 and move away while the listener still takes what they send. */
  async function drain(): Promise<void> {
    ready = false
    draining = true
    const { drainDelayMs } = config.limits
    log.info('draining: not ready, still accepting', { drainDelayMs, connections: sockets.size })
    if (drainDelayMs > 0) await pause(drainDelayMs)
  }

  async function stop(): Promise<void> {
    await drain()
    const closedServer = new Promise<void>((resolve) => server.close(() => resolve()))
    const closedTransparent = transparent?.close()
    server.closeIdleConnections()
    port.closeIdle(Math.min(STRAGGLER_MS, config.limits.shutdownGraceMs))
    log.info('stopped accepting', { connections: sockets.size, graceMs: config.limits.shutdownGraceMs })
    let stopped = false
    void pause(config.limits.shutdownGraceMs).then(() => {
      if (stopped) return
      log.info('closing what is still open', { connections: sockets.size, tunnels: open.size })
      for (const conn of open) conn.close('proxy shutting down')
      server.closeAllConnections()
      for (const socket of sockets) socket.destroy()
      transparent?.destroyAll()
    })
    await Promise.all([closedServer, closedTransparent, sandboxDns?.close(), ...socksListeners.map((l) => l.close())])
    stopped = true
    hurried.abort() // ends the grace period's timer
    upgradeProxy?.close()
    await interceptor?.close()
    await agent?.close()
    await upstream?.close()
  }
}
