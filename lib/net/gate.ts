// The decide stage of every route: rules first (no DNS for names no rule allows), then one
// resolution and the address guard. Owns the I/O the pure policy must not do.
import { choosePolicy, type ClientIdentity, type PolicySet } from '../policy/clients.js'
import type { Ip } from '../policy/ip.js'
import { checkHello, confirmSniAddress, decideAddresses, decideForwarded, decideTarget, needsInterception, unseenRequests, type Decision, type DecisionContext, type HelloView, type Pending } from '../policy/decide.js'
import type { Policy } from '../policy/rules.js'
import type { SecretValues } from '../rules/secrets.js'
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
  /** which rules load made it: a reload makes a gate with a higher one */
  readonly generation: number
  /** the secrets' values, put in by lib/proxy/secrets.ts toward their hosts only (the bindings: policy.secrets) */
  readonly values?: SecretValues | undefined
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

/** What a reload re-decides about an open connection. */
export interface Admitted {
  readonly target: Target
  /** the addresses it was admitted on */
  readonly resolved: readonly Ip[] | undefined
  /** the one request it carries (a forwarded request, an upgrade): its method and path are decided again too */
  readonly request?: { readonly method: string; readonly path: string } | undefined
  /**
   * For tunnels: 'relayed', its bytes pass unseen, so rules that now limit methods or paths on its
   * host cannot be kept on it; 'opened', each request inside is decided as it comes; 'pending', not yet either
   */
  readonly carries?: 'pending' | 'relayed' | 'opened'
  /** for tunnels: what their first bytes were to a TLS server (its ClientHello's server name), held to the new TLS rules too */
  readonly hello?: HelloView | undefined
}

/** Re-decides an open connection under new rules, with the addresses it was admitted on. */
export function redecide(gate: Gate, open: Admitted): Decision {
  const { policy, ctx } = gate
  const first = decideTarget(policy, ctx, open.target)
  const host = first.verdict === 'resolve' ? decideAddresses(policy, ctx, open.target, first, open.resolved ?? []) : first
  if (open.request) return decideForwarded(policy, ctx, host, open.target, open.request.method, open.request.path)
  if (host.verdict === 'allow' && open.carries === 'relayed' && needsInterception(policy, open.target)) return unseenRequests(ctx, host, open.target)
  if (host.verdict !== 'allow' || open.hello === undefined) return host
  // a ClientHello report mode let through, or one the new tls settings refuse (allowNonTls, ports, requireSni)
  const checked = checkHello(ctx, open.target, host, open.hello)
  return checked.verdict === 'admit-sni' ? host : checked
}

/**
 * Runs `decide` under the gate in force, and again under the new one when a reload swapped it while
 * `decide` waited (for DNS): what comes back was decided under the rules in force when it returns,
 * so a connection registered in the same tick is one every later reload re-decides.
 */
export function underCurrent<T>(current: () => Gate, decide: (gate: Gate) => T | Promise<T>): Decided<T> | Promise<Decided<T>> {
  const gate = current()
  const value = decide(gate)
  if (!(value instanceof Promise)) return { gate, value }
  return value.then((v) => (current().generation === gate.generation ? { gate, value: v } : underCurrent(current, decide)))
}

export interface Decided<T> {
  readonly gate: Gate
  readonly value: T
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
