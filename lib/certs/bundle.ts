// The CA bundle a sandbox workload trusts instead of its image's: the public roots (the host's
// system bundle, which also holds roots an organisation added, else Node's own) and the local CA.
// Public data only: written beside ca.crt with mode 0644, rewritten only when it changes.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { rootCertificates } from 'node:tls'
import { writeFileAtomic } from '../core/atomic-file.js'
import type { Result } from '../policy/target.js'

/** Debian/Ubuntu/Alpine, Fedora/RHEL, macOS/BSD. */
const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem']

function publicRoots(): string {
  const found = SYSTEM_BUNDLES.find((path) => existsSync(path))
  const text = found === undefined ? rootCertificates.join('\n') : readFileSync(found, 'utf8')
  return text.endsWith('\n') ? text : `${text}\n`
}

/** Writes DIR/ca-bundle.pem (the public roots, then `caCertPem`) unless it already holds that; its path. */
export function writeCaBundle(dir: string, caCertPem: string): Result<string> {
  const path = join(dir, 'ca-bundle.pem')
  try {
    const text = `${publicRoots()}# proxy-gate local CA\n${caCertPem.trim()}\n`
    const current = existsSync(path) ? readFileSync(path, 'utf8') : undefined
    if (current !== text) writeFileAtomic(path, text, 0o644)
    return { ok: true, value: path }
  } catch (error) {
    return { ok: false, error: `cannot write the CA bundle ${path}: ${(error as Error).message}` }
  }
}
