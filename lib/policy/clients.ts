// Who gets which policy: named policies, and the clients (by proxy user or source address) that
// use them. Pure: the caller says who the client is.
import { cidrContains, parseCidr, type Cidr, type Ip } from './ip.js'
import { compilePolicy, entryText, type Policy, type RuleError } from './rules.js'

export const DEFAULT_POLICY = 'default'

export type ClientRule =
  | { readonly kind: 'user'; readonly user: string; readonly policy: string; readonly index: number }
  | { readonly kind: 'source'; readonly source: Cidr; readonly text: string; readonly policy: string; readonly index: number }

export interface PolicySet {
  /** the top-level allow/deny */
  readonly fallback: Policy
  readonly named: ReadonlyMap<string, Policy>
  readonly clients: readonly ClientRule[]
}

export interface ClientIdentity {
  /** the client's address, as the proxy sees it */
  readonly source: Ip | undefined
  /** the proxy user, when proxy authentication is on */
  readonly user: string | undefined
}

export interface Chosen {
  readonly name: string
  readonly policy: Policy
}

/**
 * Precedence: a `user` entry for the authenticated user, then the first `source` entry (in file
 * order) that holds the client's address, then the top-level allow/deny.
 */
export function choosePolicy(set: PolicySet, who: ClientIdentity): Chosen {
  const byUser = who.user === undefined ? undefined : set.clients.find((c) => c.kind === 'user' && c.user === who.user)
  const bySource = who.source === undefined ? undefined : set.clients.find((c) => c.kind === 'source' && cidrContains(c.source, who.source as Ip))
  const rule = byUser ?? bySource
  const policy = rule ? set.named.get(rule.policy) : undefined
  return rule && policy ? { name: rule.policy, policy } : { name: DEFAULT_POLICY, policy: set.fallback }
}

type Errors = RuleError[]

const err = (errors: Errors, path: string, value: unknown, message: string): void => {
  errors.push({ path, entry: entryText(value), message })
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function parsePolicies(errors: Errors, value: unknown): Map<string, Policy> {
  const named = new Map<string, Policy>()
  if (value === undefined) return named
  if (!isObject(value)) {
    err(errors, 'policies', value, '"policies" must be an object of named policies, each with "allow" and "deny"')
    return named
  }
  for (const [name, body] of Object.entries(value)) {
    if (!NAME.test(name) || name === DEFAULT_POLICY) {
      err(errors, `policies.${name}`, name, `a policy name is 1-64 letters, digits, ".", "_" or "-", and not "${DEFAULT_POLICY}"`)
      continue
    }
    if (!isObject(body) || Object.keys(body).some((k) => k !== 'allow' && k !== 'deny')) {
      err(errors, `policies.${name}`, body, 'a policy is an object with "allow" and/or "deny" lists')
      continue
    }
    const compiled = compilePolicy({ allow: body.allow, deny: body.deny })
    if (compiled.ok) named.set(name, compiled.value)
    else errors.push(...(compiled.errors ?? []).map((e) => ({ ...e, path: `policies.${name}.${e.path}` })))
  }
  return named
}

function parseClient(errors: Errors, entry: unknown, index: number, named: ReadonlyMap<string, Policy>): ClientRule | undefined {
  const path = `clients[${index}]`
  if (!isObject(entry) || typeof entry.policy !== 'string' || Object.keys(entry).some((k) => !['source', 'user', 'policy'].includes(k))) {
    err(errors, path, entry, 'a client is { "source": CIDR, "policy": NAME } or { "user": NAME, "policy": NAME }')
    return undefined
  }
  const policy = entry.policy
  if (policy !== DEFAULT_POLICY && !named.has(policy)) {
    err(errors, path, entry, `no policy named "${policy}" in "policies"`)
    return undefined
  }
  if ((entry.source === undefined) === (entry.user === undefined)) {
    err(errors, path, entry, 'give exactly one of "source" or "user"')
    return undefined
  }
  if (typeof entry.user === 'string' && NAME.test(entry.user)) return { kind: 'user', user: entry.user, policy, index }
  if (typeof entry.source === 'string') {
    const cidr = parseCidr(entry.source)
    if (typeof cidr !== 'string') return { kind: 'source', source: cidr, text: entry.source, policy, index }
    err(errors, path, entry, `"source": ${cidr}`)
    return undefined
  }
  err(errors, path, entry, '"user" is 1-64 letters, digits, ".", "_" or "-"; "source" is an IP or CIDR')
  return undefined
}

export function parseClients(errors: Errors, value: unknown, named: ReadonlyMap<string, Policy>): ClientRule[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) {
    err(errors, 'clients', value, '"clients" must be a list')
    return []
  }
  return value.map((entry: unknown, i: number) => parseClient(errors, entry, i, named)).filter((c): c is ClientRule => c !== undefined)
}
