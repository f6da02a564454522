// The "socks" section of rules.json: a SOCKS5 listener beside the proxy port, for TCP that is not
// HTTP (ssh, git over ssh, databases), decided by the same rules. Off unless present.
import { entryText, type RuleError } from '../policy/rules.js'
import type { Result } from '../policy/target.js'

export interface SocksSettings {
  /** where the SOCKS5 listener binds: an IP literal and port, as "listen" */
  readonly listen: { readonly host: string; readonly port: number }
}

/** The listener's address parsed as "listen" is (config.ts passes its parser: this file stays below it). */
type ParseListen = (text: string) => Result<SocksSettings['listen']>

export function parseSocks(errors: RuleError[], value: unknown, parseListen: ParseListen): SocksSettings | undefined {
  if (value === undefined) return undefined
  const bad = (path: string, v: unknown, message: string): undefined => {
    errors.push({ path, entry: entryText(v), message })
    return undefined
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return bad('socks', value, '"socks" is { "listen": "HOST:PORT" }')
  const unknown = Object.keys(value).filter((k) => k !== 'listen')
  for (const key of unknown) bad(`socks.${key}`, (value as Record<string, unknown>)[key], `unknown key "${key}" (allowed: listen)`)
  const { listen } = value as { listen?: unknown }
  if (typeof listen !== 'string') return bad('socks.listen', listen, 'the SOCKS5 listener\'s address: a string "HOST:PORT" (an IP address or localhost), e.g. "127.0.0.1:1080"')
  const parsed = parseListen(listen)
  if (!parsed.ok) return bad('socks.listen', listen, parsed.error)
  return unknown.length > 0 ? undefined : { listen: parsed.value }
}
