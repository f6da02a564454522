// The decide stage the plain-HTTP routes share (forwarding and Upgrade), for absolute-form requests
// on the proxy port and origin-form ones (Host header) on transparent listeners:
//   check head -> parse URL or Host -> admit (rules, DNS, guard) -> methods/paths -> log -> allowed, or refused through `answer`
import type { IncomingMessage } from 'node:http'
import { checkRequestHead } from './checks.js'
import type { ClientIdentity } from '../policy/clients.js'
import { admit, underCurrent } from '../net/gate.js'
import type { Ip } from '../policy/ip.js'
import { decideForwarded } from '../policy/decide.js'
import { denial } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, type Runtime } from './runtime.js'
import { carrySecrets, misplacedInHead, type Wire } from './secrets.js'
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
  /** the path and headers to send when secrets' values were put in */
  readonly wire: Wire | undefined
}

/**
 * How a request names where it goes: an absolute-form URL (on the proxy port), or origin-form with
 * the Host header on a transparent listener, whose port is the destination port.
 */
export type RequestForm = { readonly kind: 'absolute' } | { readonly kind: 'transparent'; readonly port: number }

export const ABSOLUTE_FORM: RequestForm = { kind: 'absolute' }

/** Where a request that cannot be parsed says it goes, for the log: the URL, or on a transparent listener the Host. */
function rawTargetOf(req: IncomingMessage, form: RequestForm): string {
  return form.kind === 'transparent' ? (req.headers.host ?? '') : (req.url ?? '')
}

function locate(req: IncomingMessage, form: RequestForm): Result<AbsoluteUrl> {
  const url = req.url ?? ''
  if (form.kind === 'transparent') return parseOriginRequest(url, req.headers.host, form.port)
  const parsed = parseAbsoluteUrl(url)
  return parsed.ok ? parsed : { ok: false, error: `bad request-target: ${parsed.error}` }
}

/** Logs a refusal and hands it to `answer`. */
function refuse(rt: Runtime, req: IncomingMessage, form: RequestForm, id: string, policy: string, r: ProxyReply, target: Target | undefined, answer: (r: ProxyReply, unreadable: boolean) => void, unreadable: boolean): undefined {
  logDecision(rt, { id, req, method: req.method ?? 'GET', target, rawTarget: rawTargetOf(req, form), reply: r, policy, listener: listenerOf(form) })
  answer(r, unreadable)
  return undefined
}

const listenerOf = (form: RequestForm): 'transparent' | undefined => (form.kind === 'transparent' ? 'transparent' : undefined)

/**
 * Decides a plain-HTTP request and logs the decision. A refusal is handed to `answer`, with
 * `unreadable` true when the request itself was malformed (its body cannot be trusted to frame).
 */
export async function decideHttp(rt: Runtime, who: ClientIdentity, req: IncomingMessage, form: RequestForm, answer: (r: ProxyReply, unreadable: boolean) => void): Promise<Forwardable | undefined> {
  const id = rt.nextId()
  const method = req.method ?? 'GET'
  const parsed = locate(req, form)
  const gate = rt.gate(who)
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(rt, req, form, id, gate.policyName, problem, parsed.ok ? parsed.value.target : undefined, answer, true)
  if (!parsed.ok) return refuse(rt, req, form, id, gate.policyName, reply(400, 'http_request_error', parsed.error), undefined, answer, true)
  const { target, path } = parsed.value
  // a secret's placeholder toward a host it is not bound to: refused before its name is looked up
  const carried = misplacedInHead(gate, target, req.url ?? '', req.rawHeaders, 'the request', true)
  if (carried?.verdict === 'deny') {
    logDecision(rt, { id, req, method, target, rawTarget: '', decision: carried, policy: gate.policyName, listener: listenerOf(form) })
    answer(denial(method, formatTarget(target), carried), false)
    return undefined
  }
  // under the rules in force when DNS answers: a reload meanwhile decides it again
  const { gate: current, value: admission } = await underCurrent(() => rt.gate(who), (g) => admit(g, target))
  if (admission.kind === 'failed') return refuse(rt, req, form, id, current.policyName, admission.reply, target, answer, false)
  const { resolved } = admission
  const head = { url: req.url ?? '', rawHeaders: req.rawHeaders, path }
  const { decision, wire } = carrySecrets(current, target, decideForwarded(current.policy, current.ctx, admission.decision, target, method, path), head, 'the request', true)
  const pathLimited = decision.rule?.paths || decision.reason === 'request-not-allowed' || decision.reason === 'bad-path'
  // rawTarget is logged only when there is no target
  logDecision(rt, { id, req, method, target, rawTarget: '', decision, resolved, policy: current.policyName, listener: listenerOf(form), path: pathLimited ? path.split('?')[0] : undefined })
  if (decision.verdict === 'deny') {
    answer(denial(method, formatTarget(target), decision), false)
    return undefined
  }
  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  return { id, target, path, resolved, ip, dial: decision.dial, wire }
}
