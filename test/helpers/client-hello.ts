// TLS ClientHellos built by hand for tests: a real client's hello (Node's, captured off the wire) taken
// apart into its fields and extensions, changed, and put back together in any record framing; SSLv2-
// format hellos; and a seeded random source so that generated cases can be repeated.
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'

export interface Extension {
  readonly type: number
  readonly data: Buffer
}

/** A ClientHello's body, field by field; `extensions` undefined: no extensions block at all. */
export interface HelloParts {
  readonly version: number
  readonly random: Buffer
  readonly sessionId: Buffer
  /** the cipher suite list's bytes, without its length */
  readonly cipherSuites: Buffer
  readonly compression: Buffer
  readonly extensions: readonly Extension[] | undefined
}

export const EXT = { serverName: 0, supportedGroups: 10, padding: 21, keyShare: 51 } as const

const u8 = (n: number): Buffer => Buffer.from([n & 0xff])
export const u16 = (n: number): Buffer => Buffer.from([(n >> 8) & 0xff, n & 0xff])
const u24 = (n: number): Buffer => Buffer.from([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff])
/** `bytes` behind a length of 1 or 2 bytes */
export const vector = (lengthBytes: 1 | 2, bytes: Buffer): Buffer => Buffer.concat([lengthBytes === 1 ? u8(bytes.length) : u16(bytes.length), bytes])

/** The first flight of Node's TLS client (one record holding one ClientHello), caught by a plain TCP listener. */
export async function captureHello(options: ConnectionOptions): Promise<Buffer> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const caught = new Promise<Buffer>((resolve) => {
    server.once('connection', (socket: Socket) => {
      let bytes = Buffer.alloc(0)
      socket.on('data', (d: Buffer) => {
        bytes = Buffer.concat([bytes, d])
        if (bytes.length >= 5 && bytes.length >= 5 + bytes.readUInt16BE(3)) resolve(bytes.subarray(0, 5 + bytes.readUInt16BE(3)))
      })
    })
  })
  const client = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, rejectUnauthorized: false, ...options })
  client.on('error', () => client.destroy())
  const hello = await caught
  client.destroy()
  server.close()
  return hello
}

/** Takes a one-record ClientHello (what captureHello returns) apart. */
export function helloParts(record: Buffer): HelloParts {
  const body = record.subarray(9, 9 + record.readUIntBE(6, 3))
  let at = 0
  const take = (n: number): Buffer => body.subarray(at, (at += n))
  const version = take(2).readUInt16BE(0)
  const random = take(32)
  const sessionId = take(take(1).readUInt8(0))
  const cipherSuites = take(take(2).readUInt16BE(0))
  const compression = take(take(1).readUInt8(0))
  const block = take(take(2).readUInt16BE(0))
  const extensions: Extension[] = []
  for (let p = 0; p < block.length; p += 4 + block.readUInt16BE(p + 2)) {
    extensions.push({ type: block.readUInt16BE(p), data: block.subarray(p + 4, p + 4 + block.readUInt16BE(p + 2)) })
  }
  return { version, random, sessionId, cipherSuites, compression, extensions }
}

/** The extensions block's bytes (without its length). */
function extensionBytes(extensions: readonly Extension[]): Buffer {
  return Buffer.concat(extensions.map((e) => Buffer.concat([u16(e.type), vector(2, e.data)])))
}

/** The ClientHello handshake message (type, 3-byte length, body); `trailing` goes after the extensions. */
export function helloMessage(parts: HelloParts, trailing: Buffer = Buffer.alloc(0)): Buffer {
  const fields = [u16(parts.version), parts.random, vector(1, parts.sessionId), vector(2, parts.cipherSuites), vector(1, parts.compression)]
  if (parts.extensions) fields.push(vector(2, extensionBytes(parts.extensions)))
  const body = Buffer.concat([...fields, trailing])
  return Buffer.concat([u8(1), u24(body.length), body])
}

/** One TLS record. */
export function record(type: number, version: number, fragment: Buffer): Buffer {
  return Buffer.concat([u8(type), u16(version), vector(2, fragment)])
}

/** server_name extension data: a list of (type, name) entries. */
export function serverNameData(entries: ReadonlyArray<readonly [number, Buffer | string]>): Buffer {
  const list = entries.map(([type, name]) => Buffer.concat([u8(type), vector(2, typeof name === 'string' ? Buffer.from(name, 'latin1') : name)]))
  return vector(2, Buffer.concat(list))
}

/**
 * An SSLv2-format ClientHello (the 2-byte header form OpenSSL still reads from TLS 1.0-1.2
 * clients): version, 3-byte cipher specs, no session id, a challenge.
 */
export function sslv2Hello(version: number, cipherSpecs: Buffer, challenge: Buffer): Buffer {
  const body = Buffer.concat([u8(1), u16(version), u16(cipherSpecs.length), u16(0), u16(challenge.length), cipherSpecs, challenge])
  return Buffer.concat([u16(0x8000 | body.length), body])
}

/** A seeded random source (sfc32): the same seed, the same cases. */
export class Random {
  private s: [number, number, number, number]
  constructor(seed: number) {
    this.s = [0x9e3779b9, 0x243f6a88, 0xb7e15162, seed >>> 0]
    for (let i = 0; i < 16; i++) this.next()
  }
  /** a uniform 32-bit unsigned integer */
  next(): number {
    let [a, b, c, d] = this.s
    const t = (((a + b) | 0) + d) | 0
    d = (d + 1) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    c = (c + t) | 0
    this.s = [a, b, c, d]
    return t >>> 0
  }
  /** an integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + (this.next() % (hi - lo + 1))
  }
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p
  }
  pick<T>(items: readonly T[]): T {
    const item = items[this.int(0, items.length - 1)]
    if (item === undefined) throw new Error('pick from an empty list')
    return item
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n)
    for (let i = 0; i < n; i++) out[i] = this.next() & 0xff
    return out
  }
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items]
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(0, i)
      ;[out[i], out[j]] = [out[j] as T, out[i] as T]
    }
    return out
  }
  /** `total` cut into `count` sizes of at least 1 (count at most total) */
  cuts(total: number, count: number): number[] {
    const marks = new Set<number>()
    while (marks.size < Math.min(count, total) - 1) marks.add(this.int(1, total - 1))
    const sorted = [0, ...[...marks].sort((a, b) => a - b), total]
    return sorted.slice(1).map((m, i) => m - (sorted[i] ?? 0))
  }
}
