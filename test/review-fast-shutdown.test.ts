// Review of the CONNECT fast path: a connection it took must still be one of the proxy's client
// sockets, which shutdown closes at the end of its grace period. A CONNECT that is still being
// decided then (here: its DNS lookup has not answered) is in no other registry, so a socket left
// out of that list keeps shutdown waiting for as long as the client stays.
import t from 'tap'
import { DnsFailure } from '../lib/net/resolve.js'
import type { Ip } from '../lib/policy/ip.js'
import { rawSession } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

/** A lookup that answers only when told to, and says when it was asked. */
function heldLookup(): { lookup: (name: string) => Promise<Ip[]>; asked: Promise<void>; fail(): void } {
  let asked!: () => void
  const failers: Array<() => void> = []
  return {
    asked: new Promise((resolve) => (asked = resolve)),
    lookup: (name) =>
      new Promise((_resolve, reject) => {
        failers.push(() => reject(new DnsFailure('dns_error', 'ESERVFAIL', `${name}: test resolver let go`)))
        asked()
      }),
    fail: () => failers.forEach((f) => f()),
  }
}

for (const fast of [true, false]) {
  t.test(`shutdown closes a CONNECT still being decided at the end of its grace period (${fast ? 'fast path' : 'node:http'})`, async (t) => {
    const dns = heldLookup()
    const proxy = await startProxy({ allow: ['slow.test:443'], limits: { shutdownGraceMs: 100 } }, { lookup: dns.lookup, connectFastPath: fast })
    const client = await rawSession(proxy.port)
    t.teardown(() => client.destroy())
    await client.send('CONNECT slow.test:443 HTTP/1.1\r\nHost: slow.test:443\r\n\r\n')
    await dns.asked
    const stopped = proxy.close()
    const closing = await proxy.waitForLog((l) => l.message === 'closing what is still open')
    t.equal(closing.connections, 1, 'the CONNECT socket is counted among the connections still open')
    await client.waitFor(() => false, 5_000) // returns when the proxy closes the connection (the wait is a safety net)
    t.ok(client.isClosed(), 'the proxy closed the connection at the end of the grace period')
    t.equal(client.text(), '', 'nothing was answered: it was cut off, not decided')
    dns.fail() // lets the route finish (a 502) where shutdown left its socket open, so that a failure does not hang the file
    await stopped
  })
}
