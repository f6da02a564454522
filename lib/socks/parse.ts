// The SOCKS5 handshake as values (RFC 1928 greeting and request, RFC 1929 username/password):
// each parser reads the bytes a client sent so far and says what they are, or that more are
// needed. Pure: the listener (proxy/socks.ts) reads the socket, bounds the wait and answers.
import { formatIp, parseIp, type Ip } from '../policy/ip.js'
import { normaliseName, type Result, type Target } from '../policy/target.js'

/** RFC 1928 method codes and reply codes. */
export const METHOD = { none: 0x00, password: 0x02, unacceptable: 0xff } as const
export const COMMAND = { connect: 0x01, bind: 0x02, udpAssociate: 0x03 } as const
export const REPLY = {
  succeeded: 0x00,
  failure: 0x01,
  notAllowed: 0x02,
  hostUnreachable: 0x04,
  refused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressNotSupported: 0x08,
} as const

/** More than any handshake message can hold (a request is at most 262 bytes, credentials 513). */
export const MAX_HANDSHAKE_BYTES = 1024

interface NeedMore {
  readonly kind: 'need-more'
}
/** Bytes that are no SOCKS5 message: the connection is closed without an answer. */
export interface Bad {
  readonly kind: 'bad'
  readonly reason: string
}

export type GreetingStep = NeedMore | Bad | { readonly kind: 'greeting'; readonly methods: readonly number[]; readonly length: number }
export type CredentialsStep = NeedMore | Bad | { readonly kind: 'credentials'; readonly user: string; readonly password: string; readonly length: number }
export type RequestStep =
  | NeedMore
  | Bad
  /** an address type other than IPv4, name or IPv6: its length is unknown, so only a reply 0x08 is left */
  | { readonly kind: 'address-type'; readonly addressType: number }
  | {
      readonly kind: 'request'
      readonly command: number
      /** the destination as the client wrote it, for the log */
      readonly raw: string
      readonly target: Result<Target>
      readonly length: number
    }

const NEED_MORE: NeedMore = { kind: 'need-more' }
const bad = (reason: string): Bad => ({ kind: 'bad', reason })

/** What a first byte that is not 5 says about the client, for the log. */
function notSocks5(first: number): Bad {
  if (first === 4) return bad('a SOCKS4 or SOCKS4a request: only SOCKS5 is served')
  const text = first >= 0x41 && first <= 0x5a ? ' (it looks like HTTP: send it to the proxy port)' : first === 0x16 ? ' (it looks like TLS)' : ''
  return bad(`not a SOCKS5 greeting: first byte 0x${first.toString(16).padStart(2, '0')}${text}`)
}

/** VER NMETHODS METHODS... */
export function parseGreeting(bytes: Buffer): GreetingStep {
  const version = bytes[0]
  if (version === undefined) return NEED_MORE
  if (version !== 5) return notSocks5(version)
  const count = bytes[1]
  if (count === undefined) return NEED_MORE
  if (count === 0) return bad('a SOCKS5 greeting that offers no authentication method')
  if (bytes.length < 2 + count) return NEED_MORE
  return { kind: 'greeting', methods: [...bytes.subarray(2, 2 + count)], length: 2 + count }
}

/** RFC 1929: VER(1) ULEN UNAME PLEN PASSWD. */
export function parseCredentials(bytes: Buffer): CredentialsStep {
  const version = bytes[0]
  if (version === undefined) return NEED_MORE
  if (version !== 1) return bad(`username/password version ${version}, not 1`)
  const userLength = bytes[1]
  if (userLength === undefined || bytes.length < 3 + userLength) return NEED_MORE
  const passwordLength = bytes[2 + userLength] ?? 0
  const end = 3 + userLength + passwordLength
  if (bytes.length < end) return NEED_MORE
  const user = bytes.toString('utf8', 2, 2 + userLength)
  return { kind: 'credentials', user, password: bytes.toString('utf8', 3 + userLength, end), length: end }
}

const ADDRESS = { ipv4: 0x01, name: 0x03, ipv6: 0x04 } as const

/** DST.ADDR's length by its type (the name's includes its length byte); undefined when more bytes are needed. */
function addressLength(bytes: Buffer, type: number): number | undefined {
  if (type === ADDRESS.ipv4) return 4
  if (type === ADDRESS.ipv6) return 16
  const length = bytes[4]
  return length === undefined ? undefined : 1 + length
}

function hostOf(address: Buffer, type: number): { raw: string; host: Result<Target['host']> } {
  if (type === ADDRESS.name) {
    const text = address.toString('latin1', 1)
    const ip = parseIp(text)
    if (ip) return { raw: formatIp(ip), host: { ok: true, value: { kind: 'ip', ip } } }
    if (!/^[\x21-\x7e]+$/.test(text)) return { raw: JSON.stringify(text).slice(1, -1), host: { ok: false, error: 'the host name is empty or not printable ASCII' } }
    const name = normaliseName(text)
    return { raw: text, host: name.ok ? { ok: true, value: { kind: 'name', name: name.value } } : name }
  }
  // four bytes, or eight groups of four hex digits: always an address (IPv4-mapped IPv6 is read as IPv4)
  const text = type === ADDRESS.ipv4 ? [...address].join('.') : (address.toString('hex').match(/.{4}/g) ?? []).join(':')
  const ip = parseIp(text) as Ip
  return { raw: ip.family === 6 ? `[${formatIp(ip)}]` : formatIp(ip), host: { ok: true, value: { kind: 'ip', ip } } }
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT */
export function parseRequest(bytes: Buffer): RequestStep {
  if (bytes.length < 4) return bytes.length > 0 && bytes[0] !== 5 ? bad(`request version ${bytes[0] ?? 0}, not 5`) : NEED_MORE
  const [version, command, reserved, type] = bytes as unknown as [number, number, number, number]
  if (version !== 5) return bad(`request version ${version}, not 5`)
  if (reserved !== 0) return bad(`request's reserved byte is ${reserved}, not 0`)
  if (type !== ADDRESS.ipv4 && type !== ADDRESS.name && type !== ADDRESS.ipv6) return { kind: 'address-type', addressType: type }
  const size = addressLength(bytes, type)
  if (size === undefined || bytes.length < 4 + size + 2) return NEED_MORE
  const { raw, host } = hostOf(bytes.subarray(4, 4 + size), type)
  const port = bytes.readUInt16BE(4 + size)
  const shown = `${raw}:${port}`
  const length = 4 + size + 2
  if (!host.ok) return { kind: 'request', command, raw: shown, target: host, length }
  if (port === 0) return { kind: 'request', command, raw: shown, target: { ok: false, error: 'port 0 is no destination' }, length }
  return { kind: 'request', command, raw: shown, target: { ok: true, value: { host: host.value, port } }, length }
}

/** The reply to a greeting: the method chosen (METHOD.unacceptable: none offered is acceptable). */
export function methodReply(method: number): Buffer {
  return Buffer.from([5, method])
}

/** The RFC 1929 status: 0 accepted, anything else refused (the client must close). */
export function credentialsReply(ok: boolean): Buffer {
  return Buffer.from([1, ok ? 0 : 1])
}

/** A request's reply. BND.ADDR and BND.PORT are 0.0.0.0:0: a client of CONNECT has no use for them. */
export function requestReply(code: number): Buffer {
  return Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
}
