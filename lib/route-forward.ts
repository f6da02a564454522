// Plain HTTP forwarding.
//   client --GET http://host/path--> check head -> parse URL -> admit -> undici to checked IP (Host = URL authority) -> client
import type { IncomingMessage, ServerResponse } from 'node:http'
import { pipeline } from 'node:stream/promises'
import type { Agent, Dispatcher } from 'undici'
import { checkRequestHead, hasBody } from './checks.js'
import { upstreamFailure } from './dial.js'
import { admit } from './gate.js'
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js'
import { formatIp, type Ip } from './ip.js'
import { denial, reply, replyOnResponse, type ProxyReply } from './respond.js'
import { logClosed, logDecision, type OpenConnection, type Runtime } from './runtime.js'
import { decideRequest, withRequest } from './policy.js'
import { formatHost, formatTarget, normalisePath, parseAbsoluteUrl, type Target } from './target.js'

export async function forwardRoute(rt: Runtime, agent: Agent, req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
  const id = rt.nextId()
  const method = req.method ?? 'GET'
  const rawTarget = req.url ?? ''
  const parsed = parseAbsoluteUrl(rawTarget)
  const refuse = (r: ProxyReply, close: boolean): void => {
    logDecision(rt, { id, req, method, target: parsed.ok ? parsed.value.target : undefined, rawTarget, reply: r })
    replyOnResponse(res, r, close)
  }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(problem, true)
  if (!parsed.ok) return refuse(reply(400, 'http_request_error', `bad request-target: ${parsed.error}`), true)
  const { target, path } = parsed.value
  const admission = await admit(rt.gate(), target)
  if (admission.kind === 'failed') return refuse(admission.reply, hasBody(req))
  const { resolved } = admission
  const gate = rt.gate()
  const decision = admission.decision.verdict === 'allow' ? withRequest(admission.decision, decideRequest(gate.policy, gate.ctx, target, method, normalisePath(path))) : admission.decision
  logDecision(rt, { id, req, method, target, rawTarget, decision, resolved, ...(decision.rule?.paths || decision.reason === 'request-not-allowed' || decision.reason === 'bad-path' ? { path: path.split('?')[0] } : {}) })
  if (decision.verdict === 'deny') return replyOnResponse(res, denial(method, formatTarget(target), decision), hasBody(req))
  if (expectsContinue) res.writeContinue()

  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  const origin = `http://${formatHost({ kind: 'ip', ip })}:${target.port}`
  const authority = target.port === 80 ? formatHost(target.host) : formatTarget(target)
  await relayRequest(rt, agent, { id, kind: 'forward', target, resolved, origin, authority, chosen: formatIp(ip), path }, req, res)
}

export interface UpstreamRequest {
  readonly id: string
  readonly kind: OpenConnection['kind']
  readonly target: Target
  readonly resolved: readonly Ip[] | undefined
  /** where the dispatcher connects: the checked IP, or a client pinned to it */
  readonly origin: string
  /** the Host header: the checked authority */
  readonly authority: string
  /** the checked address, for logs */
  readonly chosen: string
  readonly path: string
}

/** Sends one allowed request upstream with undici and streams the answer back to the client. */
export async function relayRequest(rt: Runtime, dispatcher: Dispatcher, up: UpstreamRequest, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const abort = new AbortController()
  const open: OpenConnection = { id: up.id, kind: up.kind, target: up.target, resolved: up.resolved, close: (reason) => abort.abort(new Error(reason)) }
  rt.open.add(open)
  res.on('close', () => {
    rt.open.delete(open)
    if (!res.writableFinished) abort.abort(new Error('client went away'))
  })
  const started = Date.now()
  const limits = rt.limits()
  try {
    const upstream = await dispatcher.request({
      origin: up.origin,
      path: up.path,
      method: (req.method ?? 'GET') as Dispatcher.HttpMethod,
      headers: upstreamRequestHeaders(req.rawHeaders, up.authority),
      body: hasBody(req) ? req : null,
      signal: abort.signal,
      headersTimeout: limits.upstreamHeadersTimeoutMs,
      bodyTimeout: limits.tunnelIdleTimeoutMs,
    })
    res.writeHead(upstream.statusCode, clientResponseHeaders(upstream.headers))
    await pipeline(upstream.body, res)
    logClosed(rt, { id: up.id, kind: up.kind, chosen: up.chosen, status: upstream.statusCode, durationMs: Date.now() - started })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).name
    const failure = upstreamFailure(code, `${up.chosen}:${up.target.port}`)
    logClosed(rt, { id: up.id, kind: up.kind, chosen: up.chosen, error: code, durationMs: Date.now() - started })
    if (!res.headersSent && !res.destroyed) replyOnResponse(res, failure, true)
    else res.destroy()
  }
}
