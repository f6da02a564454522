// The key placeholders are derived from: 32 random bytes in a file beside the admin token (the
// local CA's folder), created on first use with mode 0600 and refused when others can read it.
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Result } from '../policy/target.js'

function secretsKeyPath(dir: string): string {
  return join(dir, 'secrets-key')
}

/** Reads the key, creating it on first use (exclusively: two processes starting at once agree on one). */
export function secretsKey(dir: string): Result<Buffer> {
  const path = secretsKeyPath(dir)
  try {
    mkdirSync(dir, { recursive: true })
    writeFileSync(path, `${randomBytes(32).toString('base64url')}\n`, { flag: 'wx', mode: 0o600 })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return { ok: false, error: `cannot create ${path}: ${(error as Error).message}` }
  }
  try {
    if (process.platform !== 'win32' && (statSync(path).mode & 0o077) !== 0) return { ok: false, error: `${path} can be read by other users: chmod 600 it` }
    const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'base64url')
    return key.length >= 32 ? { ok: true, value: key } : { ok: false, error: `${path} holds no usable key (delete it to make a new one: every placeholder changes)` }
  } catch (error) {
    return { ok: false, error: `cannot read ${path}: ${(error as Error).message}` }
  }
}
