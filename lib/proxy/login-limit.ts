// Limits on proxy logins, applied before a password is hashed. Failures count per source address
// and user name, so one user's wrong passwords never refuse another user's right one (every
// container on Docker Desktop shares one source address); a higher ceiling per address alone holds
// off spraying many names, except for names that logged in from that address lately. A check is
// counted as a failure when it starts and uncounted when it succeeds: forty wrong passwords sent at
// once run scrypt ten times, not forty. scrypt runs a few at a time per address; the rest wait.
import { LRUCache } from 'lru-cache'
import { USER } from '../rules/auth.js'

const WINDOW_MS = 60_000
/** Failed logins per source address and user name in a minute, before that name is refused there. */
const FAILURES_PER_USER = 10
/** Failed logins per source address in a minute (all names together), before new names are refused there. */
const FAILURES_PER_SOURCE = 100
/** scrypt checks running at once for one source address. */
const HASHING_PER_SOURCE = 2
/** How long a name that logged in from an address is exempt from that address's ceiling. */
const KNOWN_MS = 24 * 60 * 60_000

export interface LoginLimiter {
  /** why a login for `user` from `source` is refused without hashing its password, if it is */
  refused(source: string, user: string): string | undefined
  /** runs `check` (true: the password is right) counted as a failure until it says otherwise */
  attempt(source: string, user: string, check: () => Promise<boolean>): Promise<boolean>
}

/** Counts in a fixed window that starts at the first count (a later count does not extend it). */
function windowCounter(max: number) {
  const counts = new LRUCache<string, number>({ max, ttl: WINDOW_MS, noUpdateTTL: true })
  return {
    get: (key: string): number => counts.get(key) ?? 0,
    add(key: string, n: number): void {
      const next = (counts.get(key) ?? 0) + n
      if (next > 0) counts.set(key, next)
      else counts.delete(key)
    },
  }
}

/** Runs work for a source at most `limit` at a time; the others wait in order. */
function turns(limit: number) {
  const sources = new Map<string, { running: number; readonly waiting: Array<() => void> }>()
  return async <T>(source: string, work: () => Promise<T>): Promise<T> => {
    const state = sources.get(source) ?? { running: 0, waiting: [] }
    sources.set(source, state)
    if (state.running < limit) state.running++
    else await new Promise<void>((resolve) => state.waiting.push(resolve)) // the turn is handed over, `running` unchanged
    try {
      return await work()
    } finally {
      const next = state.waiting.shift()
      if (next) next()
      else if (--state.running === 0) sources.delete(source)
    }
  }
}

export function createLoginLimiter(): LoginLimiter {
  const perUser = windowCounter(20_000)
  const perSource = windowCounter(10_000)
  const known = new LRUCache<string, true>({ max: 10_000, ttl: KNOWN_MS })
  const turn = turns(HASHING_PER_SOURCE)
  // names no user can have (rules/auth.ts) share one key: a key's size is bounded whatever a client sends
  const userKey = (source: string, user: string) => `${source} ${USER.test(user) ? user : '(not a user name)'}`
  return {
    refused(source, user) {
      const key = userKey(source, user)
      if (perUser.get(key) >= FAILURES_PER_USER) return 'too many failed proxy logins for this user from this address; try again in a minute'
      if (perSource.get(source) >= FAILURES_PER_SOURCE && !known.has(key)) return 'too many failed proxy logins from this address; try again in a minute'
      return undefined
    },
    async attempt(source, user, check) {
      const key = userKey(source, user)
      perUser.add(key, 1)
      perSource.add(source, 1)
      const right = await turn(source, check)
      if (right) {
        perUser.add(key, -1)
        perSource.add(source, -1)
        known.set(key, true)
      }
      return right
    },
  }
}
