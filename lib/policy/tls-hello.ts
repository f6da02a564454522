// Reads the server name (SNI) out of a TLS ClientHello without decrypting anything, and says what a
// connection's first bytes are to a TLS server. Pure: it looks at bytes the caller has buffered.
//   not-tls:   no TLS server reads a ClientHello from bytes that start so (plain protocols: HTTP, SSH, ...)
//   hello:     a complete ClientHello, read as OpenSSL reads it (records joined, across TCP chunks)
//   malformed: anything else that starts like TLS: a record sequence or ClientHello this parser
//              refuses, or one a TLS server could read differently (empty records, other record types
//              first, an SSLv2-format hello). Refused by the caller, never relayed.
// Any exception while parsing is a malformed hello too: a parser bug means a refusal.

export type HelloResult =
  | { readonly kind: 'need-more' }
  | { readonly kind: 'not-tls' }
  | { readonly kind: 'malformed'; readonly reason: string }
  | { readonly kind: 'hello'; readonly sni: string | undefined }

/** need-more, with how many bytes must be in before the answer can change */
type Step = Exclude<HelloResult, { kind: 'need-more' }> | { readonly kind: 'need-more'; readonly want: number }

const HANDSHAKE = 0x16
const CLIENT_HELLO = 0x01
const SSL2_CLIENT_HELLO = 0x01
const EXT_SERVER_NAME = 0x0000
/** RFC 8446 5.1: a plaintext record carries at most 2^14 bytes (OpenSSL refuses more) */
const MAX_RECORD = 16_384
/** the first byte of a TLS record: change_cipher_spec, alert, handshake, application_data, heartbeat */
const RECORD_TYPES: Readonly<Record<number, string>> = { 0x14: 'change_cipher_spec', 0x15: 'alert', 0x16: 'handshake', 0x17: 'application_data', 0x18: 'heartbeat' }

const NEED_MORE: HelloResult = { kind: 'need-more' }
const NOT_TLS: Step = { kind: 'not-tls' }
const needMore = (want: number): Step => ({ kind: 'need-more', want })
const malformed = (reason: string): Step => ({ kind: 'malformed', reason })

/**
 * What a TLS server makes of a connection's first bytes (OpenSSL's ssl3_get_record): a TLS record
 * (type, then version 3.x), or, for a first byte with the high bit set and 1 as the third, an
 * SSLv2-format ClientHello (which OpenSSL still accepts from TLS 1.0-1.2 clients). Nothing else
 * opens a ClientHello.
 */
function opening(buf: Buffer): Step | 'records' {
  const first = buf[0]
  if (first === undefined) return needMore(1)
  if (RECORD_TYPES[first] !== undefined) {
    if (buf.length < 2) return needMore(2)
    return buf[1] === 0x03 ? 'records' : NOT_TLS
  }
  if (first & 0x80) {
    if (buf.length < 3) return needMore(3)
    return buf[2] === SSL2_CLIENT_HELLO ? malformed('an SSLv2-format ClientHello (it cannot carry a server name)') : NOT_TLS
  }
  return NOT_TLS
}

/**
 * Joins the handshake bytes of consecutive TLS records (a ClientHello may be split across records,
 * and records across TCP segments) into the ClientHello's body. Only handshake records of 1 to 2^14
 * bytes may come before it is complete: TLS servers skip empty records and some skip alerts, and
 * what they skip could hide the hello they read.
 */
function clientHelloBody(buf: Buffer, maxBytes: number): Buffer | Step {
  const parts: Buffer[] = []
  let have = 0
  let size: number | undefined
  for (let offset = 0; ; ) {
    if (buf.length < offset + 5) return needMore(offset + 5)
    const type = buf[offset] ?? 0
    const where = offset === 0 ? 'before' : 'inside'
    if (type !== HANDSHAKE) return malformed(`${RECORD_TYPES[type] ?? `type ${type}`} record ${where} the ClientHello`)
    if (buf[offset + 1] !== 0x03) return malformed(`record version ${buf.readUInt16BE(offset + 1).toString(16).padStart(4, '0')} inside the ClientHello`)
    const length = buf.readUInt16BE(offset + 3)
    if (length === 0) return malformed(`empty record ${where} the ClientHello (TLS servers skip it)`)
    if (length > MAX_RECORD) return malformed(`record of ${length} bytes (at most ${MAX_RECORD})`)
    const end = offset + 5 + length
    if (buf.length < end) return needMore(end)
    parts.push(buf.subarray(offset + 5, end))
    have += length
    offset = end
    if (size === undefined && have >= 4) {
      const header = parts[0] !== undefined && parts[0].length >= 4 ? parts[0] : Buffer.concat(parts, have)
      if (header[0] !== CLIENT_HELLO) return malformed(`first handshake message is type ${header[0] ?? 0}, not a ClientHello`)
      size = header.readUIntBE(1, 3)
      if (9 + size > maxBytes) return malformed(`ClientHello of ${size} bytes, over the ${maxBytes}-byte limit`)
    }
    if (size !== undefined && have >= 4 + size) return Buffer.concat(parts, have).subarray(4, 4 + size)
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

/**
 * The server_name extension as RFC 6066 and OpenSSL have it: exactly one host_name of 1 to 255
 * bytes. Anything else (more names, other types, which servers pick among differently) is refused,
 * and so is a name that is not printable ASCII.
 */
function serverName(data: Buffer): string | Step {
  const extension = new Reader(data)
  const list = new Reader(extension.vector(2))
  if (!extension.done()) return malformed('bytes after the server name list')
  if (list.u8() !== 0) return malformed('a server name that is not a host_name')
  const name = list.vector(2)
  if (!list.done()) return malformed('more than one server name')
  const text = name.toString('latin1')
  if (!/^[\x21-\x7e]{1,255}$/.test(text)) return malformed('a server name that is empty, longer than 255 bytes or not printable ASCII')
  return text
}

function parseBody(body: Buffer): Step {
  const r = new Reader(body)
  r.skip(2 + 32) // legacy_version, random
  if (r.vector(1).length > 32) return malformed('session id longer than 32 bytes')
  r.vector(2) // cipher suites
  r.vector(1) // compression methods
  if (r.done()) return { kind: 'hello', sni: undefined }
  const extensions = new Reader(r.vector(2))
  if (!r.done()) return malformed('bytes after the extensions')
  const seen = new Set<number>()
  let sni: string | undefined
  while (!extensions.done()) {
    const type = extensions.u16()
    const data = extensions.vector(2)
    // RFC 8446 4.2: one of each; servers differ in which of two they would read
    if (seen.has(type)) return malformed(`extension ${type} twice`)
    seen.add(type)
    if (type !== EXT_SERVER_NAME) continue
    const name = serverName(data)
    if (typeof name !== 'string') return name
    sni = name
  }
  return { kind: 'hello', sni }
}

function inspect(buf: Buffer, maxBytes: number): Step {
  try {
    const start = opening(buf)
    if (start !== 'records') return start
    const body = clientHelloBody(buf, maxBytes)
    if (!Buffer.isBuffer(body)) return body
    return parseBody(body)
  } catch (error) {
    return malformed(`unreadable ClientHello (${error instanceof Error ? error.message : 'error'})`)
  }
}

/** A ClientHello's body (after its 4-byte handshake header) read as the first one is: a later one is held to the same rules. */
export function parseHelloBody(body: Buffer): HelloResult {
  try {
    return parseBody(body)
  } catch (error) {
    return malformed(`unreadable ClientHello (${error instanceof Error ? error.message : 'error'})`)
  }
}

/** Only the first `maxBytes` count: a ClientHello not complete within them is malformed. */
function judge(buf: Buffer, maxBytes: number): Step {
  const step = inspect(buf.length > maxBytes ? buf.subarray(0, maxBytes) : buf, maxBytes)
  return step.kind === 'need-more' && step.want > maxBytes ? malformed(`no complete ClientHello in ${maxBytes} bytes`) : step
}

/**
 * Whether a client's first bytes may open a ClientHello: false only when no TLS server would read
 * one from a connection that starts with them (they are plain bytes then, whatever follows).
 */
export function startsLikeTls(first: Buffer): boolean {
  const start = opening(first)
  return start === 'records' || start.kind !== 'not-tls'
}

/** Looks at the first bytes a client sent, all at once (HelloReader: as they come). */
export function parseClientHello(buf: Buffer, maxBytes: number): HelloResult {
  const step = judge(buf, maxBytes)
  return step.kind === 'need-more' ? NEED_MORE : step
}

/**
 * A connection's first bytes, collected chunk by chunk until what they are is known: each chunk is
 * copied once (into a buffer that doubles), and they are parsed again only once there are as many
 * bytes as the last parse wanted, so a hello sent a byte at a time costs no more than one in a piece.
 */
export class HelloReader {
  private buf: Buffer = Buffer.alloc(0)
  private length = 0
  private want = 1

  constructor(private readonly maxBytes: number) {}

  /** every byte pushed so far */
  get bytes(): Buffer {
    return this.buf.subarray(0, this.length)
  }

  push(chunk: Buffer): HelloResult {
    this.append(chunk)
    if (this.length < this.want) return NEED_MORE
    const step = judge(this.bytes, this.maxBytes)
    if (step.kind !== 'need-more') return step
    this.want = step.want
    return NEED_MORE
  }

  private append(chunk: Buffer): void {
    if (this.length === 0) {
      this.buf = chunk // a ClientHello mostly comes in one piece: no copy
      this.length = chunk.length
      return
    }
    const needed = this.length + chunk.length
    // a chunk kept as is fills its buffer exactly, so it is never written into
    if (needed > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, 2 * this.length, 1024))
      this.buf.copy(grown, 0, 0, this.length)
      this.buf = grown
    }
    chunk.copy(this.buf, this.length)
    this.length = needed
  }
}
