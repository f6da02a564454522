// The addresses this host answers on: a listener's own address (and, when it is bound to the
// unspecified address, every interface's) is never a destination, so a client cannot loop the proxy.
import { networkInterfaces } from 'node:os'
import { parseIp, type Ip } from '../policy/ip.js'
import type { SelfAddress } from '../policy/decide.js'

/** The addresses a client could use to reach this listener: a destination never allowed. */
export function selfAddresses(address: { address: string; port: number }): SelfAddress[] {
  const listen = parseIp(address.address)
  if (!listen) return []
  const unspecified = listen.value === 0n
  const local = unspecified
    ? Object.values(networkInterfaces())
        .flat()
        .map((i) => (i ? parseIp(i.address.split('%')[0] ?? '') : undefined))
    : []
  return [listen, ...local].filter((ip): ip is Ip => ip !== undefined).map((ip) => ({ ip, port: address.port }))
}
