// Putting values in place of placeholders, for a request already decided to go to a host every
// one of them is bound to: the request-target and the headers, Basic credentials decoded and
// encoded again (git over HTTPS sends a token as the password). Pure.
import type { SecretBinding } from '../policy/secrets.js'
import type { SecretValues } from '../rules/secrets.js'

const BASIC = /^(\s*basic\s+)(\S+)(\s*)$/i

/** Basic credentials as text, for the placeholder search; undefined when the header is not Basic or not base64. */
export function basicCredentials(value: string): string | undefined {
  const match = BASIC.exec(value)
  if (!match?.[2] || !/^[A-Za-z0-9+/]+={0,2}$/.test(match[2])) return undefined
  return Buffer.from(match[2], 'base64').toString('utf8')
}

/**
 * Every placeholder of `found` in `text` replaced by its secret's value (the whole placeholder first,
 * then a bare marker), `encode`d: in a request-target a value's space, `?`, `#`, `&` or `+` must not
 * change what the request means (the placeholder needed no escaping, so the client escaped nothing).
 */
export function substituteText(text: string, found: readonly SecretBinding[], values: SecretValues, encode: (value: string) => string = (v) => v): string {
  let out = text
  for (const binding of found) {
    const value = values.valueOf(binding.name)
    if (value === undefined) continue
    const put = encode(value)
    out = out.split(binding.placeholder).join(put).split(binding.marker).join(put)
  }
  return out
}

/** The reverse, for what comes back: every value of `found` in `text`, as it is or percent-encoded, replaced by its placeholder. */
export function concealText(text: string, found: readonly SecretBinding[], values: SecretValues): string {
  let out = text
  for (const binding of found) {
    const value = values.valueOf(binding.name)
    if (value !== undefined) out = out.split(value).join(binding.placeholder).split(encodeURIComponent(value)).join(binding.placeholder)
  }
  return out
}

/** A header value with the placeholders replaced, inside Basic credentials too. */
function substituteHeader(name: string, value: string, found: readonly SecretBinding[], values: SecretValues): string {
  const credentials = name.toLowerCase() === 'authorization' ? basicCredentials(value) : undefined
  if (credentials === undefined) return substituteText(value, found, values)
  const replaced = substituteText(credentials, found, values)
  if (replaced === credentials) return substituteText(value, found, values)
  const [, scheme = 'Basic ', , tail = ''] = BASIC.exec(value) ?? []
  return `${scheme}${Buffer.from(replaced, 'utf8').toString('base64')}${tail}`
}

/** A flat [name, value, ...] header list with the placeholders replaced in the values. */
export function substituteHeaders(raw: readonly string[], found: readonly SecretBinding[], values: SecretValues): string[] {
  const out: string[] = []
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string
    out.push(name, substituteHeader(name, raw[i + 1] as string, found, values))
  }
  return out
}
