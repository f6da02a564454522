// The local certificate authority in certs/: ca.crt (public, what clients trust) and ca.key
// (private, mode 0600). It signs the leaf certificates of connections a rule asks to intercept.
import { generateKeyPair, X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type forge from 'node-forge'
import { writeFileAtomic } from '../core/atomic-file.js'
import { shellWord } from '../core/shell.js'
import type { Result } from '../policy/target.js'
import { forgeLibrary, forgePublicKey, randomSerial, setValidity, signCertificate } from './x509.js'

const CA_CERT_FILE = 'ca.crt'
const CA_KEY_FILE = 'ca.key'
const CA_DAYS = 3650

export interface Ca {
  /** ca.crt as PEM: what clients trust and /ca.crt serves */
  readonly certPem: string
  /** the same certificate parsed by forge: the issuer of leaves */
  readonly cert: forge.pki.Certificate
  readonly key: KeyObject
}

export interface CaInfo {
  readonly subject: string
  /** SHA-256 of the DER certificate, colon-separated upper-case hex (as `openssl x509 -fingerprint -sha256`) */
  readonly fingerprint256: string
  readonly serialNumber: string
  readonly notBefore: Date
  readonly notAfter: Date
}

export type LoadedCa = { ok: true; value: Ca } | { ok: false; error: string; missing: boolean }

/** certs/ in the proxy-gate folder (next to package.json), from lib/ and dist/ alike. */
export function defaultCaDir(): string {
  return fileURLToPath(new URL('../../certs/', import.meta.url))
}

export function caPaths(dir: string): { cert: string; key: string } {
  return { cert: join(dir, CA_CERT_FILE), key: join(dir, CA_KEY_FILE) }
}

function toLf(pem: string): string {
  return pem.replace(/\r\n/g, '\n')
}

function defaultCommonName(now: number): string {
  // ASCII only: forge re-encodes parsed UTF8String values, which would garble other characters
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 24)
  return `proxy-gate local CA (${host}) ${new Date(now).toISOString().slice(0, 10)}`
}

/** A new CA: RSA-2048 key from Node's crypto (off the event loop), certificate built by forge. */
export async function createCa(options: { commonName?: string; now?: number } = {}): Promise<Ca> {
  const now = options.now ?? Date.now()
  const { privateKey, publicKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 })
  const cert = forgeLibrary().pki.createCertificate()
  cert.publicKey = forgePublicKey(publicKey)
  cert.serialNumber = randomSerial()
  setValidity(cert, CA_DAYS, now)
  const utf8 = forgeLibrary().asn1.Type.UTF8 as unknown as forge.asn1.Class
  const subject = [
    { name: 'organizationName', value: 'proxy-gate', valueTagClass: utf8 },
    { name: 'commonName', value: (options.commonName ?? defaultCommonName(now)).slice(0, 64), valueTagClass: utf8 },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    // pathLen 0: this CA signs leaves only, never another CA
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  signCertificate(cert, privateKey)
  return { certPem: toLf(forgeLibrary().pki.certificateToPem(cert)), cert, key: privateKey }
}

export function caInfo(certPem: string): CaInfo {
  const x509 = new X509Certificate(certPem)
  return {
    subject: x509.subject.split('\n').join(', '),
    fingerprint256: x509.fingerprint256,
    serialNumber: x509.serialNumber,
    notBefore: new Date(x509.validFrom),
    notAfter: new Date(x509.validTo),
  }
}

/** Saves the CA in `dir`; refuses to replace an existing one unless `force`. */
export function writeCa(dir: string, ca: Ca, options: { force?: boolean } = {}): Result<{ cert: string; key: string }> {
  const paths = caPaths(dir)
  const existing = [paths.cert, paths.key].filter((p) => existsSync(p))
  if (existing.length > 0 && !options.force) {
    return { ok: false, error: `${existing.join(' and ')} already exist${existing.length === 1 ? 's' : ''}: pass --force to replace the CA (clients that trust the old one must then trust the new ca.crt)` }
  }
  try {
    mkdirSync(dir, { recursive: true })
    writeFileAtomic(paths.key, ca.key.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600)
    writeFileAtomic(paths.cert, ca.certPem, 0o644)
  } catch (error) {
    return { ok: false, error: `cannot write the CA in ${dir}: ${(error as Error).message}` }
  }
  return { ok: true, value: paths }
}

function readText(path: string): Result<string> {
  try {
    return { ok: true, value: readFileSync(path, 'utf8') }
  } catch (error) {
    return { ok: false, error: `cannot read ${path}: ${(error as Error).message}` }
  }
}

/** ca.crt alone (what /ca.crt serves): undefined when there is none, an error when it is not a CA certificate. */
export function readCaCertificate(dir: string): Result<string | undefined> {
  const path = caPaths(dir).cert
  if (!existsSync(path)) return { ok: true, value: undefined }
  const text = readText(path)
  if (!text.ok) return text
  const checked = checkCaCertificate(path, text.value)
  return checked.ok ? { ok: true, value: text.value } : checked
}

function checkCaCertificate(path: string, pem: string): Result<X509Certificate> {
  let x509
  try {
    x509 = new X509Certificate(pem)
  } catch (error) {
    return { ok: false, error: `${path} is not a PEM certificate (${(error as Error).message})` }
  }
  if (!x509.ca) return { ok: false, error: `${path} is not a CA certificate (basicConstraints cA is not set)` }
  return { ok: true, value: x509 }
}

function checkKey(x509: X509Certificate, keyPath: string, pem: string): Result<KeyObject> {
  let key
  try {
    key = createPrivateKey(pem)
  } catch (error) {
    return { ok: false, error: `${keyPath} is not an unencrypted PEM private key (${(error as Error).message})` }
  }
  if (key.asymmetricKeyType !== 'rsa') return { ok: false, error: `${keyPath} is an ${key.asymmetricKeyType ?? 'unknown'} key; proxy-gate signs with RSA keys only` }
  if (!x509.checkPrivateKey(key)) return { ok: false, error: `${keyPath} does not belong to ca.crt (a different key pair): restore the matching pair, or run "${initCommand(dirname(keyPath), true)}"` }
  return { ok: true, value: key }
}

/** The command that makes a CA in `dir`: with --dir always, since the default folder is not where every command looks from. */
function initCommand(dir: string, force = false): string {
  return `proxy-gate ca init${force ? ' --force' : ''} --dir ${shellWord(dir)}`
}

/** Loads and checks the CA in `dir`: both files present, a CA certificate, the key matching it, in its validity period. */
export function loadCa(dir: string, now = Date.now()): LoadedCa {
  const paths = caPaths(dir)
  const present = { cert: existsSync(paths.cert), key: existsSync(paths.key) }
  if (!present.cert && !present.key) return { ok: false, missing: true, error: `no CA in ${dir}: run "${initCommand(dir)}" to create one` }
  if (!present.cert || !present.key) {
    const [have, lacks] = present.cert ? [paths.cert, paths.key] : [paths.key, paths.cert]
    return { ok: false, missing: false, error: `${lacks} is missing (only ${have} is there): restore it, or run "${initCommand(dir, true)}" for a new CA` }
  }
  const certText = readText(paths.cert)
  const keyText = readText(paths.key)
  if (!certText.ok) return { ...certText, missing: false }
  if (!keyText.ok) return { ...keyText, missing: false }
  const x509 = checkCaCertificate(paths.cert, certText.value)
  if (!x509.ok) return { ...x509, missing: false }
  const key = checkKey(x509.value, paths.key, keyText.value)
  if (!key.ok) return { ...key, missing: false }
  const notAfter = new Date(x509.value.validTo)
  if (notAfter.getTime() <= now) return { ok: false, missing: false, error: `the CA in ${paths.cert} expired on ${notAfter.toISOString()}: run "${initCommand(dir, true)}" and trust the new ca.crt` }
  let cert
  try {
    cert = forgeLibrary().pki.certificateFromPem(certText.value)
  } catch (error) {
    return { ok: false, missing: false, error: `${paths.cert} cannot be used to sign (${(error as Error).message})` }
  }
  return { ok: true, value: { certPem: toLf(certText.value), cert, key: key.value } }
}
