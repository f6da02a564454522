// One client must not hurt the others: a soak with idle /events subscribers that never read, a login
// spray of wrong passwords for many names and a DNS-over-TCP trickle, all at once against one
// `proxy-gate start`, while thousands of denials stream to the subscribers. Afterwards a right
// password still works, the sandbox DNS still answers another client over UDP and TCP, and the
// resident memory has not grown with the denials the idle subscribers never read.
import { Agent, request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promises as dnsPromises } from 'node:dns'
import t from 'tap'
import dnsPacket from 'dns-packet'
import { hashPassword } from '../lib/proxy/auth.js'
import { startCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'
import { NETNS_SKIP, startHttpUpstream } from './helpers/net.js'

const SANDBOX = '127.53.0.9'
const OTHER_CLIENT = '127.0.0.3'
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
}

/** `count` requests through the proxy on a few keep-alive connections; resolves with the statuses seen. */
async function requests(port: number, url: string, auth: (i: number) => string, count: number): Promise<Map<number, number>> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 })
  const statuses = new Map<number, number>()
  let next = 0
  const one = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: url, agent, headers: { host: new URL(url).host, 'proxy-authorization': auth(i) } }, (res) => {
        statuses.set(res.statusCode ?? 0, (statuses.get(res.statusCode ?? 0) ?? 0) + 1)
        res.resume()
        res.on('end', resolve)
      })
      req.on('error', () => resolve())
      req.end()
    })
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < count) await one(next++)
  }))
  agent.destroy()
  return statuses
}

/** An /events subscriber that never reads: its socket stays paused. */
function idleSubscriber(adminPort: number): Socket {
  const socket = connect({ host: '127.0.0.1', port: adminPort })
  socket.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1:${adminPort}\r\nAccept: text/event-stream\r\n\r\n`)
  socket.pause()
  socket.on('error', () => socket.destroy())
  return socket
}

/** A DNS-over-TCP connection that sends one byte of a query every 500 ms. */
function trickle(): { stop(): void } {
  const query = dnsPacket.streamEncode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'allowed.test' }] })
  const socket = connect({ host: SANDBOX, port: 53 })
  socket.on('error', () => socket.destroy())
  let at = 0
  const timer = setInterval(() => {
    if (!socket.destroyed) socket.write(query.subarray(at % query.length, (at % query.length) + 1))
    at++
  }, 500)
  return { stop: () => (clearInterval(timer), socket.destroy()) }
}

/** One query over TCP from `localAddress`, answered or not within 3 s. */
function tcpQuery(localAddress: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: SANDBOX, port: 53, localAddress })
    const done = (answer: string | undefined): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(answer)
    }
    const timer = setTimeout(() => done(undefined), 3_000)
    let got = Buffer.alloc(0)
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
        const answer = dnsPacket.streamDecode(got).answers?.[0]
        done(answer?.type === 'A' ? answer.data : 'no answer')
      }
    })
    socket.on('error', () => done(undefined))
    socket.write(dnsPacket.streamEncode({ type: 'query', id: 2, questions: [{ type: 'A', name: 'allowed.test' }] }))
  })
}

t.test('idle /events subscribers, a login spray and a DNS-TCP trickle at once hurt no other client', { skip: NETNS_SKIP, timeout: 90_000 }, async (t) => {
  const origin = await startHttpUpstream('127.0.0.1')
  t.teardown(() => origin.close())
  const rules = rulesFile({
    allow: ['allowed.test:80', `127.0.0.1:${origin.port}`],
    auth: { users: { alice: await hashPassword('right horse') } },
    sandbox: { socks: false, address: SANDBOX, http: [], tls: [] },
  })
  const cli = await startCli(['start', '--rules', rules, '--listen', '127.0.0.1:0', '--log-format', 'json', '--admin-listen', '127.0.0.1:0', '--admin-token-file', join(tempDir('soak'), 'token')])
  t.teardown(() => void cli.child.kill('SIGKILL'))
  const admin = await cli.waitFor((l) => l.message === 'admin listening')
  const adminPort = Number(/:(\d+)\/$/.exec(String(admin.url))?.[1])
  const pid = cli.child.pid ?? 0
  const right = (): string => basic('alice', 'right horse')
  const allowedUrl = `http://127.0.0.1:${origin.port}/ok`

  t.same([...(await requests(cli.port, allowedUrl, right, 1)).keys()], [200], 'alice logs in before the soak')
  await requests(cli.port, 'http://denied.test/warm-up', right, 3_000)

  const subscribers = Array.from({ length: 16 }, () => idleSubscriber(adminPort))
  const trickles = Array.from({ length: 300 }, () => trickle()) // more than the 256 TCP slots the server has in all
  t.teardown(() => {
    for (const s of subscribers) s.destroy()
    for (const tr of trickles) tr.stop()
  })
  // two rounds of the same: what the first leaves (scrypt's buffers, heap growth) is the baseline the second must stay at
  const round = async (): Promise<{ denials: Map<number, number>; sprayed: Map<number, number>; rss: number }> => {
    const spray = requests(cli.port, allowedUrl, (i) => basic(`user${i % 300}`, 'wrong'), 1_500)
    const denials = await requests(cli.port, 'http://denied.test/soak', right, 15_000)
    return { denials, sprayed: await spray, rss: rssKb(pid) }
  }
  const first = await round()
  const { denials, sprayed, rss: after } = await round()
  const before = first.rss

  t.equal(denials.get(403), 15_000, 'every denial answered 403')
  t.ok((sprayed.get(407) ?? 0) + (sprayed.get(429) ?? 0) === 1_500, `the spray was refused (${JSON.stringify([...sprayed])})`)
  t.same([...(await requests(cli.port, allowedUrl, right, 20)).entries()], [[200, 20]], "alice's right password still works")
  const resolver = new dnsPromises.Resolver({ timeout: 2_000, tries: 1 })
  resolver.setServers([`${SANDBOX}:53`])
  resolver.setLocalAddress(OTHER_CLIENT)
  t.same(await resolver.resolve4('allowed.test'), [SANDBOX], 'another client is answered over UDP')
  t.equal(await tcpQuery(OTHER_CLIENT), SANDBOX, 'and over TCP, with the trickle still running')
  const grownMb = (after - before) / 1024
  t.comment(`RSS ${(before / 1024).toFixed(1)} MB after the first round, ${(after / 1024).toFixed(1)} MB after the second`)
  t.ok(grownMb < 24, `resident memory did not grow with what the idle subscribers never read (+${grownMb.toFixed(1)} MB)`)
})
