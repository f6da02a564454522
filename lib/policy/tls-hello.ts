// Reads the server name (SNI) out of a TLS ClientHello without decrypting anything. Pure:
// it looks at bytes the caller has buffered and says whether it needs more.

export type HelloResult =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'not-tls' }
  | { readonly kind: 'malformed'; readonly reason: string }
  | { readonly kind: 'hello'; readonly sni: string | undefined }

const HANDSHAKE = 0x16
const CLIENT_HELLO = 0x01
const EXT_SERVER_NAME = 0x0000
const MAX_RECORD = 16_384 + 2_048

const malformed = (reason: string): HelloResult => ({ kind: 'malformed', reason })

/**
 * Joins the handshake bytes of consecutive TLS records (a ClientHello may be split across
 * records, and records across TCP segments). Returns undefined until one whole message is in.
 */
function handshakeMessage(buf: Buffer): Buffer | HelloResult | undefined {
  const parts: Buffer[] = []
  let have = 0
  if (buf.length >= 1 && buf[0] !== HANDSHAKE) return { kind: 'not-tls' }
  if (buf.length >= 2 && buf[1] !== 0x03) return { kind: 'not-tls' }
  for (let offset = 0; ; ) {
    if (buf.length < offset + 5) return undefined
    // the first record's type and version were checked above, so a bad one here is a later record
    if (buf[offset] !== HANDSHAKE) return malformed('non-handshake record inside the ClientHello')
    if (buf[offset + 1] !== 0x03) return malformed('bad record version')
    const length = buf.readUInt16BE(offset + 3)
    if (length === 0 || length > MAX_RECORD) return malformed(`record length ${length}`)
    if (buf.length < offset + 5 + length) return undefined
    parts.push(buf.subarray(offset + 5, offset + 5 + length))
    have += length
    offset += 5 + length
    const joined = Buffer.concat(parts, have)
    if (joined.length >= 4) {
      if (joined[0] !== CLIENT_HELLO) return malformed('first handshake message is not a ClientHello')
      const size = joined.readUIntBE(1, 3)
      if (joined.length >= 4 + size) return joined.subarray(4, 4 + size)
    }
  }
}

/** A cursor over the ClientHello body that throws on reading past the end. */
class Reader {
  private at = 0
  constructor(private readonly buf: Buffer) {}
  skip(n: number): void {
    this.take(n)
  }
  take(n: number): Buffer {
    if (this.at + n > this.buf.length) throw new RangeError('truncated')
    const out = this.buf.subarray(this.at, this.at + n)
    this.at += n
    return out
  }
  u8(): number {
    return this.take(1).readUInt8(0)
  }
  u16(): number {
    return this.take(2).readUInt16BE(0)
  }
  vector(lengthBytes: 1 | 2): Buffer {
    return this.take(lengthBytes === 1 ? this.u8() : this.u16())
  }
  done(): boolean {
    return this.at === this.buf.length
  }
}

function serverName(data: Buffer): string | undefined {
  const list = new Reader(new Reader(data).vector(2))
  while (!list.done()) {
    const type = list.u8()
    const name = list.vector(2)
    if (type === 0) return /^[\x21-\x7e]+$/.test(name.toString('latin1')) ? name.toString('latin1') : ''
  }
  return undefined
}

function parseBody(body: Buffer): HelloResult {
  const r = new Reader(body)
  r.skip(2 + 32) // legacy_version, random
  r.vector(1) // session id
  r.vector(2) // cipher suites
  r.vector(1) // compression methods
  if (r.done()) return { kind: 'hello', sni: undefined }
  const extensions = new Reader(r.vector(2))
  let sni: string | undefined
  while (!extensions.done()) {
    const type = extensions.u16()
    const data = extensions.vector(2)
    if (type === EXT_SERVER_NAME) sni = serverName(data)
  }
  if (sni === '') return malformed('server name is not printable ASCII')
  return { kind: 'hello', sni }
}

/**
 * Whether a client's first bytes may open a TLS ClientHello (a handshake record, version 3.x): the
 * cheap test for tunnels on ports not listed as TLS, which look at their first chunk only.
 */
export function startsLikeTls(first: Buffer): boolean {
  return first.length > 0 && first[0] === HANDSHAKE && (first.length === 1 || first[1] === 0x03)
}

/**
 * Looks at the first bytes a client sent into a tunnel. `maxBytes` bounds how much the caller
 * will buffer: a ClientHello that is not complete within it is malformed.
 */
export function parseClientHello(buf: Buffer, maxBytes: number): HelloResult {
  const message = handshakeMessage(buf)
  if (message === undefined) return buf.length >= maxBytes ? malformed(`no complete ClientHello in ${maxBytes} bytes`) : { kind: 'need-more' }
  if (!Buffer.isBuffer(message)) return message
  try {
    return parseBody(message)
  } catch {
    return malformed('truncated ClientHello')
  }
}
