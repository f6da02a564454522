// Test fixtures written as text and parsed by the project's own parsers; a fixture that does
// not parse is a broken test, so it throws instead of returning a result.
import { parseIp, type Ip } from '../../lib/policy/ip.js'
import { compilePolicy, type Policy } from '../../lib/policy/rules.js'
import { parseAuthority, type Target } from '../../lib/policy/target.js'

/** The IP address `text`, parsed strictly. */
export function ip(text: string): Ip {
  const parsed = parseIp(text)
  if (!parsed) throw new Error(`fixture ${text} is not an IP`)
  return parsed
}

/** The CONNECT authority `text` (host:port), parsed. */
export function target(text: string): Target {
  const parsed = parseAuthority(text)
  if (!parsed.ok) throw new Error(`fixture ${text}: ${parsed.error}`)
  return parsed.value
}

/** A policy compiled from allow and deny entries as rules.json spells them. */
export function policy(allow: unknown[], deny: unknown[] = []): Policy {
  const compiled = compilePolicy({ allow, deny })
  if (!compiled.ok) throw new Error(compiled.error)
  return compiled.value
}
