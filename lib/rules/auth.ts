// The "auth" section of rules.json: proxy users and their salted scrypt hashes, validated once
// at load. The hash format lives here; proxy/auth.ts computes and checks hashes.
import { entryText, type RuleError } from '../policy/rules.js'

export interface AuthSettings {
  readonly realm: string
  /** user name -> "scrypt$N$r$p$salt$hash" */
  readonly users: ReadonlyMap<string, string>
}

const HASH = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$/

/** A stored password hash: scrypt cost parameters, then salt and derived key in base64url. */
export interface ScryptHash {
  readonly N: number
  readonly r: number
  readonly p: number
  readonly salt: Buffer
  readonly key: Buffer
}

export function parseScryptHash(text: string): ScryptHash | undefined {
  const m = HASH.exec(text)
  if (!m) return undefined
  return { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]), salt: Buffer.from(m[4] ?? '', 'base64url'), key: Buffer.from(m[5] ?? '', 'base64url') }
}

export function formatScryptHash(hash: ScryptHash): string {
  return `scrypt$${hash.N}$${hash.r}$${hash.p}$${hash.salt.toString('base64url')}$${hash.key.toString('base64url')}`
}
const USER = /^[A-Za-z0-9_.@-]{1,64}$/

export function parseAuth(errors: RuleError[], value: unknown): AuthSettings | undefined {
  if (value === undefined) return undefined
  const bad = (path: string, v: unknown, message: string) => errors.push({ path, entry: entryText(v), message })
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.keys(value).some((k) => k !== 'users' && k !== 'realm')) {
    bad('auth', value, '"auth" is { "users": { NAME: HASH }, "realm": TEXT }')
    return undefined
  }
  const { users, realm = 'proxy-gate' } = value as { users?: unknown; realm?: unknown }
  if (typeof realm !== 'string' || !/^[\x20-\x7e]{1,64}$/.test(realm) || /["\\]/.test(realm)) bad('auth.realm', realm, 'the realm is 1-64 printable characters without quotes or backslashes')
  const map = new Map<string, string>()
  if (typeof users !== 'object' || users === null || Array.isArray(users) || Object.keys(users).length === 0) {
    bad('auth.users', users, '"users" maps user names to hashes made by "proxy-gate passwd USER"')
    return undefined
  }
  for (const [user, hash] of Object.entries(users)) {
    if (!USER.test(user)) bad(`auth.users.${user}`, user, 'a user name is 1-64 letters, digits, ".", "_", "@" or "-"')
    else if (typeof hash !== 'string' || (parseScryptHash(hash)?.N ?? 0) < 1024) bad(`auth.users.${user}`, '(hidden)', 'not a hash made by "proxy-gate passwd USER" (passwords are never stored in plain text)')
    else map.set(user, hash)
  }
  return { realm: typeof realm === 'string' ? realm : 'proxy-gate', users: map }
}
