// Leaf certificates for intercepted TLS: one per host name or IP address, signed by the local CA,
// minted on first use and cached as a ready tls.SecureContext (about 1.5 ms uncached).
import { generateKeyPair, type KeyObject } from 'node:crypto'
import type { SecureContext } from 'node:tls'
import { tls } from '../core/builtins.js'
import { promisify } from 'node:util'
import { LRUCache } from 'lru-cache'
import type forge from 'node-forge'
import type { Ca } from './ca.js'
import { formatIp, parseIp } from '../policy/ip.js'
import { normaliseName, type Result } from '../policy/target.js'
import { DAY_MS, forgeLibrary, forgePublicKey, randomSerial, setValidity, signCertificate } from './x509.js'

export interface LeafKey {
  readonly privateKey: KeyObject
  readonly pem: string
  readonly publicKey: forge.pki.PublicKey
}

export type LeafHost = { readonly kind: 'dns'; readonly name: string } | { readonly kind: 'ip'; readonly ip: string }

export interface LeafOptions {
  /** how many hosts' contexts to keep (default 1000) */
  readonly max?: number
  /** validity of each leaf (default 30 days) */
  readonly days?: number
  /** how long a context stays cached; shorter than the validity (default 24 h) */
  readonly ttlMs?: number
}

export interface LeafMinter {
  /** the TLS context for `host` (a name, or an IP with or without brackets); concurrent calls for one host mint once */
  contextFor(host: string): Promise<SecureContext>
  /** how many leaves this minter has signed */
  mintCount(): number
  /** how many contexts are cached now */
  size(): number
}

let sharedKey: Promise<LeafKey> | undefined

/** The key pair all leaves share, generated once per process: RSA keygen takes 0.1-3 s, a leaf well under 1 ms. */
export function leafKey(): Promise<LeafKey> {
  sharedKey ??= promisify(generateKeyPair)('rsa', { modulusLength: 2048 }).then(({ privateKey, publicKey }) => ({
    privateKey,
    pem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: forgePublicKey(publicKey),
  }))
  return sharedKey
}

/** What a leaf is for: a host name (lower case, no trailing dot) or an IP literal (canonical form). */
export function parseLeafHost(text: string): Result<LeafHost> {
  const ip = parseIp(text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text)
  if (ip) return { ok: true, value: { kind: 'ip', ip: formatIp(ip) } }
  const name = normaliseName(text)
  return name.ok ? { ok: true, value: { kind: 'dns', name: name.value } } : name
}

function hostText(host: LeafHost): string {
  return host.kind === 'dns' ? host.name : host.ip
}

/** The CA's subject as attributes forge can encode again (it would re-encode parsed UTF-8 bytes). */
function issuerAttributes(ca: Ca): forge.pki.CertificateField[] {
  const { asn1, util } = forgeLibrary()
  return ca.cert.subject.attributes.map((a: forge.pki.CertificateField) =>
    a.valueTagClass === (asn1.Type.UTF8 as unknown as forge.asn1.Class) && typeof a.value === 'string' ? { ...a, value: util.decodeUtf8(a.value) } : a,
  )
}

function authorityKeyId(ca: Ca): string {
  const ski: { subjectKeyIdentifier?: string } | undefined = ca.cert.getExtension('subjectKeyIdentifier')
  return ski?.subjectKeyIdentifier ? forgeLibrary().util.hexToBytes(ski.subjectKeyIdentifier) : ca.cert.generateSubjectKeyIdentifier().getBytes()
}

interface Issuer {
  readonly ca: Ca
  readonly attributes: forge.pki.CertificateField[]
  readonly keyId: string
}

function issuerOf(ca: Ca): Issuer {
  return { ca, attributes: issuerAttributes(ca), keyId: authorityKeyId(ca) }
}

function buildLeaf(issuer: Issuer, key: LeafKey, host: LeafHost, days: number): string {
  const cert = forgeLibrary().pki.createCertificate()
  cert.publicKey = key.publicKey
  cert.serialNumber = randomSerial()
  setValidity(cert, days)
  const text = hostText(host)
  cert.setSubject(text.length <= 64 ? [{ name: 'commonName', value: text }] : [])
  cert.setIssuer(issuer.attributes)
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    // an empty subject makes the SAN the only name, and then it must be critical (RFC 5280 4.2.1.6)
    { name: 'subjectAltName', altNames: [host.kind === 'dns' ? { type: 2, value: host.name } : { type: 7, ip: host.ip }], critical: text.length > 64 },
    { name: 'authorityKeyIdentifier', keyIdentifier: issuer.keyId },
  ])
  signCertificate(cert, issuer.ca.key)
  return forgeLibrary().pki.certificateToPem(cert)
}

/** One leaf certificate (PEM) for `host`, signed by `ca`, for `key`. */
export function mintLeaf(ca: Ca, key: LeafKey, host: LeafHost, days = 30): string {
  return buildLeaf(issuerOf(ca), key, host, days)
}

export function createLeafMinter(ca: Ca, options: LeafOptions = {}): LeafMinter {
  const days = options.days ?? 30
  const ttl = options.ttlMs ?? DAY_MS
  const max = options.max ?? 1000
  if (!Number.isInteger(max) || max < 1) throw new RangeError(`leaf cache max must be a positive integer (got ${max})`)
  if (!(ttl > 0 && ttl < days * DAY_MS)) throw new RangeError(`leaf cache ttl (${ttl} ms) must be positive and shorter than the leaf validity (${days} days)`)
  const issuer = issuerOf(ca)
  const key = leafKey()
  key.catch(() => undefined) // a keygen failure surfaces on the first contextFor, not as an unhandled rejection
  let minted = 0
  const cache = new LRUCache<string, SecureContext>({
    max,
    ttl,
    fetchMethod: async (text) => {
      const host = parseLeafHost(text)
      if (!host.ok) throw new Error(host.error)
      const k = await key
      const certPem = buildLeaf(issuer, k, host.value, days)
      minted++
      // the CA rides along as the chain: harmless for clients that trust it, and openssl s_client -showcerts shows who signed
      return tls.createSecureContext({ key: k.pem, cert: certPem + ca.certPem })
    },
  })
  return {
    async contextFor(text) {
      const host = parseLeafHost(text)
      if (!host.ok) throw new Error(`cannot mint a certificate for "${text}": ${host.error}`)
      const context = await cache.fetch(hostText(host.value))
      if (!context) throw new Error(`no certificate for ${hostText(host.value)}`)
      return context
    },
    mintCount: () => minted,
    size: () => cache.size,
  }
}
