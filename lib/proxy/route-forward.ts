// Plain HTTP forwarding.
//   client --GET http://host/path--> decideHttp (absolute-form.ts) -> undici to checked IP (Host = URL authority) -> client
//     (each checked address in turn while connecting fails, as CONNECT dials; never once a byte was sent)
//   with "upstream": ... -> decideHttp -> absolute-form request to the parent proxy (upstream.ts) -> client
//   transparent listener: client --GET /path, Host: host--> decideHttp (port = the listener's) -> as above
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Agent, Dispatcher } from 'undici'
import { decideHttp, type RequestForm } from './absolute-form.js'
import { hasBody } from './checks.js'
import type { ClientIdentity } from '../policy/clients.js'
import { DialFailure, upstreamFailure } from '../net/dial.js'
import { clientResponseLines, upstreamRequestHeaders } from './headers.js'
import { formatIp, formatIpPort, type Ip } from '../policy/ip.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { replyOnResponse } from './respond.js'
import { type OpenConnection, type Runtime } from './runtime.js'
import type { Wire } from './secrets.js'
import { formatTarget, hostHeader, type Target } from '../policy/target.js'
import { parentFailure, parentFor, parentRefused, throughParent } from '../net/upstream.js'

export async function forwardRoute(rt: Runtime, agent: Agent, who: ClientIdentity, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean, form: RequestForm): Promise<void> {
  const allowed = await decideHttp(rt, who, req, form, (r, unreadable) => replyOnResponse(res, r, unreadable || hasBody(req)))
  if (!allowed) return
  if (expectsContinue) res.writeContinue()
  const { id, target, resolved, ip, dial, path, wire } = allowed
  const origin = `http://${formatIpPort(ip, target.port)}`
  const up = { id, kind: 'forward' as const, who, target, resolved, origin, authority: hostHeader(target), chosen: ip, dial, path, wire }
  // with "upstream": absolute-form to the parent proxy, unless upstreamBypass sends it direct
  const parent = parentFor(rt.upstream?.(), target)
  // through the parent the request-target is absolute-form, the one sent with values too
  const sent = parent ? { ...throughParent(up, parent), wire: wire && { ...wire, path: `http://${up.authority}${wire.path}` } } : up
  await relayRequest(rt, parent ? parent.dispatcher : agent, sent, req, res)
}

export interface UpstreamRequest {
  readonly id: string
  readonly kind: OpenConnection['kind']
  readonly who: ClientIdentity
  readonly target: Target
  readonly resolved: readonly Ip[] | undefined
  /** where the dispatcher connects: the checked IP, or a client that connects only to it */
  readonly origin: string
  /** the Host header: the checked authority */
  readonly authority: string
  /** the checked address: logs and failure texts (not logged through a parent: the parent chose) */
  readonly chosen: Ip
  /**
   * Direct forwarding only: every checked address in order, `chosen` (whose `origin` is
   * http://ADDRESS:PORT) the first. The next is tried when connecting to one fails.
   */
  readonly dial?: readonly Ip[]
  readonly path: string
  /** what is sent instead of `path` and the client's headers when secrets' values were put in (never logged: `path` is) */
  readonly wire?: Wire | undefined
  /** the parent proxy (`host:port`) the dispatcher sends it to, when "upstream" is set */
  readonly via?: string
  /**
   * Inside the parent's CONNECT tunnel (opened tunnels): what answers is the origin, not the parent
   * (its 407 is the origin's, its failures name the destination); `via` then only names the parent.
   */
  readonly tunnelled?: boolean
}

/** Errors of a connection attempt that never opened: the request was not sent, so the next address may be tried. */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT'])

/**
 * Sends one allowed request upstream with undici's dispatch API and streams the answer back to
 * the client. dispatch() with a handler instead of request(): no body stream, promise or
 * AbortSignal per request; the response is written to the client as it arrives, with
 * backpressure (the upstream read pauses while the client is slow). Resolves once done, either way.
 * With `up.dial`, a failure to connect moves on to the next address: undici starts the request
 * (onConnect) only on a connected socket, so an error before it means no byte was sent.
 */
export function relayRequest(rt: Runtime, dispatcher: Dispatcher, up: UpstreamRequest, req: IncomingMessage, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    new Relay(rt, dispatcher, up, req, res, resolve).start()
  })
}

/**
 * One forwarded request: the open connection that reload and shutdown see and undici's handler
 * for its answer, one object instead of a dozen closures. It has undici's original handler
 * methods (onConnect, onHeaders, ...), which undici runs on inside: the onRequestStart kind goes
 * through an adapter, two more objects and a parsed header object per response.
 */
class Relay implements OpenConnection {
  readonly kind: OpenConnection['kind']
  private readonly method: string
  private readonly started = Date.now()
  private readonly options: Dispatcher.DispatchOptions
  /** set once the request is on a connected socket */
  private abortUpstream: ((error: Error) => void) | undefined
  private resumeUpstream: (() => void) | undefined
  /** the address being tried, and how many of up.dial have been */
  private chosen: Ip
  private tried = 1
  private stopped: Error | undefined
  private settled = false
  private status = 0

  constructor(
    private readonly rt: Runtime,
    private readonly dispatcher: Dispatcher,
    private readonly up: UpstreamRequest,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly resolve: () => void,
  ) {
    this.kind = up.kind
    this.method = req.method ?? 'GET'
    this.chosen = up.chosen
    const limits = rt.limits()
    this.options = {
      origin: up.origin,
      path: up.wire?.path ?? up.path,
      method: this.method,
      headers: upstreamRequestHeaders(up.wire?.rawHeaders ?? req.rawHeaders, up.authority),
      body: hasBody(req) ? req : null,
      headersTimeout: limits.upstreamHeadersTimeoutMs,
      bodyTimeout: limits.tunnelIdleTimeoutMs,
    }
  }

  get id(): string {
    return this.up.id
  }
  get target(): Target {
    return this.up.target
  }
  get resolved(): readonly Ip[] | undefined {
    return this.up.resolved
  }
  get who(): ClientIdentity {
    return this.up.who
  }
  /** made only when a reload asks: re-decided with its method and path */
  get request(): { method: string; path: string } {
    return { method: this.method, path: this.up.path }
  }

  start(): void {
    this.rt.open.add(this)
    this.res.on('close', () => {
      if (!this.res.writableFinished) this.abort(new Error('client went away'))
    })
    // gone while the request was being decided: its 'close' came before the listener above
    if (this.res.destroyed || this.req.socket.destroyed) this.abort(new Error('client went away'))
    this.dispatcher.dispatch(this.options, this)
  }

  close(reason: string): void {
    this.abort(new Error(reason))
  }

  private abort(error: Error): void {
    if (this.settled || this.stopped) return
    this.stopped = error
    this.abortUpstream?.(error)
  }

  private settle(): void {
    this.settled = true
    this.rt.open.delete(this)
  }

  onConnect(abort: (error: Error) => void): void {
    this.abortUpstream = abort
    if (this.stopped) abort(this.stopped)
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true // 1xx (103 Early Hints, 102): the final response follows
    const { up } = this
    if (up.via !== undefined && !up.tunnelled && statusCode === 407) {
      this.abortUpstream?.(new DialFailure(parentRefused(407, up.via, `${this.method} ${formatTarget(up.target)}`)))
      return true
    }
    this.status = statusCode
    this.resumeUpstream = resume
    const lines = clientResponseLines(rawHeaders)
    const conceal = up.wire?.conceal
    this.res.writeHead(statusCode, conceal ? lines.map(conceal) : lines)
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true
    if (this.resumeUpstream) this.res.once('drain', this.resumeUpstream)
    return false
  }

  onComplete(): void {
    this.settle()
    this.res.end()
    const { up } = this
    this.rt.record({ type: 'closed', id: up.id, kind: up.kind, method: this.method, chosen: up.via === undefined ? formatIp(this.chosen) : undefined, via: up.via, status: this.status, durationMs: Date.now() - this.started })
    this.resolve()
  }

  onError(error: Error): void {
    const { up } = this
    // through a parent the dispatcher connects to the parent, not to these addresses
    const next = this.abortUpstream === undefined && up.via === undefined && !this.stopped && !this.settled ? up.dial?.[this.tried] : undefined
    if (next === undefined || !CONNECT_FAILURES.has((error as NodeJS.ErrnoException).code ?? '')) return this.fail(error)
    this.chosen = next
    this.tried++
    this.dispatcher.dispatch({ ...this.options, origin: `http://${formatIpPort(next, up.target.port)}` }, this)
  }

  private fail(error: Error): void {
    if (this.settled) return
    this.settle()
    const { up, res } = this
    const { code, failure } = this.outcome(error)
    const answered = !res.headersSent && !res.destroyed
    this.rt.record({ type: 'closed', id: up.id, kind: up.kind, method: this.method, chosen: up.via === undefined ? formatIp(this.chosen) : undefined, via: up.via, error: code, ...(answered ? { status: failure.status } : {}), durationMs: Date.now() - this.started })
    if (answered) replyOnResponse(res, failure, true)
    else res.destroy()
    this.resolve()
  }

  /** what went wrong, for the log, and what the client is told if it can still be told */
  private outcome(error: Error): { code: string; failure: ProxyReply } {
    const { up } = this
    // stopped here (client gone, rules changed, shutdown): the reason says it
    if (error === this.stopped) return { code: error.message, failure: reply(403, 'http_request_denied', error.message) }
    if (error instanceof DialFailure) return { code: error.reply.type, failure: error.reply }
    const code = (error as NodeJS.ErrnoException).code ?? error.name
    if (up.via !== undefined && up.tunnelled) return { code, failure: upstreamFailure(code, `${formatTarget(up.target)} (through upstream proxy ${up.via})`) }
    if (up.via !== undefined) return { code, failure: parentFailure(code, up.via) }
    const where = this.tried > 1 && up.dial ? up.dial.slice(0, this.tried).map((ip) => formatIpPort(ip, up.target.port)).join(', ') : formatIpPort(this.chosen, up.target.port)
    return { code, failure: upstreamFailure(code, where) }
  }
}
