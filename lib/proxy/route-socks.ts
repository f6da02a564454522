// SOCKS5 tunnels (RFC 1928), asked for on a SOCKS listener (socks.ts, which reads the handshake):
//   client --greeting--> method: none, or username/password (RFC 1929) when "auth" has users --> checked as Basic auth (auth.ts)
//   client --CONNECT host:port--> tunnelRoute (route-connect.ts), the path CONNECT takes:
//     other ports: admit (rules, DNS, guard) -> dial checked IP -> reply 0x00 -> relay (a ClientHello in the first bytes is checked)
//     TLS ports:   admit -> reply 0x00 -> ClientHello (SNI) -> admit again -> dial -> relay
//     rules with methods/paths: ... -> reply 0x00 [-> ClientHello] -> interceptor (intercept.ts)
//   refusals are reply codes (socksCode), the reason and the rule to add go to the decision line:
//     denied 0x02, DNS failure 0x04, refused 0x05, connect timeout 0x06, anything else 0x01
//   BIND, UDP ASSOCIATE: reply 0x07; an unknown address type: 0x08
import type { Socket } from 'node:net'
import type { ClientIdentity } from '../policy/clients.js'
import type { Interceptor } from './intercept.js'
import { refuse, tunnelRoute, type Asked, type TunnelAnswer } from './route-connect.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, type Runtime } from './runtime.js'
import { COMMAND, REPLY, requestReply } from '../socks/parse.js'
import type { Target, Result } from '../policy/target.js'

/** The reply code a client gets for what an HTTP client would get as `r`. */
function socksCode(r: ProxyReply): number {
  switch (r.type) {
    case 'http_request_denied':
    case 'destination_ip_prohibited':
      return REPLY.notAllowed
    case 'dns_error':
    case 'dns_timeout':
      return REPLY.hostUnreachable
    case 'connection_refused':
      return REPLY.refused
    case 'connection_timeout':
      return REPLY.ttlExpired
    default:
      return REPLY.failure
  }
}

/** Writes a reply code and closes: a SOCKS client reads nothing after a failure reply. */
export function endWithCode(socket: Socket, code: number): void {
  if (socket.destroyed) return
  socket.end(requestReply(code))
  socket.destroySoon()
}

const SOCKS_ANSWER: TunnelAnswer = {
  established: requestReply(REPLY.succeeded),
  refuse: (socket, r) => endWithCode(socket, socksCode(r)),
}

/** A SOCKS5 request, as the handshake read it. */
export interface SocksRequest {
  readonly command: number
  /** the destination as the client wrote it */
  readonly raw: string
  readonly target: Result<Target>
}

const COMMAND_NAMES: Readonly<Record<number, string>> = { [COMMAND.bind]: 'BIND', [COMMAND.udpAssociate]: 'UDP ASSOCIATE' }

type Routed = Promise<void> | undefined

/** A request after the handshake: CONNECT goes the way CONNECT goes on the proxy port; other commands get 0x07. */
export function socksRoute(rt: Runtime, interceptor: Interceptor | undefined, who: ClientIdentity, socket: Socket, request: SocksRequest, head: Buffer): Routed {
  const gate = rt.gate(who)
  const asked: Asked = { rt, id: rt.nextId(), req: { socket }, rawTarget: request.raw, policy: gate.policyName, answer: SOCKS_ANSWER, listener: 'socks' }
  const target = request.target.ok ? request.target.value : undefined
  if (request.command !== COMMAND.connect) {
    const name = COMMAND_NAMES[request.command] ?? `command 0x${request.command.toString(16).padStart(2, '0')}`
    const r = reply(400, 'http_request_error', `SOCKS ${name} is not supported: only CONNECT (TCP) goes through proxy-gate`)
    logDecision(rt, { id: asked.id, req: asked.req, method: name.startsWith('command') ? 'OTHER' : name, target, rawTarget: request.raw, policy: gate.policyName, reply: r, listener: 'socks' })
    endWithCode(socket, REPLY.commandNotSupported)
    return undefined
  }
  if (!request.target.ok) return refuse(asked, socket, undefined, reply(400, 'http_request_error', `bad SOCKS destination: ${request.target.error}`))
  return tunnelRoute(asked, interceptor, who, socket, head, request.target.value)
}
