// The decide stage the absolute-form routes share (plain forwarding and Upgrade):
//   check head -> parse URL -> admit (rules, DNS, guard) -> methods/paths -> log -> allowed, or refused through `answer`
import type { IncomingMessage } from 'node:http'
import { checkRequestHead } from './checks.js'
import type { ClientIdentity } from '../policy/clients.js'
import { admit } from '../net/gate.js'
import type { Ip } from '../policy/ip.js'
import { decideForwarded } from '../policy/decide.js'
import { denial } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, type Runtime } from './runtime.js'
import { formatTarget, parseAbsoluteUrl, type Target } from '../policy/target.js'

export interface Forwardable {
  readonly id: string
  readonly target: Target
  /** the origin-form path and query */
  readonly path: string
  readonly resolved: readonly Ip[] | undefined
  /** the checked address to dial */
  readonly ip: Ip
}

/**
 * Decides an absolute-form request and logs the decision. A refusal is handed to `answer`, with
 * `unreadable` true when the request itself was malformed (its body cannot be trusted to frame).
 */
export async function decideAbsolute(rt: Runtime, who: ClientIdentity, req: IncomingMessage, answer: (r: ProxyReply, unreadable: boolean) => void): Promise<Forwardable | undefined> {
  const id = rt.nextId()
  const method = req.method ?? 'GET'
  const rawTarget = req.url ?? ''
  const parsed = parseAbsoluteUrl(rawTarget)
  const gate = rt.gate(who)
  const refuse = (r: ProxyReply, unreadable: boolean): undefined => {
    logDecision(rt, { id, req, method, target: parsed.ok ? parsed.value.target : undefined, rawTarget, reply: r, policy: gate.policyName })
    answer(r, unreadable)
    return undefined
  }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(problem, true)
  if (!parsed.ok) return refuse(reply(400, 'http_request_error', `bad request-target: ${parsed.error}`), true)
  const { target, path } = parsed.value
  const admission = await admit(gate, target)
  if (admission.kind === 'failed') return refuse(admission.reply, false)
  const { resolved } = admission
  const decision = decideForwarded(gate.policy, gate.ctx, admission.decision, target, method, path)
  const pathLimited = decision.rule?.paths || decision.reason === 'request-not-allowed' || decision.reason === 'bad-path'
  logDecision(rt, { id, req, method, target, rawTarget, decision, resolved, policy: gate.policyName, ...(pathLimited ? { path: path.split('?')[0] } : {}) })
  if (decision.verdict === 'deny') {
    answer(denial(method, formatTarget(target), decision), false)
    return undefined
  }
  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  return { id, target, path, resolved, ip }
}
