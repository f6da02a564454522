// Review finding: the cloud metadata address needs a rule naming it exactly, but only in its own
// spellings. Its NAT64 form 64:ff9b::a9fe:a9fe (what a NAT64 gateway translates to 169.254.169.254)
// is classified as a plain "ipv6-embedding" address, so the range rule that an IPv6-only network
// with DNS64 needs ("[64:ff9b::/96]:80") allows it, and validate gives no warning for that range.
// In this namespace a listener on 64:ff9b::a9fe:a9fe stands in for the gateway's translation.
//   client --CONNECT [64:ff9b::a9fe:a9fe]:PORT--> rule [64:ff9b::/96]:PORT -> allowed -> "metadata" reached
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { connectHead } from './helpers/http.js'
import { NETNS_SKIP, rawExchange, startCanary } from './helpers/net.js'
import { configFrom, startProxy } from './helpers/proxy.js'
import { configWarnings } from '../lib/rules/config.js'

const EMBEDDED = '64:ff9b::a9fe:a9fe'

t.test('a NAT64 range rule does not reach the metadata address embedded in it', { skip: NETNS_SKIP }, async (t) => {
  // the namespace test/run.sh made is ours: the stand-in address goes on its loopback for this test only
  t.equal(spawnSync('ip', ['-6', 'addr', 'add', `${EMBEDDED}/128`, 'dev', 'lo', 'nodad']).status, 0, 'stand-in address added')
  t.teardown(() => void spawnSync('ip', ['-6', 'addr', 'del', `${EMBEDDED}/128`, 'dev', 'lo']))
  const metadata = await startCanary(EMBEDDED)
  const rules = { allow: [`[64:ff9b::/96]:${metadata.port}`] }
  const proxy = await startProxy(rules)
  t.teardown(async () => {
    await proxy.close()
    await metadata.close()
  })
  t.not(configWarnings(configFrom(rules)).length, 0, 'validate warns that the NAT64 range holds the metadata address')
  const { text } = await rawExchange(proxy.port, connectHead(`[${EMBEDDED}]:${metadata.port}`), { until: (got) => got.includes('\r\n\r\n') })
  t.match(text, /^HTTP\/1\.1 403 /, 'CONNECT to the NAT64 form of 169.254.169.254 refused')
  t.equal(metadata.connections(), 0, 'nothing reached the metadata stand-in')
})
