// Secret bindings as the policy sees them: each secret's name, the placeholder the workload holds
// instead of its value, and the hosts the value may go to. Never the value. Pure.
import { patternMatches, type PortRange, type Rule } from './rules.js'
import type { Target } from './target.js'

export interface SecretBinding {
  readonly name: string
  /** what the workload holds: a recognisable prefix (maybe empty), then the marker */
  readonly placeholder: string
  /** the unguessable part of the placeholder: found in any text, in any letter case */
  readonly marker: string
  /** `hosts`, in the allow-rule grammar (without ports: 443 only) */
  readonly hosts: readonly SecretHost[]
}

export interface SecretHost {
  readonly text: string
  readonly pattern: Rule['pattern']
  readonly ports: readonly PortRange[]
}

/** Whether the secret's value may go to this destination: one of its hosts names it, port included. */
export function boundTo(binding: SecretBinding, target: Target): boolean {
  return binding.hosts.some((h) => patternMatches(h.pattern, target.host) && h.ports.some(([lo, hi]) => target.port >= lo && target.port <= hi))
}

/** Whether any secret's value may go to this destination: its tunnels must then be opened. */
export function bindsAny(bindings: readonly SecretBinding[] | undefined, target: Target): boolean {
  return bindings !== undefined && bindings.some((b) => boundTo(b, target))
}

/**
 * The secrets whose placeholder (its marker, in any letter case: DNS and host names are folded)
 * is somewhere in the texts. The texts are what proxy-gate read: a request line, header names and
 * values, decoded Basic credentials, a DNS name.
 */
export function placeholdersIn(bindings: readonly SecretBinding[] | undefined, texts: readonly string[]): SecretBinding[] {
  if (bindings === undefined || bindings.length === 0) return []
  const folded = texts.join('\n').toLowerCase()
  return bindings.filter((b) => folded.includes(b.marker.toLowerCase()))
}
