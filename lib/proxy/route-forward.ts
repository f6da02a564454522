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
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js'
import { formatIp, formatIpPort, type Ip } from '../policy/ip.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { replyOnResponse } from './respond.js'
import { type OpenConnection, type Runtime } from './runtime.js'
import { formatTarget, hostHeader, type Target } from '../policy/target.js'
import { parentFailure, parentFor, parentRefused, throughParent } from '../net/upstream.js'

export async function forwardRoute(rt: Runtime, agent: Agent, who: ClientIdentity, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean, form: RequestForm): Promise<void> {
  const allowed = await decideHttp(rt, who, req, form, (r, unreadable) => replyOnResponse(res, r, unreadable || hasBody(req)))
  if (!allowed) return
  if (expectsContinue) res.writeContinue()
  const { id, target, resolved, ip, dial, path } = allowed
  const origin = `http://${formatIpPort(ip, target.port)}`
  const up = { id, kind: 'forward' as const, who, target, resolved, origin, authority: hostHeader(target), chosen: ip, dial, path }
  // with "upstream": absolute-form to the parent proxy, unless upstreamBypass sends it direct
  const parent = parentFor(rt.upstream?.(), target)
  await relayRequest(rt, parent ? parent.dispatcher : agent, parent ? throughParent(up, parent) : up, req, res)
}

export interface UpstreamRequest {
  readonly id: string
  readonly kind: OpenConnection['kind']
  readonly who: ClientIdentity
  readonly target: Target
  readonly resolved: readonly Ip[] | undefined
  /** where the dispatcher connects: the checked IP, or a client pinned to it */
  readonly origin: string
  /** the Host header: the checked authority */
  readonly authority: string
  /** the checked address: logs and failure texts */
  readonly chosen: Ip
  /**
   * Direct forwarding only: every checked address in order, `chosen` (whose `origin` is
   * http://ADDRESS:PORT) the first. The next is tried when connecting to one fails.
   */
  readonly dial?: readonly Ip[]
  readonly path: string
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
 * (onRequestStart) only on a connected socket, so an error before it means no byte was sent.
 */
export function relayRequest(rt: Runtime, dispatcher: Dispatcher, up: UpstreamRequest, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = req.method ?? 'GET'
  const started = Date.now()
  const limits = rt.limits()
  let controller: Dispatcher.DispatchController | undefined
  /** the address being tried, and how many of up.dial have been */
  let chosen = up.chosen
  let tried = 1
  let stopped: Error | undefined
  let settled = false
  const abort = (error: Error): void => {
    if (settled) return
    stopped ??= error
    controller?.abort(error)
  }
  const open: OpenConnection = { id: up.id, kind: up.kind, target: up.target, resolved: up.resolved, who: up.who, close: (reason) => abort(new Error(reason)) }
  rt.open.add(open)
  res.on('close', () => {
    if (!res.writableFinished) abort(new Error('client went away'))
  })
  // gone while the request was being decided: its 'close' came before the listener above
  if (res.destroyed || req.socket.destroyed) abort(new Error('client went away'))
  const settle = (): void => {
    settled = true
    rt.open.delete(open)
  }
  return new Promise((resolve) => {
    let status = 0
    /** what went wrong, for the log, and what the client is told if it can still be told */
    const outcome = (error: Error): { code: string; failure: ProxyReply } => {
      // stopped here (client gone, rules changed, shutdown): the reason says it
      if (error === stopped) return { code: error.message, failure: reply(403, 'http_request_denied', error.message) }
      if (error instanceof DialFailure) return { code: error.reply.type, failure: error.reply }
      const code = (error as NodeJS.ErrnoException).code ?? error.name
      if (up.via !== undefined && up.tunnelled) return { code, failure: upstreamFailure(code, `${formatTarget(up.target)} (through upstream proxy ${up.via})`) }
      if (up.via !== undefined) return { code, failure: parentFailure(code, up.via) }
      const where = tried > 1 && up.dial ? up.dial.slice(0, tried).map((ip) => formatIpPort(ip, up.target.port)).join(', ') : formatIpPort(chosen, up.target.port)
      return { code, failure: upstreamFailure(code, where) }
    }
    const fail = (error: Error): void => {
      if (settled) return
      settle()
      const { code, failure } = outcome(error)
      const answered = !res.headersSent && !res.destroyed
      rt.record({ type: 'closed', id: up.id, kind: up.kind, method, chosen: up.tunnelled ? undefined : formatIp(chosen), via: up.via, error: code, ...(answered ? { status: failure.status } : {}), durationMs: Date.now() - started })
      if (answered) replyOnResponse(res, failure, true)
      else res.destroy()
      resolve()
    }
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c
        if (stopped) c.abort(stopped)
      },
      onResponseStart(c, statusCode, headers) {
        if (statusCode < 200) return // 1xx (103 Early Hints, 102): the final response follows
        if (up.via !== undefined && !up.tunnelled && statusCode === 407) return c.abort(new DialFailure(parentRefused(407, up.via, `${method} ${formatTarget(up.target)}`)))
        status = statusCode
        res.writeHead(statusCode, clientResponseHeaders(headers))
      },
      onResponseData(c, chunk) {
        if (res.write(chunk)) return
        c.pause()
        res.once('drain', () => c.resume())
      },
      onResponseEnd() {
        settle()
        res.end()
        rt.record({ type: 'closed', id: up.id, kind: up.kind, method, chosen: up.tunnelled ? undefined : formatIp(chosen), via: up.via, status, durationMs: Date.now() - started })
        resolve()
      },
      onResponseError: (_c, error) => {
        // through a parent the dispatcher connects to the parent, not to these addresses
        const next = controller === undefined && up.via === undefined && !stopped && !settled ? up.dial?.[tried] : undefined
        if (next === undefined || !CONNECT_FAILURES.has((error as NodeJS.ErrnoException).code ?? '')) return fail(error)
        chosen = next
        tried++
        dispatcher.dispatch({ ...options, origin: `http://${formatIpPort(next, up.target.port)}` }, handler)
      },
    }
    const options: Dispatcher.DispatchOptions = {
      origin: up.origin,
      path: up.path,
      method: method,
      headers: upstreamRequestHeaders(req.rawHeaders, up.authority),
      body: hasBody(req) ? req : null,
      headersTimeout: limits.upstreamHeadersTimeoutMs,
      bodyTimeout: limits.tunnelIdleTimeoutMs,
    }
    dispatcher.dispatch(options, handler)
  })
}
