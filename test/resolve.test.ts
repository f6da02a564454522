// lib/net/resolve.ts and lib/net/hosts.ts: the hosts file (parsed strictly, re-read when it
// changes, used only without dns.servers, still behind the address guard) and one query per name
// for a burst of concurrent lookups. Real DNS on loopback (test/helpers/dns.ts), temp hosts files.
import { renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parseHosts } from '../lib/net/hosts.js'
import { createLookup, createResolve, DnsFailure } from '../lib/net/resolve.js'
import { formatIp, type Ip } from '../lib/policy/ip.js'
import type { DnsConfig } from '../lib/rules/config.js'
import { startDns } from './helpers/dns.js'
import { tempDir } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'
import { configFrom, startProxy } from './helpers/proxy.js'

const show = (ips: readonly Ip[]): string[] => ips.map(formatIp)

function systemDns(timeoutMs = 1000): DnsConfig {
  return { servers: [], timeoutMs, cacheSize: 100 }
}

function hostsFile(text: string): string {
  const file = join(tempDir('hosts'), 'hosts')
  writeFileSync(file, text)
  return file
}

t.test('parseHosts: comments, several names a line, IPv4 and IPv6, names normalised, bad lines skipped', async (t) => {
  const table = parseHosts(
    [
      '# a comment line',
      '127.0.0.1\tlocalhost  Loopback.Test. # trailing comment',
      '::1 localhost ip6-localhost',
      '10.0.0.5 app.test',
      '10.0.0.6 app.test',
      '10.0.0.5 app.test',
      '  ',
      '192.168.1.1',
      '010.0.0.1 leading-zero.test',
      '127.1 short.test',
      'fe80::1%eth0 zoned.test',
      '10.0.0.7 good.test bad_name!.test',
      '10.0.0.8 2130706433',
      'not-an-ip name.test',
      '2001:db8::1 v6only.test',
      '#10.0.0.9 commented.test',
    ].join('\n'),
  )
  t.same(show(table.get('localhost') ?? []), ['127.0.0.1', '::1'], 'IPv4 first, lines add up')
  t.same(show(table.get('loopback.test') ?? []), ['127.0.0.1'], 'lower case, trailing dot removed')
  t.same(show(table.get('ip6-localhost') ?? []), ['::1'])
  t.same(show(table.get('app.test') ?? []), ['10.0.0.5', '10.0.0.6'], 'file order, no repeats')
  t.same(show(table.get('v6only.test') ?? []), ['2001:db8::1'])
  for (const skipped of ['leading-zero.test', 'short.test', 'zoned.test', 'good.test', 'name.test', 'commented.test', '2130706433']) {
    t.notOk(table.has(skipped), `${skipped}: its line is skipped`)
  }
  t.equal(table.size, 5)
  t.equal(parseHosts('').size, 0)
  t.same(show(parseHosts('127.0.0.1 crlf.test\r\n').get('crlf.test') ?? []), ['127.0.0.1'], 'CRLF line ends')
})

t.test('without dns.servers the hosts file answers first, and is re-read when it changes', async (t) => {
  const file = hostsFile('127.0.0.1 localhost\n10.1.2.3 app.hosts.test\n::1 app.hosts.test\n')
  const resolve = createResolve(systemDns(), { hostsFile: file })
  const first = await resolve('app.hosts.test')
  t.same(show(first.addresses), ['10.1.2.3', '::1'])
  t.same(first.from, { kind: 'hosts', path: file })
  t.same(show((await resolve('localhost')).addresses), ['127.0.0.1'])

  writeFileSync(file, '10.9.9.9 app.hosts.test\n10.9.9.8 new.hosts.test\n')
  t.same(show((await resolve('app.hosts.test')).addresses), ['10.9.9.9'], 'a changed file is read again')
  t.same(show((await resolve('new.hosts.test')).addresses), ['10.9.9.8'])

  // same size, new content: the mtime (or inode, for editors that rename) tells
  writeFileSync(`${file}.tmp`, '10.9.9.7 app.hosts.test\n10.9.9.8 new.hosts.test\n')
  renameSync(`${file}.tmp`, file)
  t.same(show((await resolve('app.hosts.test')).addresses), ['10.9.9.7'], 'a file replaced by rename is read again')

  rmSync(file)
  const after = await resolve('app.hosts.test').then(() => undefined, (error: unknown) => error)
  t.ok(after instanceof DnsFailure, 'a removed file answers nothing (the name goes to DNS, which has no answer here)')
})

t.test('with dns.servers the hosts file is not read: those servers answer', async (t) => {
  const dns = await startDns({ 'app.hosts.test': { A: ['11.22.33.44'] } })
  t.teardown(() => dns.close())
  const file = hostsFile('10.1.2.3 app.hosts.test\n')
  const [ip, port] = dns.server.split(':')
  const parsed = configFrom({ dns: { servers: [`${ip}:${port}`] } })
  const resolve = createResolve(parsed.dns, { hostsFile: file })
  const answer = await resolve('app.hosts.test')
  t.same(show(answer.addresses), ['11.22.33.44'])
  t.same(answer.from, { kind: 'dns' })
  t.equal(dns.queries('app.hosts.test'), 2, 'asked the configured server (A and AAAA)')
})

t.test('an address from the hosts file still passes the address guard: loopback is refused unless an IP rule allows it', async (t) => {
  const upstream = await startHttpUpstream('127.0.0.1')
  t.teardown(() => upstream.close())
  const file = hostsFile(`127.0.0.1 app.hosts.test\n`)
  const target = `app.hosts.test:${upstream.port}`
  const rules = { allow: [target] }
  const refused = await startProxy(rules, { lookup: createLookup(configFrom(rules).dns, { hostsFile: file }) })
  t.teardown(() => refused.close())
  const denied = await rawExchange(refused.port, connectHead(target))
  t.equal(statusOf(denied.text), 403)
  t.match(denied.text, /error=destination_ip_prohibited/)
  t.match(denied.text, /app\.hosts\.test resolves to 127\.0\.0\.1/)
  t.equal(upstream.connections(), 0, 'nothing dialled')

  const withIpRule = { allow: [target, `127.0.0.1/32:${upstream.port}`] }
  const allowed = await startProxy(withIpRule, { lookup: createLookup(configFrom(withIpRule).dns, { hostsFile: file }) })
  t.teardown(() => allowed.close())
  const opened = await rawExchange(allowed.port, connectHead(target), { until: (s) => s.includes('\r\n\r\n') })
  t.equal(statusOf(opened.text), 200, 'allowed with the IP rule, to the address the hosts file gave')
})

t.test('a burst of concurrent lookups of one name sends one query per family', async (t) => {
  const dns = await startDns({ 'burst.test': { A: ['11.22.33.44'], AAAA: ['2001:db8::4'] } })
  t.teardown(() => dns.close())
  const lookup = createLookup(configFrom({ dns: { servers: [dns.server] } }).dns)
  const held = dns.hold('burst.test')
  const burst = Array.from({ length: 20 }, () => lookup('burst.test'))
  await dns.asked('burst.test', 2)
  // every lookup has started and is waiting: none can have had an answer yet
  held.release()
  const answers = await Promise.all(burst)
  t.ok(answers.every((a) => show(a).join() === '11.22.33.44,2001:db8::4'), 'all 20 got the answer')
  t.equal(dns.queries('burst.test'), 2, 'one A and one AAAA query for 20 lookups')
})

t.test('a failed in-flight lookup rejects all its waiters with the same DnsFailure, and is not cached', async (t) => {
  const dns = await startDns({ 'gone.test': { rcode: 'NXDOMAIN' } })
  t.teardown(() => dns.close())
  const lookup = createLookup(configFrom({ dns: { servers: [dns.server] } }).dns)
  const held = dns.hold('gone.test')
  const burst = Array.from({ length: 20 }, () => lookup('gone.test').then(() => undefined, (error: unknown) => error))
  await dns.asked('gone.test', 2)
  held.release()
  const errors = await Promise.all(burst)
  t.ok(errors[0] instanceof DnsFailure, 'a DnsFailure')
  t.match(errors[0], { type: 'dns_error', code: 'ENOTFOUND', message: 'DNS: gone.test does not exist (NXDOMAIN)' })
  t.ok(errors.every((e) => e === errors[0]), 'the same failure for every waiter')
  t.equal(dns.queries('gone.test'), 2, 'one query per family')
  const again = await lookup('gone.test').then(() => undefined, (error: unknown) => error)
  t.ok(again instanceof DnsFailure && again !== errors[0], 'a new failure')
  t.equal(dns.queries('gone.test'), 4, 'the next lookup asks again')
})
