// The decide stage of every route: rules first (no DNS for names no rule allows), then one
// resolution and the address guard. Owns the I/O the pure policy must not do.
import { choosePolicy, type ClientIdentity, type PolicySet } from '../policy/clients.js'
import type { Ip } from '../policy/ip.js'
import { checkHello, confirmSniAddress, decideAddresses, decideTarget, type Decision, type DecisionContext, type HelloView, type Pending } from '../policy/decide.js'
import type { Policy } from '../policy/rules.js'
import { DnsFailure, type Lookup } from './resolve.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { formatTarget, type Target } from '../policy/target.js'

export interface Gate {
  /** the policy this client's requests are decided by */
  readonly policy: Policy
  readonly policyName: string
  readonly policies: PolicySet
  readonly ctx: DecisionContext
  readonly lookup: Lookup
}

/** The gate for one client: the same context and DNS, with the policy chosen for who it is. */
export function gateFor(gate: Gate, who: ClientIdentity): Gate {
  const chosen = choosePolicy(gate.policies, who)
  return chosen.policy === gate.policy ? gate : { ...gate, policy: chosen.policy, policyName: chosen.name }
}

export type Admission =
  | { readonly kind: 'decided'; readonly decision: Decision; readonly resolved: readonly Ip[] | undefined }
  | { readonly kind: 'failed'; readonly reply: ProxyReply }

/**
 * The rules' decision, and for an allowed name the resolution and guard. Synchronous when no DNS is
 * needed (IP literals, names no rule allows): a promise there would cost a tick per tunnel.
 */
export function admit(gate: Gate, target: Target): Admission | Promise<Admission> {
  const first = decideTarget(gate.policy, gate.ctx, target)
  if (first.verdict !== 'resolve') return { kind: 'decided', decision: first, resolved: undefined }
  return admitResolved(gate, target, first)
}

async function admitResolved(gate: Gate, target: Target, first: Pending): Promise<Admission> {
  let resolved: Ip[]
  try {
    resolved = await gate.lookup(target.host.kind === 'name' ? target.host.name : '')
  } catch (error) {
    if (!(error instanceof DnsFailure)) throw error
    const status = error.type === 'dns_timeout' ? 504 : 502
    return { kind: 'failed', reply: reply(status, error.type, error.message, `cannot reach ${formatTarget(target)}: ${error.message}`) }
  }
  return { kind: 'decided', decision: decideAddresses(gate.policy, gate.ctx, target, first, resolved), resolved }
}

/** Re-decides an open connection under new rules, with the addresses it was admitted on. */
export function redecide(gate: Gate, target: Target, resolved: readonly Ip[] | undefined): Decision {
  const first = decideTarget(gate.policy, gate.ctx, target)
  if (first.verdict !== 'resolve') return first
  return decideAddresses(gate.policy, gate.ctx, target, first, resolved ?? [])
}

/**
 * The decision after a tunnel's ClientHello. A deferred IP-literal tunnel is admitted under its
 * server name (rules, DNS and guard as for any name) and only if the IP is one of its addresses.
 */
export async function admitHello(gate: Gate, target: Target, admitted: Decision, hello: HelloView): Promise<Admission & { ruleTarget: Target }> {
  const checked = checkHello(gate.ctx, target, admitted, hello)
  if (checked.verdict !== 'admit-sni') return { kind: 'decided', decision: checked, resolved: undefined, ruleTarget: target }
  const byName = await admit(gate, checked.target)
  if (byName.kind === 'failed') return { ...byName, ruleTarget: checked.target }
  const decision = confirmSniAddress(gate.ctx, target, byName.decision, checked.sni)
  return { kind: 'decided', decision, resolved: byName.resolved, ruleTarget: checked.target }
}
