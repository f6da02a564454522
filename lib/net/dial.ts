// Opens the upstream TCP connection to an address the gate checked: IP literals only, so the
// name is never resolved again (no rebinding window), each try bounded by the connect timeout;
// and TLS to the origin over such a connection, verified for the name.
import { connect, type OnReadOpts, type Socket } from 'node:net'
import type { SecureContext, TLSSocket } from 'node:tls'
import { tls as nodeTls } from '../core/builtins.js'
import { formatIp, formatIpPort, type Ip } from '../policy/ip.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { hostText, type Target } from '../policy/target.js'

export class DialFailure extends Error {
  constructor(readonly reply: ProxyReply) {
    super(reply.details)
  }
}

function dialOne(ip: Ip, port: number, timeoutMs: number, onread: OnReadOpts | undefined): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: formatIp(ip), port, allowHalfOpen: true, noDelay: true, onread })
    // onread bytes are handed over as read, never buffered: nothing is read before its owner resumes the socket
    if (onread) socket.pause()
    const timer = setTimeout(() => {
      socket.destroy()
      reject(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' }))
    }, timeoutMs)
    const onError = (error: Error): void => {
      clearTimeout(timer)
      reject(error)
    }
    // no listener is left behind: it would keep this closure (and its timer) for the tunnel's life
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.off('error', onError)
      resolve(socket)
    })
    socket.once('error', onError)
  })
}

const TLS_CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
])

export function upstreamFailure(code: string, where: string): ProxyReply {
  if (code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') return reply(504, 'connection_timeout', `connecting to ${where} timed out`)
  if (code === 'ECONNREFUSED') return reply(502, 'connection_refused', `${where} refused the connection`)
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return reply(504, 'connection_read_timeout', `${where} did not answer in time`)
  if (TLS_CERT_CODES.has(code)) return reply(502, 'tls_certificate_error', `${where} presented a certificate that does not verify (${code})`)
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET') return reply(502, 'connection_terminated', `${where} closed the connection`)
  return reply(502, 'destination_unavailable', `${where} is unreachable (${code})`)
}

/**
 * Tries each checked address in order until one accepts. With `onread` the socket is read into its buffer
 * (no 'data' events) and comes back paused: the caller resumes it once it is ready for the callback.
 */
export async function dial(addresses: readonly Ip[], port: number, timeoutMs: number, onread?: OnReadOpts): Promise<{ socket: Socket; ip: Ip }> {
  let last = 'ENOTCONN'
  for (const ip of addresses) {
    try {
      return { socket: await dialOne(ip, port, timeoutMs, onread), ip }
    } catch (error) {
      last = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN'
    }
  }
  const where = addresses.map((ip) => formatIpPort(ip, port)).join(', ')
  throw new DialFailure(upstreamFailure(last, where))
}

/**
 * TLS to the origin over `socket` (dialled to a checked address, or the parent's tunnel): SNI and
 * the certificate check are for the target's name, against `secureContext`, bounded like a connect.
 * Rejects with a DialFailure naming `where`.
 */
export function startTls(socket: Socket, target: Target, secureContext: SecureContext, where: string, timeoutMs: number): Promise<TLSSocket> {
  const name = hostText(target.host)
  return new Promise((resolve, reject) => {
    const tls = nodeTls.connect({ socket, host: name, ...(target.host.kind === 'name' ? { servername: name } : {}), secureContext, ALPNProtocols: ['http/1.1'] })
    const fail = (code: string): void => {
      clearTimeout(timer)
      tls.destroy()
      reject(new DialFailure(upstreamFailure(code, where)))
    }
    const timer = setTimeout(() => fail('ETIMEDOUT'), timeoutMs)
    const onError = (error: NodeJS.ErrnoException): void => fail(error.code ?? 'EUNKNOWN')
    tls.once('error', onError)
    tls.once('secureConnect', () => {
      clearTimeout(timer)
      tls.off('error', onError)
      resolve(tls)
    })
  })
}
