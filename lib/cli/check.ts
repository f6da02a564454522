// `proxy-gate check TARGET`: the decision the proxy would make, made by the functions the proxy
// makes it with (admit in lib/net/gate.ts, decideForwarded in lib/policy/decide.ts): the rules,
// one resolution and the address guard, then the request's method and path where rules limit them.
import { DEFAULT_POLICY } from '../policy/clients.js'
import { decideForwarded, decideTarget, needsInterception, type Decision } from '../policy/decide.js'
import { formatIp, parseIp, type Ip } from '../policy/ip.js'
import type { Rule } from '../policy/rules.js'
import { formatTarget, normaliseRuleName, parseAbsoluteUrl, parseAuthority, type Result, type Target } from '../policy/target.js'
import { admit, gateFor } from '../net/gate.js'
import { createResolve, type AnswerSource } from '../net/resolve.js'
import { selfAddresses } from '../net/self.js'
import type { Config } from '../rules/config.js'
import { usageError } from './common.js'

export interface CheckFlags {
  readonly source: string | undefined
  readonly user: string | undefined
  readonly method: string | undefined
}

/** What to check: a tunnel (host:port) or one request (a URL, with its path). */
interface CheckTarget {
  readonly target: Target
  readonly path: string | undefined
}

// as rules spell methods (rules.ts): the proxy compares the request's method with theirs
const METHOD = /^[A-Z][A-Z0-9-]{0,31}$/

/** An authority whose host may be an internationalised name, as rules accept them: its punycode form. */
function asciiAuthority(authority: string): Result<string> {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(authority)) return { ok: true, value: authority }
  const colon = authority.lastIndexOf(':')
  const host = colon < 0 ? authority : authority.slice(0, colon)
  const name = normaliseRuleName(host)
  return name.ok ? { ok: true, value: colon < 0 ? name.value : `${name.value}${authority.slice(colon)}` } : name
}

function parseCheckTarget(text: string): Result<CheckTarget> {
  const url = /^([a-z][a-z0-9+.-]*):\/\/([^/?#\\]*)(.*)$/is.exec(text)
  if (!url) {
    const authority = asciiAuthority(text)
    const target = authority.ok ? parseAuthority(authority.value) : authority
    return target.ok ? { ok: true, value: { target: target.value, path: undefined } } : target
  }
  const [, scheme = '', rawAuthority = '', tail = ''] = url
  if (!/^https?$/i.test(scheme)) return { ok: false, error: `unsupported scheme "${scheme}:" (http:// or https://)` }
  if (rawAuthority.includes('@')) return { ok: false, error: 'URL contains userinfo ("@")' }
  const authority = asciiAuthority(rawAuthority)
  if (!authority.ok) return authority
  const target = parseAuthority(authority.value, scheme.toLowerCase() === 'https' ? 443 : 80)
  if (!target.ok) return target
  // the path as the proxy reads a request's (an https URL's request is read inside its tunnel)
  const request = parseAbsoluteUrl(`http://${formatTarget(target.value)}${tail}`)
  return request.ok ? { ok: true, value: { target: target.value, path: request.value.path } } : request
}

function ruleText(rule: Rule): string {
  return `${rule.list}[${rule.index}] ${rule.text}`
}

/** The rule to name: the decision's, else the allow rule that admitted the name before DNS or the guard refused it. */
function shownRule(decision: Decision | undefined, byName: Rule | undefined): string {
  if (decision?.rule) return ruleText(decision.rule)
  if (!byName) return '(none)'
  return `${ruleText(byName)} (${decision ? 'the address guard refused it' : 'its name could not be resolved'})`
}

export async function checkCommand(config: Config, flags: CheckFlags, positional: readonly string[]): Promise<number> {
  const [text] = positional
  if (text === undefined || positional.length > 1) return usageError('check takes one TARGET (host:port or URL)')
  const parsed = parseCheckTarget(text)
  if (!parsed.ok) {
    console.error(`bad target: ${parsed.error}`)
    return 2
  }
  const { target, path } = parsed.value
  const method = (flags.method ?? 'GET').toUpperCase()
  if (!METHOD.test(method)) return usageError('--method must be an HTTP method such as GET or POST')
  if (flags.method !== undefined && path === undefined) return usageError('--method needs a URL (http://HOST/PATH or https://HOST/PATH): a host:port is a tunnel, whose requests are checked one by one')
  const source = flags.source === undefined ? undefined : parseIp(flags.source)
  if (flags.source !== undefined && !source) return usageError('--source must be an IP address')
  const ctx = { mode: config.mode, self: selfAddresses({ address: config.listen.host, port: config.listen.port }), tls: config.tls }
  const resolve = createResolve(config.dns)
  let from: AnswerSource | undefined
  const lookup = async (name: string): Promise<Ip[]> => {
    const resolution = await resolve(name)
    from = resolution.from
    return resolution.addresses
  }
  const base = { policy: config.policy, policyName: DEFAULT_POLICY, policies: config.policies, ctx, lookup, generation: 0 }
  const gate = gateFor(base, { source, user: flags.user })
  const first = decideTarget(gate.policy, gate.ctx, target)
  const byName = first.verdict === 'resolve' ? first.rule : undefined
  const admission = await admit(gate, target)
  console.log(`target:   ${formatTarget(target)}`)
  if (path !== undefined) console.log(`request:  ${method} ${path}`)
  console.log(`policy:   ${gate.policyName}`)
  if (admission.kind === 'failed') {
    console.log(`rule:     ${shownRule(undefined, byName)}`)
    console.log(`error:    ${admission.reply.details}`)
    return 2
  }
  const { resolved } = admission
  const host = admission.decision
  if (resolved) console.log(`resolved: ${resolved.map(formatIp).join(', ')} (from ${from?.kind === 'hosts' ? from.path : 'DNS'})`)
  if (resolved || target.host.kind === 'ip') {
    const guard = host.reason === 'address-prohibited' || host.reason === 'self-connection' ? `refused (${host.detail})` : 'every address passed'
    console.log(`guard:    ${host.reason === 'deny-rule' || host.reason === 'no-rule' ? 'not reached' : guard}`)
  }
  const decision = path === undefined ? host : decideForwarded(gate.policy, gate.ctx, host, target, method, path)
  console.log(`decision: ${decision.verdict}${decision.wouldDeny ? ' (report mode: enforce would deny)' : ''}`)
  console.log(`rule:     ${shownRule(decision, byName)}`)
  console.log(`why:      ${decision.detail}`)
  if (decision.verdict === 'deny' && decision.suggestion) console.log(`fix:      add to "allow" in rules.json: ${decision.suggestion}`)
  if (decision.verdict === 'allow' && path === undefined && needsInterception(gate.policy, target)) {
    console.log('requests: every rule for this host limits methods or paths: each request in the tunnel is decided as it comes (check a URL, with --method)')
  }
  if (decision.verdict === 'allow' && config.upstream) console.log(`route:    ${(await import('../net/upstream.js')).describeRoute(config, target)}`)
  return decision.verdict === 'allow' ? 0 : 1
}
