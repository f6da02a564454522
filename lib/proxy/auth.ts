// Proxy authentication (Basic over Proxy-Authorization) against salted scrypt hashes from
// rules.json. Credentials are compared in constant time, never logged or forwarded; verified
// ones are cached briefly so the hash is not recomputed per request, and failures are limited
// per source address and user before any hashing (login-limit.ts).
import { createHash, randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { reply, type ProxyReply } from '../core/reply.js'
import { createLoginLimiter } from './login-limit.js'
import { formatScryptHash, parseScryptHash, SCRYPT_MAX_MEMORY, type AuthSettings } from '../rules/auth.js'

const COST = { N: 16_384, r: 8, p: 1 }

function scrypt(password: string, salt: Buffer, length: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCallback(password, salt, length, { ...options, maxmem: SCRYPT_MAX_MEMORY }, (e, key) => (e ? reject(e) : resolve(key))))
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16)
  return formatScryptHash({ ...COST, salt, key: await scrypt(password, salt, 32, COST) })
}

export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  const hash = parseScryptHash(stored)
  if (!hash) return false
  const key = await scrypt(password, hash.salt, hash.key.length, { N: hash.N, r: hash.r, p: hash.p })
  return timingSafeEqual(key, hash.key)
}

export type AuthResult = { ok: true; user: string | undefined } | { ok: false; reply: ProxyReply }

export interface Authenticator {
  check(header: string | undefined, source: string): Promise<AuthResult>
}

/** How a password is checked against a stored hash: verifyPassword, or a stand-in that counts. */
export type Verify = (stored: string, password: string) => Promise<boolean>

const UNKNOWN_USER_HASH = formatScryptHash({ ...COST, salt: Buffer.alloc(16), key: Buffer.alloc(32) })

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

export function createAuthenticator(settings: () => AuthSettings | undefined, verify: Verify = verifyPassword): Authenticator {
  // keyed by a digest of the header, never the header itself; a changed hash invalidates the entry
  const verified = new LRUCache<string, { user: string; hash: string }>({ max: 1_000, ttl: 60_000 })
  // the same credentials arriving again while their check runs wait for it instead of hashing again
  const checking = new Map<string, Promise<boolean>>()
  const limiter = createLoginLimiter()
  return {
    async check(header, source) {
      const auth = settings()
      if (!auth) return { ok: true, user: undefined }
      const given = credentials(header)
      if (!given) return { ok: false, reply: challenge(auth, header === undefined ? 'proxy authentication required' : 'proxy credentials not accepted') }
      // before the cache: a refused client must not learn that a guess is the cached right password
      const refused = limiter.refused(source, given.user)
      if (refused) return { ok: false, reply: reply(429, 'http_request_denied', refused) }
      const key = createHash('sha256').update(header ?? '').digest('base64url')
      const cached = verified.get(key)
      if (cached && auth.users.get(cached.user) === cached.hash) return { ok: true, user: cached.user }
      const hash = auth.users.get(given.user)
      let running = checking.get(key)
      if (!running) {
        // an unknown user costs the same scrypt as a known one: timing does not tell which names exist
        running = limiter.attempt(source, given.user, () => verify(hash ?? UNKNOWN_USER_HASH, given.password))
        checking.set(key, running)
        void running.finally(() => checking.delete(key)).catch(() => undefined)
      }
      if ((await running) && hash) {
        verified.set(key, { user: given.user, hash })
        return { ok: true, user: given.user }
      }
      return { ok: false, reply: challenge(auth, 'proxy credentials not accepted') }
    },
  }
}
