// Secrets on the wire, after the decision and toward its checked destination: a request that
// carries placeholders only of secrets bound to where it goes leaves with their values; one that
// carries any other placeholder is refused, naming the secret (report mode: let through as it is).
import type { IncomingHttpHeaders } from 'node:http'
import type { Gate } from '../net/gate.js'
import { isTlsPort, misplacedSecret, withSecrets, type Decision, type DecisionContext } from '../policy/decide.js'
import type { SecretBinding } from '../policy/secrets.js'
import { boundTo, placeholdersIn } from '../policy/secrets.js'
import { formatTarget, type Target } from '../policy/target.js'
import { basicCredentials, concealText, substituteHeaders, substituteText } from '../secrets/substitute.js'

/** What goes on the wire instead of what the client sent: its placeholders replaced. */
export interface Wire {
  readonly path: string
  readonly rawHeaders: readonly string[]
  /** a response header's text with the values put back as placeholders: an origin that reflects a request (CORS, a redirect keeping the query) does not hand the value to the client */
  readonly conceal: (text: string) => string
}

export interface Carried {
  readonly decision: Decision
  /** set when values were put in: the path and headers to send (never logged) */
  readonly wire?: Wire
}

/** What proxy-gate read of a request: its request-target, header names and values, Basic credentials decoded. */
function readable(url: string, raw: readonly string[]): string[] {
  const texts = [url, ...raw]
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    if (name === 'authorization' || name === 'proxy-authorization') texts.push(basicCredentials(raw[i + 1] as string) ?? '')
  }
  return texts
}

/**
 * The refusal for a head that carries the placeholder of a secret not bound to `target` (its
 * request-target or name, its headers), before anything is looked up or dialled; undefined when
 * there is none. The one check for every head proxy-gate reads: CONNECT, plain HTTP, a SOCKS
 * request (pass its host name as `url`). `where` names what carried it.
 */
export function misplacedInHead(gate: Gate, target: Target, url: string, raw: readonly string[], where: string, cleartext = false): Decision | undefined {
  // no secrets, no placeholder to find: not even the head's texts are gathered (every request and tunnel comes here)
  if (gate.policy.secrets === undefined || gate.policy.secrets.length === 0) return undefined
  const found = placeholdersIn(gate.policy.secrets, readable(url, raw))
  const misplaced = found.find((b) => !boundTo(b, target))
  if (misplaced) return misplacedSecret(gate.ctx, misplaced, target, where)
  return unsafeWire(gate.ctx, found, target, where, cleartext)
}

/**
 * The refusal for values that would leave in cleartext toward a TLS port (`GET http://host:443/`: a
 * secret whose hosts name no port is bound to 443, and its value must not cross the network readable).
 */
function unsafeWire(ctx: DecisionContext, found: readonly SecretBinding[], target: Target, where: string, cleartext: boolean, admitted?: Decision): Decision | undefined {
  const [first] = found
  if (first === undefined || !cleartext || !isTlsPort(ctx, target.port)) return undefined
  return misplacedSecret(ctx, first, target, where, admitted, `never in cleartext to ${formatTarget(target)}, a TLS port`)
}

/**
 * The refusal for values in a request whose target is not origin-form (`GET https://other.test/?k=…`
 * inside a tunnel to a bound host): the origin must take the host from such a target, not from Host
 * (RFC 9112 3.2.2), and a front end or proxy there would send the value on to that other host.
 */
function otherAuthority(ctx: DecisionContext, found: readonly SecretBinding[], target: Target, path: string, where: string, admitted: Decision): Decision | undefined {
  const [first] = found
  if (first === undefined || path.startsWith('/') || path === '*') return undefined
  return misplacedSecret(ctx, first, target, where, admitted, `not in an absolute-form request-target, which can name another host than ${formatTarget(target)}`)
}

/**
 * An allowed request's secrets: a misplaced placeholder refuses it, bound ones are replaced in
 * `path` (what goes upstream as the request-target) and the headers. `where` names what carried it;
 * `cleartext`: the request goes upstream without TLS.
 */
export function carrySecrets(gate: Gate, target: Target, allowed: Decision, head: { url: string; rawHeaders: readonly string[]; path: string }, where: string, cleartext: boolean): Carried {
  const bindings = gate.policy.secrets
  if (allowed.verdict !== 'allow' || bindings === undefined || bindings.length === 0) return { decision: allowed }
  const found = placeholdersIn(bindings, readable(head.url, head.rawHeaders))
  if (found.length === 0) return { decision: allowed }
  const misplaced = found.find((b) => !boundTo(b, target))
  if (misplaced) return { decision: misplacedSecret(gate.ctx, misplaced, target, where, allowed) }
  const unsafe = unsafeWire(gate.ctx, found, target, where, cleartext, allowed) ?? otherAuthority(gate.ctx, found, target, head.path, where, allowed)
  if (unsafe) return { decision: unsafe }
  // report mode lets through what enforce mode would refuse (a Host naming another host, a guarded address): as it came, never with values
  const values = gate.values
  if (values === undefined || allowed.wouldDeny) return { decision: allowed }
  const wire = { path: substituteText(head.path, found, values, encodeURIComponent), rawHeaders: substituteHeaders(head.rawHeaders, found, values), conceal: (text: string) => concealText(text, found, values) }
  return { decision: withSecrets(allowed, found.map((b) => b.name)), wire }
}

/** Raw header pairs as Node's header object (repeated values joined; set-cookie is a request header nowhere). */
export function headerObject(raw: readonly string[]): IncomingHttpHeaders {
  const headers: Record<string, string> = {}
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    const value = raw[i + 1] as string
    headers[name] = headers[name] === undefined ? value : `${headers[name]}${name === 'cookie' ? '; ' : ', '}${value}`
  }
  return headers
}
