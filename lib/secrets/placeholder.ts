// Placeholders: what the workload holds instead of a secret's value. Derived from a key that stays
// with proxy-gate (key.ts) and the secret's name, so they are stable across restarts and cannot be
// guessed; shaped as client libraries expect tokens to be. Pure.
import { createHmac } from 'node:crypto'

/** The derivation's label: a new scheme takes a new one, and every placeholder changes with it. */
const LABEL = 'proxy-gate secret placeholder v1'

/**
 * The unguessable part: HMAC-SHA256(key, name), base64url (43 characters of [A-Za-z0-9_-], 256
 * bits): printable, no separator that breaks a header, a URL or Basic credentials, unique in any text.
 */
export function placeholderMarker(key: Buffer, name: string): string {
  return createHmac('sha256', key).update(`${LABEL}\0${name}`).digest('base64url')
}

/**
 * The value's recognisable prefix, kept so the placeholder has the shape libraries check for:
 * up to two short lowercase words, each with its `_` or `-` (`ghp_`, `github_pat_`, `sk-`,
 * `sk-ant-`, `xoxb-`, `npm_`, `glpat-`), followed by at least 16 more characters. A longer first
 * word (a UUID's, a hex string's) is not a prefix: nothing of a random value is kept.
 */
export function valuePrefix(value: string | undefined): string {
  const prefix = value === undefined ? undefined : /^(?:[a-z]{1,6}[_-]){1,2}/.exec(value)?.[0]
  return prefix !== undefined && value !== undefined && value.length - prefix.length >= 16 ? prefix : ''
}

/** The placeholder: the value's prefix (when there is one and the value is at hand), then the marker. */
export function placeholderFor(key: Buffer, name: string, value: string | undefined): { placeholder: string; marker: string } {
  const marker = placeholderMarker(key, name)
  return { placeholder: `${valuePrefix(value)}${marker}`, marker }
}
