// Per-client token buckets for the sandbox's DNS server: a client may send a second's worth of
// queries at once, then as many per second as the rate allows. Bounded: the least recently seen
// clients are forgotten (and start again with a full bucket).
import { LRUCache } from 'lru-cache'

/** answer it; refuse it and log that; refuse it without a log line (one per client per second is enough) */
export type Take = 'answer' | 'refuse' | 'refuse-quietly'

interface Bucket {
  tokens: number
  /** ms (monotonic) when `tokens` was last brought up to date */
  at: number
  /** ms when a refusal was last logged */
  loggedAt: number
}

export interface RateLimiter {
  take(client: string, now: number): Take
}

const LOG_EVERY_MS = 1_000

export function createRateLimiter(perSecond: () => number, clients = 10_000): RateLimiter {
  const buckets = new LRUCache<string, Bucket>({ max: clients })
  return {
    take(client, now) {
      const rate = perSecond()
      const bucket = buckets.get(client) ?? { tokens: rate, at: now, loggedAt: -Infinity }
      bucket.tokens = Math.min(rate, bucket.tokens + ((now - bucket.at) / 1000) * rate)
      bucket.at = now
      buckets.set(client, bucket)
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1
        return 'answer'
      }
      if (now - bucket.loggedAt < LOG_EVERY_MS) return 'refuse-quietly'
      bucket.loggedAt = now
      return 'refuse'
    },
  }
}
