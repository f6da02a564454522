// Certificates the fast way: node-forge builds the X.509 structure, Node's crypto signs it.
// forge's own RSA signing is pure JavaScript (~30 ms, blocking); OpenSSL's takes ~0.4 ms.
import { constants, privateEncrypt, randomBytes, type KeyObject } from 'node:crypto'
import type forge from 'node-forge'
import { createRequire } from 'node:module'

// loaded by the first certificate built or parsed, not at start (~5 MB of RSS a proxy without a CA never needs)
const load = createRequire(import.meta.url)
let forgeModule: typeof forge | undefined
export const forgeLibrary = (): typeof forge => (forgeModule ??= load('node-forge') as typeof forge)

const HOUR_MS = 3_600_000
export const DAY_MS = 24 * HOUR_MS

// DER prefix of a DigestInfo for SHA-256: PKCS#1 v1.5 signs DigestInfo(sha256, digest)
const SHA256_DIGESTINFO = Buffer.from('3031300d060960864801650304020105000420', 'hex')

/**
 * A positive serial of 16 random bytes. The first byte is 0x01-0x7f: a leading zero byte would be
 * non-minimal DER, which OpenSSL 3 rejects, and a high bit would make the number negative.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0] ?? 0) & 0x7f || 1
  return bytes.toString('hex')
}

/** notBefore an hour back (clocks drift), notAfter `days` from now. */
export function setValidity(cert: forge.pki.Certificate, days: number, now = Date.now()): void {
  cert.validity.notBefore = new Date(now - HOUR_MS)
  cert.validity.notAfter = new Date(now + days * DAY_MS)
}

export function forgePublicKey(key: KeyObject): forge.pki.PublicKey {
  return forgeLibrary().pki.publicKeyFromPem(key.export({ type: 'spki', format: 'pem' }).toString())
}

/** Signs `cert` (sha256WithRSAEncryption) with an RSA key held by Node's crypto. */
export function signCertificate(cert: forge.pki.Certificate, key: KeyObject): void {
  const signer = {
    sign: (md: forge.md.MessageDigest): string => {
      const digest = Buffer.from(md.digest().getBytes(), 'binary')
      const padded = { key, padding: constants.RSA_PKCS1_PADDING }
      return privateEncrypt(padded, Buffer.concat([SHA256_DIGESTINFO, digest])).toString('binary')
    },
  }
  cert.sign(signer as unknown as forge.pki.rsa.PrivateKey, forgeLibrary().md.sha256.create())
}
