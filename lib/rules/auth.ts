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
/** The memory one scrypt check may use (Node's maxmem): 128 × N × r bytes must fit. */
export const SCRYPT_MAX_MEMORY = 64 * 1024 * 1024

/** Why a hash's scrypt cost cannot be used (a login would fail, or take the proxy's CPU), if it cannot. */
function costProblem({ N, r, p }: ScryptHash): string | undefined {
  const fits = N >= 1_024 && (N & (N - 1)) === 0 && r >= 1 && r <= 32 && p >= 1 && p <= 16 && 128 * N * r <= SCRYPT_MAX_MEMORY
  if (fits) return undefined
  return `scrypt cost N=${N}, r=${r}, p=${p} is out of range: N a power of 2 from 1024, r from 1 to 32, p from 1 to 16, and 128 × N × r bytes at most 64 MiB (make a new hash with "proxy-gate passwd USER")`
}

/** What a user name may be (passwd and the login limiter use it too). */
export const USER = /^[A-Za-z0-9_.@-]{1,64}$/

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
    const parsed = typeof hash === 'string' ? parseScryptHash(hash) : undefined
    const problem = parsed ? costProblem(parsed) : 'not a hash made by "proxy-gate passwd USER" (passwords are never stored in plain text)'
    if (!USER.test(user)) bad(`auth.users.${user}`, user, 'a user name is 1-64 letters, digits, ".", "_", "@" or "-"')
    else if (problem) bad(`auth.users.${user}`, '(hidden)', problem)
    else map.set(user, hash as string)
  }
  return { realm: typeof realm === 'string' ? realm : 'proxy-gate', users: map }
}
