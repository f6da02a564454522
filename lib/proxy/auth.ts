// Proxy authentication (Basic over Proxy-Authorization) against salted scrypt hashes from
// rules.json. Credentials are compared in constant time, never logged or forwarded; verified
// ones are cached briefly so the hash is not recomputed per request, and a source that keeps
// failing is slowed down.
import { createHash, randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { RuleError } from '../policy/rules.js'
import { reply, type ProxyReply } from '../core/reply.js'

export interface AuthSettings {
  readonly realm: string
  /** user name -> "scrypt$N$r$p$salt$hash" */
  readonly users: ReadonlyMap<string, string>
}

const HASH = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$/
const USER = /^[A-Za-z0-9_.@-]{1,64}$/
const COST = { N: 16_384, r: 8, p: 1 }

function scrypt(password: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCallback(password, salt, length, { ...options, maxmem: 64 * 1024 * 1024 }, (e, key) => (e ? reject(e) : resolve(key))))
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await scrypt(password, salt, 32, COST)
  return `scrypt$${COST.N}$${COST.r}$${COST.p}$${salt.toString('base64url')}$${key.toString('base64url')}`
}

export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  const m = HASH.exec(stored)
  if (!m) return false
  const expected = Buffer.from(m[5] ?? '', 'base64url')
  const key = await scrypt(password, Buffer.from(m[4] ?? '', 'base64url'), expected.length, { N: Number(m[1]), r: Number(m[2]), p: Number(m[3]) })
  return timingSafeEqual(key, expected)
}

export function parseAuth(errors: RuleError[], value: unknown): AuthSettings | undefined {
  if (value === undefined) return undefined
  const bad = (path: string, v: unknown, message: string) => errors.push({ path, entry: JSON.stringify(v) ?? String(v), message })
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
    else if (typeof hash !== 'string' || !HASH.exec(hash) || Number(HASH.exec(hash)?.[1]) < 1024) bad(`auth.users.${user}`, '(hidden)', 'not a hash made by "proxy-gate passwd USER" (passwords are never stored in plain text)')
    else map.set(user, hash)
  }
  return { realm: typeof realm === 'string' ? realm : 'proxy-gate', users: map }
}

export type AuthResult = { ok: true; user: string | undefined } | { ok: false; reply: ProxyReply }

export interface Authenticator {
  check(header: string | undefined, source: string): Promise<AuthResult>
}

const FAILURES_PER_MINUTE = 10
const UNKNOWN_USER_HASH = `scrypt$${COST.N}$${COST.r}$${COST.p}$${'A'.repeat(22)}$${'A'.repeat(43)}`

function challenge(settings: AuthSettings, details: string): ProxyReply {
  return { ...reply(407, 'http_request_denied', details, `${details}: send proxy credentials (curl --proxy-user USER:PASSWORD)`), headers: { 'Proxy-Authenticate': `Basic realm="${settings.realm}"` } }
}

function credentials(header: string | undefined): { user: string; password: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header?.trim() ?? '')
  if (!m) return undefined
  const decoded = Buffer.from(m[1] ?? '', 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

export function createAuthenticator(settings: () => AuthSettings | undefined): Authenticator {
  // keyed by a digest of the header, never the header itself; a changed hash invalidates the entry
  const verified = new LRUCache<string, { user: string; hash: string }>({ max: 1_000, ttl: 60_000 })
  const failures = new LRUCache<string, number>({ max: 10_000, ttl: 60_000 })
  return {
    async check(header, source) {
      const auth = settings()
      if (!auth) return { ok: true, user: undefined }
      if ((failures.get(source) ?? 0) >= FAILURES_PER_MINUTE) return { ok: false, reply: reply(429, 'http_request_denied', 'too many failed proxy logins from this address; try again in a minute') }
      const key = createHash('sha256').update(header ?? '').digest('base64url')
      const cached = verified.get(key)
      if (cached && auth.users.get(cached.user) === cached.hash) return { ok: true, user: cached.user }
      const given = credentials(header)
      const hash = given ? auth.users.get(given.user) : undefined
      // an unknown user costs the same scrypt as a known one: timing does not tell which names exist
      const matches = given !== undefined && (await verifyPassword(hash ?? UNKNOWN_USER_HASH, given.password))
      if (given && hash && matches) {
        verified.set(key, { user: given.user, hash })
        return { ok: true, user: given.user }
      }
      if (header !== undefined) failures.set(source, (failures.get(source) ?? 0) + 1)
      return { ok: false, reply: challenge(auth, header === undefined ? 'proxy authentication required' : 'proxy credentials not accepted') }
    },
  }
}
