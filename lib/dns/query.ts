// The client side of DNS, for `sandbox verify`'s probe: one A query, and the response code and
// addresses of what comes back (compressed names skipped, not followed). Pure: no sockets.
import { formatIp } from '../policy/ip.js'
import { TYPE_A } from './message.js'

const RD = 0x0100
const QR = 0x8000
const CLASS_IN = 1

/** A standard query for `name`'s A records, recursion desired. */
export function encodeQuery(id: number, name: string): Buffer {
  const labels = name.split('.').filter((l) => l !== '')
  const question = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0, 0, TYPE_A, 0, CLASS_IN])])
  const header = Buffer.alloc(12)
  header.writeUInt16BE(id, 0)
  header.writeUInt16BE(RD, 2)
  header.writeUInt16BE(1, 4)
  return Buffer.concat([header, question])
}

/** Where the name starting at `at` ends, or undefined if it runs past the message. */
function skipName(msg: Buffer, at: number): number | undefined {
  for (let i = at; i < msg.length; ) {
    const length = msg[i] ?? 0
    if (length === 0) return i + 1
    if ((length & 0xc0) === 0xc0) return i + 2 <= msg.length ? i + 2 : undefined
    i += 1 + length
  }
  return undefined
}

export interface DnsResponse {
  readonly rcode: number
  /** the A records of the answer section */
  readonly addresses: readonly string[]
}

/** The response to query `id`, or undefined when `msg` is not one (another id, a query, cut short). */
export function readResponse(msg: Buffer, id: number): DnsResponse | undefined {
  if (msg.length < 12 || msg.readUInt16BE(0) !== id || (msg.readUInt16BE(2) & QR) === 0) return undefined
  let at = 12
  for (let q = msg.readUInt16BE(4); q > 0; q--) {
    const end = skipName(msg, at)
    if (end === undefined) return undefined
    at = end + 4
  }
  const addresses: string[] = []
  for (let a = msg.readUInt16BE(6); a > 0; a--) {
    const end = skipName(msg, at)
    if (end === undefined || end + 10 > msg.length) return undefined
    const [type, length] = [msg.readUInt16BE(end), msg.readUInt16BE(end + 8)]
    if (end + 10 + length > msg.length) return undefined
    if (type === TYPE_A && length === 4) addresses.push(formatIp({ family: 4, value: BigInt(msg.readUInt32BE(end + 10)) }))
    at = end + 10 + length
  }
  return at > msg.length ? undefined : { rcode: msg.readUInt16BE(2) & 0x0f, addresses }
}
