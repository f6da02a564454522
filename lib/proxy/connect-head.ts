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

const PREFIX = Buffer.from('CONNECT ', 'latin1')
/**
 * The plain form, read by irregexp (native code from the first call, where a byte loop in JavaScript
 * is slow until V8 optimises it): an authority of letters, digits and `.-_~:[]` (no userinfo,
 * percent-encoding or path), HTTP/1.1 or 1.0, then header lines of tchar names and values of visible
 * ASCII with spaces and tabs only inside (node:http trims them at the ends; plain heads have none there).
 * Each line can only fail where it ends: no backtracking beyond a line.
 */
const PLAIN = /^CONNECT ([A-Za-z0-9._~:[\]-]+) HTTP\/1\.([01])\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?\r\n)*)\r\n/
/** One header line of a head PLAIN matched: the name, and the value without its leading blanks. */
const LINE = /([^:\r\n]+):[ \t]*([^\r\n]*)\r\n/g

function startsWith(chunk: Buffer, bytes: Buffer): boolean {
  if (chunk.length < bytes.length) return false
  for (let i = 0; i < bytes.length; i++) if (chunk[i] !== bytes[i]) return false
  return true
}

interface Fields {
  rawHeaders: string[]
  host: string | undefined
  auth: string | undefined
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
  if (!startsWith(chunk, PREFIX)) return undefined
  const plain = PLAIN.exec(chunk.toString('latin1', 0, Math.min(chunk.length, maxBytes - 1)))
  if (plain === null) return undefined
  const [head, url = '', minor, lines = ''] = plain
  const fields: Fields = { rawHeaders: [], host: undefined, auth: undefined }
  LINE.lastIndex = 0
  for (let line = LINE.exec(lines); line !== null; line = LINE.exec(lines)) {
    if (!noted(line[1] ?? '', line[2] ?? '', fields)) return undefined
  }
  return {
    method: 'CONNECT',
    url,
    httpVersion: minor === '1' ? '1.1' : '1.0',
    httpVersionMajor: 1,
    rawHeaders: fields.rawHeaders,
    headers: { host: fields.host, 'proxy-authorization': fields.auth },
    socket,
    end: head.length,
  }
}
