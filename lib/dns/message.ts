// DNS messages for the sandbox's DNS server, by hand and strict: one standard query (QR=0,
// opcode QUERY, one question, no answer or authority records, at most one OPT record, nothing
// after it) is parsed, and the response to it built. A response is at most the question plus
// one address record, so it always fits in 512 bytes: no EDNS, no truncation. Pure: no sockets.
import type { Ip } from '../policy/ip.js'
import { normaliseName, type Result } from '../policy/target.js'

const HEADER_BYTES = 12
/** The largest query accepted over UDP: queries are small, and RFC 1035's limit is plenty. */
export const MAX_UDP_QUERY = 512
/** The largest message accepted over TCP (its 2-byte length prefix says more: the connection is closed). */
export const MAX_TCP_MESSAGE = 4096
/** Seconds a client may keep an answer: short, since a reload can change it. */
const ANSWER_TTL = 5

const QR = 0x8000
const AA = 0x0400
const RD = 0x0100
const OPCODE_MASK = 0x7800
const CLASS_IN = 1
const TYPE_OPT = 41
export const TYPE_A = 1
export const TYPE_AAAA = 28
export const TYPE_ANY = 255

const RCODES = { noerror: 0, formerr: 1, nxdomain: 3, notimp: 4, refused: 5 } as const
export type Rcode = keyof typeof RCODES

const TYPE_NAMES: Record<number, string> = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 35: 'NAPTR',
  41: 'OPT', 43: 'DS', 46: 'RRSIG', 48: 'DNSKEY', 64: 'SVCB', 65: 'HTTPS', 251: 'IXFR', 252: 'AXFR', 255: 'ANY', 257: 'CAA',
}

/** `A`, `MX`, ... or RFC 3597's `TYPE1234` for the rest. */
export function typeName(type: number): string {
  return TYPE_NAMES[type] ?? `TYPE${type}`
}

export interface Question {
  /** the name normalised as host names are for rules, or why it is not a host name */
  readonly name: Result<string>
  /** the name in presentation form (`\DDD` escapes), for logs: also when it is not a host name */
  readonly display: string
  readonly type: number
  readonly inClass: boolean
  /** the question's bytes as sent: echoed, case and all (resolvers check it, some randomise case) */
  readonly raw: Buffer
}

export interface QueryHeader {
  readonly id: number
  readonly flags: number
}

export type Parsed =
  | { readonly kind: 'query'; readonly header: QueryHeader; readonly question: Question }
  /** the header could be read, the rest not: answered with `rcode` and no question */
  | { readonly kind: 'bad'; readonly header: QueryHeader; readonly rcode: 'formerr' | 'notimp'; readonly why: string }
  /** too short for a header, or a response: never answered */
  | { readonly kind: 'drop' }

// host-name characters; anything else (a dot inside a label, spaces, bytes past ASCII) is not a host name
const HOST_LABEL = /^[A-Za-z0-9_-]+$/

/** One label (as latin1: a character per byte) in presentation form. */
function escapeLabel(label: string): string {
  return label.replace(/[^\x21-\x7e]|[.\\]/g, (c) => `\\${c.charCodeAt(0).toString().padStart(3, '0')}`)
}

type NameRead = { readonly end: number; readonly labels: readonly Buffer[] } | string

/** Reads an uncompressed name: a query's question is the first name in it, so nothing could be pointed to. */
function readName(msg: Buffer, start: number): NameRead {
  const labels: Buffer[] = []
  let at = start
  for (;;) {
    const length = msg[at]
    if (length === undefined) return 'the question name runs past the end'
    if (length === 0) break
    if (length > 63) return 'a compressed or extended label in the question'
    if (at + 1 + length > msg.length) return 'the question name runs past the end'
    labels.push(msg.subarray(at + 1, at + 1 + length))
    at += 1 + length
    if (at + 1 - start > 255) return 'the question name is longer than 255 bytes'
  }
  return { end: at + 1, labels }
}

function question(msg: Buffer, labels: readonly Buffer[], start: number, end: number): Question {
  const texts = labels.map((l) => l.toString('latin1'))
  const display = `${texts.map(escapeLabel).join('.')}.`
  const name: Result<string> = texts.every((l) => HOST_LABEL.test(l)) ? normaliseName(texts.join('.')) : { ok: false, error: `${display} is not a host name` }
  return { name, display, type: msg.readUInt16BE(end), inClass: msg.readUInt16BE(end + 2) === CLASS_IN, raw: msg.subarray(start, end + 4) }
}

/** Checks the one record a query may carry after its question: EDNS's OPT, whose options are ignored. */
function readOpt(msg: Buffer, at: number): number | string {
  if (msg[at] !== 0 || at + 11 > msg.length || msg.readUInt16BE(at + 1) !== TYPE_OPT) return 'an additional record that is not OPT'
  const end = at + 11 + msg.readUInt16BE(at + 9)
  return end > msg.length ? 'the OPT record runs past the end' : end
}

/** Parses one query of at most `limit` bytes (MAX_UDP_QUERY or MAX_TCP_MESSAGE). */
export function parseQuery(msg: Buffer, limit: number): Parsed {
  if (msg.length < HEADER_BYTES || (msg.readUInt16BE(2) & QR) !== 0) return { kind: 'drop' }
  const header = { id: msg.readUInt16BE(0), flags: msg.readUInt16BE(2) }
  const bad = (why: string, rcode: 'formerr' | 'notimp' = 'formerr'): Parsed => ({ kind: 'bad', header, rcode, why })
  if ((header.flags & OPCODE_MASK) !== 0) return bad(`opcode ${(header.flags & OPCODE_MASK) >> 11} is not QUERY`, 'notimp')
  if (msg.length > limit) return bad(`${msg.length} bytes: a query is at most ${limit}`)
  const [qd, an, ns, ar] = [4, 6, 8, 10].map((at) => msg.readUInt16BE(at))
  if (qd !== 1) return bad(`${qd} questions: exactly one is answered`)
  if (an !== 0 || ns !== 0 || (ar ?? 0) > 1) return bad('a query carries no records but one OPT')
  const read = readName(msg, HEADER_BYTES)
  if (typeof read === 'string') return bad(read)
  if (read.end + 4 > msg.length) return bad('the question has no type and class')
  const end = ar === 1 ? readOpt(msg, read.end + 4) : read.end + 4
  if (typeof end === 'string') return bad(end)
  if (end !== msg.length) return bad(`${msg.length - end} bytes after the query`)
  return { kind: 'query', header, question: question(msg, read.labels, HEADER_BYTES, read.end) }
}

function addressBytes(ip: Ip): Buffer {
  const bytes = Buffer.alloc(ip.family === 4 ? 4 : 16)
  for (let i = bytes.length - 1, v = ip.value; i >= 0; i--, v >>= 8n) bytes[i] = Number(v & 0xffn)
  return bytes
}

/** The answer record for the question: the address, with a pointer to the question's name. */
function addressRecord(ip: Ip): Buffer {
  const data = addressBytes(ip)
  const head = Buffer.alloc(12)
  head.writeUInt16BE(0xc000 | HEADER_BYTES, 0)
  head.writeUInt16BE(ip.family === 4 ? TYPE_A : TYPE_AAAA, 2)
  head.writeUInt16BE(CLASS_IN, 4)
  head.writeUInt32BE(ANSWER_TTL, 6)
  head.writeUInt16BE(data.length, 10)
  return Buffer.concat([head, data])
}

/**
 * A response: authoritative (AA), no recursion offered (RA clear), RD echoed. `question` is
 * echoed when the query had a readable one; `address` becomes the one answer record.
 */
export function buildResponse(header: QueryHeader, rcode: Rcode, question?: Question, address?: Ip): Buffer {
  const head = Buffer.alloc(HEADER_BYTES)
  head.writeUInt16BE(header.id, 0)
  head.writeUInt16BE(QR | AA | (header.flags & (OPCODE_MASK | RD)) | RCODES[rcode], 2)
  head.writeUInt16BE(question ? 1 : 0, 4)
  head.writeUInt16BE(address ? 1 : 0, 6)
  return Buffer.concat([head, question?.raw ?? Buffer.alloc(0), address ? addressRecord(address) : Buffer.alloc(0)])
}
