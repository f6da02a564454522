// The one way proxy-gate connects to an origin for an HTTP client of its own (upgrades, and the
// requests of opened tunnels): to the addresses the gate checked, or through the parent proxy for
// the name, with TLS to the origin verified for the name when asked. The name is never resolved here:
//   direct:  dial the checked IPs in turn (dial.ts) [-> TLS, SNI and certificate checked for the name]
//   parent:  CONNECT name:port to the parent (upstream.ts) [-> TLS to the origin inside, checked the same way]
import type { Socket } from 'node:net'
import type { SecureContext } from 'node:tls'
import { dial, startTls } from './dial.js'
import { connectThrough, type TunnelLimits, type Upstream } from './upstream.js'
import { formatIpPort, type Ip } from '../policy/ip.js'
import { formatTarget, type Target } from '../policy/target.js'

/** Where an allowed connection goes. */
export interface OriginRoute {
  readonly target: Target
  /** the checked addresses, tried in order when going direct */
  readonly addresses: readonly Ip[]
  /** the parent proxy it goes through instead, or undefined: direct */
  readonly parent: Upstream | undefined
  /** TLS to the origin, verified for the target's name against this context; undefined: plain TCP */
  readonly tls: SecureContext | undefined
}

/** An open connection to the origin, and the address it went to (undefined through a parent: the parent chose). */
export interface OriginConnection {
  readonly socket: Socket
  readonly ip: Ip | undefined
}

/** The origin in failure texts: the address tried (or the first to try), or the name through the parent. */
export function originWhere(route: OriginRoute, ip: Ip | undefined): string {
  const { target, parent } = route
  if (parent) return `${formatTarget(target)} (through upstream proxy ${parent.hop})`
  const at = ip ?? route.addresses[0]
  return at ? formatIpPort(at, target.port) : formatTarget(target)
}

/** Connects as `route` says; rejects with a DialFailure whose reply says who failed. */
export async function connectOrigin(route: OriginRoute, limits: TunnelLimits): Promise<OriginConnection> {
  const { target, parent, tls } = route
  if (parent) return { socket: await connectThrough(parent, target, limits, tls), ip: undefined }
  const { socket, ip } = await dial(route.addresses, target.port, limits.connectTimeoutMs)
  return { socket: tls ? await startTls(socket, target, tls, originWhere(route, ip), limits.connectTimeoutMs) : socket, ip }
}
