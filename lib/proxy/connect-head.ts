// The CONNECT fast path's head reader: a CONNECT head that arrives whole in a connection's first
// chunk, in a plain form node:http reads the same way, is read here instead of by node:http.
// Anything else (another method, a split head, a byte outside the plain form, Content-Length or
// Transfer-Encoding, a head near the size limit) returns undefined and goes to node:http, whose
// parser and today's checks then answer it as before. So this reader never has to refuse: it only
// has to never accept what node:http would read differently (test/connect-head-differential.test.ts).
import type { Socket } from 'node:net'

/** The request fields the routes, checks, log and proxy authentication read: an IncomingMessage has them, and so does a fast-path head. */
export interface RequestHead {
  readonly method?: string | undefined
  readonly url?: string | undefined
  readonly httpVersion: string
  readonly httpVersionMajor: number
  readonly rawHeaders: string[]
  readonly headers: { readonly host?: string | undefined; readonly 'proxy-authorization'?: string | undefined }
  readonly socket: Socket
}

/** A CONNECT head read from a chunk; `end` is where the bytes after it (the tunnel's first bytes) start. */
export interface ConnectHead extends RequestHead {
  readonly end: number
}

const SP = 0x20
const HTAB = 0x09
const CR = 0x0d
const LF = 0x0a
const COLON = 0x3a
const PREFIX = Buffer.from('CONNECT ', 'latin1')
const VERSION = Buffer.from(' HTTP/1.', 'latin1')

/** Bytes of an authority-form target taken here: letters, digits, `.-_~:[]` (no userinfo, no percent-encoding, no path). */
const TARGET = byteTable('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_~:[]')
/** RFC 9110 tchar: a header name. */
const TCHAR = byteTable("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")

function byteTable(chars: string): Uint8Array {
  const table = new Uint8Array(256)
  for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = 1
  return table
}

function startsWith(chunk: Buffer, at: number, bytes: Buffer): boolean {
  if (chunk.length < at + bytes.length) return false
  for (let i = 0; i < bytes.length; i++) if (chunk[at + i] !== bytes[i]) return false
  return true
}

/** A header value's bytes: visible ASCII, with spaces and tabs only inside (node:http trims them at the ends; plain heads have none there). */
function valueEnd(chunk: Buffer, from: number, limit: number): number {
  let i = from
  while (i < limit) {
    const c = chunk[i] as number
    if (c === CR) break
    if ((c < 0x21 || c > 0x7e) && c !== SP && c !== HTAB) return -1
    i++
  }
  if (i + 1 >= limit || chunk[i + 1] !== LF) return -1
  const last = chunk[i - 1] as number
  return i > from && (last === SP || last === HTAB) ? -1 : i
}

interface Fields {
  rawHeaders: string[]
  host: string | undefined
  auth: string | undefined
}

/** Reads the header lines from `at` to the blank line; the index after it, or -1 when a line is not in the plain form. */
function readHeaders(chunk: Buffer, at: number, limit: number, fields: Fields): number {
  let i = at
  for (;;) {
    if (i + 1 >= limit) return -1
    if (chunk[i] === CR) return chunk[i + 1] === LF ? i + 2 : -1
    const nameStart = i
    while (i < limit && TCHAR[chunk[i] as number] === 1) i++
    if (i === nameStart || i >= limit || chunk[i] !== COLON) return -1
    const name = chunk.toString('latin1', nameStart, i)
    i++
    while (i < limit && (chunk[i] === SP || chunk[i] === HTAB)) i++
    const end = valueEnd(chunk, i, limit)
    if (end < 0) return -1
    const value = chunk.toString('latin1', i, end)
    i = end + 2
    if (!noted(name, value, fields)) return -1
  }
}

/** Keeps what the checks and proxy authentication read (first value wins, as in req.headers); false for framing headers, left to node:http. */
function noted(name: string, value: string, fields: Fields): boolean {
  fields.rawHeaders.push(name, value)
  if (name.length === 4 && fields.host === undefined && name.toLowerCase() === 'host') fields.host = value
  else if (name.length === 19 && fields.auth === undefined && name.toLowerCase() === 'proxy-authorization') fields.auth = value
  else if ((name.length === 14 || name.length === 17) && /^(?:content-length|transfer-encoding)$/i.test(name)) return false
  return true
}

/**
 * The CONNECT head at the start of `chunk`, if it is all there, in the plain form, and shorter than
 * `maxBytes` (node:http counts part of the same bytes against the same limit); otherwise undefined.
 */
export function readConnectHead(chunk: Buffer, maxBytes: number, socket: Socket): ConnectHead | undefined {
  if (!startsWith(chunk, 0, PREFIX)) return undefined
  const limit = Math.min(chunk.length, maxBytes - 1)
  let i = PREFIX.length
  while (i < limit && TARGET[chunk[i] as number] === 1) i++
  if (i === PREFIX.length || !startsWith(chunk, i, VERSION)) return undefined
  const url = chunk.toString('latin1', PREFIX.length, i)
  i += VERSION.length
  const minor = chunk[i]
  if ((minor !== 0x31 && minor !== 0x30) || chunk[i + 1] !== CR || chunk[i + 2] !== LF) return undefined
  const fields: Fields = { rawHeaders: [], host: undefined, auth: undefined }
  const end = readHeaders(chunk, i + 3, limit, fields)
  if (end < 0) return undefined
  return {
    method: 'CONNECT',
    url,
    httpVersion: minor === 0x31 ? '1.1' : '1.0',
    httpVersionMajor: 1,
    rawHeaders: fields.rawHeaders,
    headers: { host: fields.host, 'proxy-authorization': fields.auth },
    socket,
    end,
  }
}
