// The decide stage the plain-HTTP routes share (forwarding and Upgrade), for absolute-form requests
// on the proxy port and origin-form ones (Host header) on transparent listeners:
//   check head -> parse URL or Host -> admit (rules, DNS, guard) -> methods/paths -> log -> allowed, or refused through `answer`
import type { IncomingMessage } from 'node:http'
import { checkRequestHead } from './checks.js'
import type { ClientIdentity } from '../policy/clients.js'
import { admit } from '../net/gate.js'
import type { Ip } from '../policy/ip.js'
import { decideForwarded } from '../policy/decide.js'
import { denial } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, type Runtime } from './runtime.js'
import { formatTarget, parseAbsoluteUrl, parseOriginRequest, type AbsoluteUrl, type Result, type Target } from '../policy/target.js'

export interface Forwardable {
  readonly id: string
  readonly target: Target
  /** the origin-form path and query */
  readonly path: string
  readonly resolved: readonly Ip[] | undefined
  /** the checked address to dial first */
  readonly ip: Ip
  /** every checked address, in the order to try them (`ip` is the first) */
  readonly dial: readonly Ip[]
}

/**
 * How a request names where it goes: an absolute-form URL (on the proxy port), or origin-form with
 * the Host header on a transparent listener, whose port is the destination port.
 */
export type RequestForm = { readonly kind: 'absolute' } | { readonly kind: 'transparent'; readonly port: number }

export const ABSOLUTE_FORM: RequestForm = { kind: 'absolute' }

function locate(req: IncomingMessage, form: RequestForm): { rawTarget: string; parsed: Result<AbsoluteUrl> } {
  const url = req.url ?? ''
  if (form.kind === 'transparent') return { rawTarget: `${req.headers.host ?? ''}${url}`, parsed: parseOriginRequest(url, req.headers.host, form.port) }
  const parsed = parseAbsoluteUrl(url)
  return { rawTarget: url, parsed: parsed.ok ? parsed : { ok: false, error: `bad request-target: ${parsed.error}` } }
}

/**
 * Decides a plain-HTTP request and logs the decision. A refusal is handed to `answer`, with
 * `unreadable` true when the request itself was malformed (its body cannot be trusted to frame).
 */
export async function decideHttp(rt: Runtime, who: ClientIdentity, req: IncomingMessage, form: RequestForm, answer: (r: ProxyReply, unreadable: boolean) => void): Promise<Forwardable | undefined> {
  const id = rt.nextId()
  const method = req.method ?? 'GET'
  const { rawTarget, parsed } = locate(req, form)
  const gate = rt.gate(who)
  const listener = form.kind === 'transparent' ? ({ listener: 'transparent' } as const) : {}
  const refuse = (r: ProxyReply, unreadable: boolean): undefined => {
    logDecision(rt, { id, req, method, target: parsed.ok ? parsed.value.target : undefined, rawTarget, reply: r, policy: gate.policyName, ...listener })
    answer(r, unreadable)
    return undefined
  }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(problem, true)
  if (!parsed.ok) return refuse(reply(400, 'http_request_error', parsed.error), true)
  const { target, path } = parsed.value
  const admission = await admit(gate, target)
  if (admission.kind === 'failed') return refuse(admission.reply, false)
  const { resolved } = admission
  const decision = decideForwarded(gate.policy, gate.ctx, admission.decision, target, method, path)
  const pathLimited = decision.rule?.paths || decision.reason === 'request-not-allowed' || decision.reason === 'bad-path'
  logDecision(rt, { id, req, method, target, rawTarget, decision, resolved, policy: gate.policyName, ...listener, ...(pathLimited ? { path: path.split('?')[0] } : {}) })
  if (decision.verdict === 'deny') {
    answer(denial(method, formatTarget(target), decision), false)
    return undefined
  }
  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  return { id, target, path, resolved, ip, dial: decision.dial }
}
