// The sandbox DNS server over real sockets on 127.53.0.1:53 (UDP and TCP): node's resolver for
// allowed, denied and other-type answers; raw packets for malformed, oversized and odd queries,
// TCP framing, the per-client rate limit; the upstream resolver that never hears a thing; log
// lines, metrics and the dashboard's activity; reload, listen errors and shutdown.
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { Resolver } from 'node:dns/promises'
import { get as httpGet } from 'node:http'
import { connect, createServer, type Socket } from 'node:net'
import * as packet from 'dns-packet'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import t, { type Test } from 'tap'
import { createWatchers } from '../lib/cli/admin.js'
import { createAdmin } from '../lib/observe/admin.js'
import { startDns, type TestDns } from './helpers/dns.js'
import { NETNS_SKIP } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

const ADDRESS = '127.53.0.1'
const PORT = 53
const SANDBOX = { address: ADDRESS, dns: PORT, http: [], tls: [], socks: false }
const RCODE = { NOERROR: 0, FORMERR: 1, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 }

// ---- helpers -------------------------------------------------------------------------------

async function start(t: Test, rules: Record<string, unknown> = {}, watchers = createWatchers()): Promise<{ proxy: TestProxy; upstream: TestDns }> {
  const upstream = await startDns({ 'api.allowed.test': { A: ['11.22.33.44'] }, 'denied.test': { A: ['11.22.33.45'] } })
  const proxy = await startProxy(
    { allow: ['api.allowed.test:443', '*.cdn.test:443'], deny: ['bad.cdn.test'], dns: { servers: [upstream.server] }, sandbox: SANDBOX, ...rules },
    { observe: (event) => watchers.observe(event) },
  )
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
  })
  return { proxy, upstream }
}

function resolver(server = `${ADDRESS}:${PORT}`): Resolver {
  const r = new Resolver({ timeout: 2_000, tries: 1 })
  r.setServers([server])
  return r
}

async function failure(promise: Promise<unknown>): Promise<string> {
  try {
    await promise
    return 'answered'
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? 'no code'
  }
}

function query(name: string, type: packet.RecordType = 'A', id = 1, extra: Partial<packet.Packet> = {}): Buffer {
  return packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], ...extra })
}

/** A header by hand: id, flags, then QD/AN/NS/AR counts. */
function header(id: number, flags: number, qd: number, an = 0, ns = 0, ar = 0): Buffer {
  const b = Buffer.alloc(12)
  ;[id, flags, qd, an, ns, ar].forEach((v, i) => b.writeUInt16BE(v, i * 2))
  return b
}

/** A question by hand: wire-format labels, type, class. */
function question(labels: readonly (string | Buffer)[], type = 1, klass = 1): Buffer {
  const parts = labels.map((l) => (typeof l === 'string' ? Buffer.from(l, 'latin1') : l)).flatMap((l) => [Buffer.from([l.length]), l])
  const tail = Buffer.alloc(5)
  tail.writeUInt16BE(type, 1)
  tail.writeUInt16BE(klass, 3)
  return Buffer.concat([...parts, tail])
}

/** An EDNS OPT record, with `padding` bytes of RFC 7830 padding to make the query large. */
function opt(padding = 0): packet.Answer {
  return { type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: padding ? [{ code: 12, data: Buffer.alloc(padding) }] : [] }
}

const rcodeOf = (response: Buffer): number => (response[3] ?? 0) & 0x0f
const idOf = (response: Buffer): number => response.readUInt16BE(0)

interface UdpClient {
  send(msg: Buffer): void
  /** the next response; fails after 2 s instead of hanging */
  next(): Promise<Buffer>
  /** sends and waits for the response */
  ask(msg: Buffer): Promise<Buffer>
}

async function udpClient(t: Test, source = '127.0.0.1'): Promise<UdpClient> {
  const socket: UdpSocket = createSocket('udp4')
  const queue: Buffer[] = []
  const waiters: Array<(b: Buffer) => void> = []
  socket.on('message', (msg) => {
    const waiter = waiters.shift()
    if (waiter) waiter(msg)
    else queue.push(msg)
  })
  await new Promise<void>((resolve) => socket.bind(0, source, resolve))
  t.teardown(() => socket.close())
  const next = (): Promise<Buffer> => {
    const queued = queue.shift()
    if (queued) return Promise.resolve(queued)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no DNS response within 2 s')), 2_000)
      waiters.push((b) => {
        clearTimeout(timer)
        resolve(b)
      })
    })
  }
  const send = (msg: Buffer): void => socket.send(msg, PORT, ADDRESS)
  return { send, next, ask: (msg) => (send(msg), next()) }
}

function framed(msg: Buffer): Buffer {
  const prefix = Buffer.alloc(2)
  prefix.writeUInt16BE(msg.length, 0)
  return Buffer.concat([prefix, msg])
}

interface TcpResult {
  readonly responses: Buffer[]
  /** the server closed the connection */
  readonly closed: boolean
}

/** Writes each chunk (in order, each after the last was flushed), then reads `want` framed responses or until the server closes. */
function tcpExchange(chunks: readonly Buffer[], want: number): Promise<TcpResult> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect({ host: ADDRESS, port: PORT, noDelay: true })
    let data = Buffer.alloc(0)
    const responses: Buffer[] = []
    const timer = setTimeout(() => reject(new Error('TCP exchange did not finish within 3 s')), 3_000)
    const done = (closed: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ responses, closed })
    }
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk])
      while (data.length >= 2 && data.length >= 2 + data.readUInt16BE(0)) {
        responses.push(data.subarray(2, 2 + data.readUInt16BE(0)))
        data = data.subarray(2 + data.readUInt16BE(0))
      }
      if (responses.length >= want) done(false)
    })
    socket.on('close', () => done(true))
    socket.on('error', () => undefined)
    const write = (i: number): void => {
      const chunk = chunks[i]
      if (chunk) socket.write(chunk, () => write(i + 1))
    }
    socket.once('connect', () => write(0))
  })
}

const dnsLines = (proxy: TestProxy, match: (l: LogLine) => boolean = () => true): LogLine[] => proxy.logs().filter((l) => l.message === 'dns' && match(l))

// ---- answers -------------------------------------------------------------------------------

t.test('allowed names get the sandbox address, denied ones NXDOMAIN, other types no data; nothing reaches the upstream resolver', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, upstream } = await start(t)
  const r = resolver()
  t.same(await r.resolve4('api.allowed.test', { ttl: true }), [{ address: ADDRESS, ttl: 5 }], 'one A record: proxy-gate itself, for 5 s')
  t.same(await r.resolve4('API.Allowed.TEST.'), [ADDRESS], 'names are normalised as the rules are')
  t.same(await r.resolve4('a.b.cdn.test'), [ADDRESS], 'a wildcard rule')
  t.equal(await failure(r.resolve6('api.allowed.test')), 'ENODATA', 'AAAA for an IPv4 sandbox: NOERROR, no answer')
  t.equal(await failure(r.resolveMx('api.allowed.test')), 'ENODATA', 'MX: no answer')
  t.equal(await failure(r.resolveTxt('api.allowed.test')), 'ENODATA', 'TXT: no answer')
  t.match(await r.resolveAny('api.allowed.test'), [{ type: 'A', address: ADDRESS }], 'ANY gets the address record')
  t.equal(await failure(r.resolve4('denied.test')), 'ENOTFOUND', 'no allow rule: NXDOMAIN')
  t.equal(await failure(r.resolve4('bad.cdn.test')), 'ENOTFOUND', 'a deny rule on every port: NXDOMAIN')
  t.equal(await failure(r.resolveMx('denied.test')), 'ENOTFOUND', 'any type of a denied name: NXDOMAIN')
  t.equal(await failure(r.reverse('11.22.33.44')), 'ENOTFOUND', 'PTR is decided like any name: no rule, NXDOMAIN')

  const denied = await logLine(proxy, (l) => l.message === 'dns' && l.name === 'denied.test' && l.qtype === 'A', 'dns line for denied.test')
  t.match(denied, { answer: 'deny', reason: 'no-rule', suggestion: '"denied.test:443"', policy: 'default', transport: 'udp', mode: 'enforce', wouldDeny: false, client: /^127\.0\.0\.1:\d+$/ })
  t.match(dnsLines(proxy, (l) => l.name === 'bad.cdn.test')[0], { answer: 'deny', reason: 'deny-rule', rule: 'deny[0] bad.cdn.test' })
  t.match(dnsLines(proxy, (l) => l.name === 'api.allowed.test' && l.qtype === 'A')[0], { answer: 'allow', reason: 'allow-rule', rule: 'allow[0] api.allowed.test:443' })
  t.equal(upstream.totalQueries(), 0, 'the upstream resolver saw no query at all: allowed or denied, the sandbox DNS never forwards')
  t.equal(upstream.queries('denied.test'), 0)
})

t.test('the policy is chosen by the client\'s source address', { skip: NETNS_SKIP }, async (t) => {
  const { proxy } = await start(t, { policies: { ci: { allow: ['ci.only.test:443'] } }, clients: [{ source: '127.53.9.0/24', policy: 'ci' }] })
  const ci = await udpClient(t, '127.53.9.1')
  const other = await udpClient(t, '127.0.0.1')
  const ciAnswer = await ci.ask(query('ci.only.test'))
  t.equal(rcodeOf(ciAnswer), RCODE.NOERROR)
  t.match(packet.decode(ciAnswer).answers, [{ type: 'A', data: ADDRESS }])
  t.equal(rcodeOf(await ci.ask(query('api.allowed.test'))), RCODE.NXDOMAIN, 'a named policy does not inherit the top level')
  t.equal(rcodeOf(await other.ask(query('ci.only.test'))), RCODE.NXDOMAIN, 'other clients get the default policy')
  t.match(dnsLines(proxy, (l) => l.name === 'ci.only.test'), [{ policy: 'ci', answer: 'allow' }, { policy: 'default', answer: 'deny' }])
})

t.test('the response: id, question echoed as sent, authoritative, no recursion offered; EDNS queries are answered', { skip: NETNS_SKIP }, async (t) => {
  await start(t)
  const client = await udpClient(t)
  const sent = query('Api.ALLOWED.test', 'A', 4242, { additionals: [opt()] })
  const response = await client.ask(sent)
  const decoded = packet.decode(response)
  t.equal(idOf(response), 4242)
  t.match(decoded, { flag_qr: true, flag_aa: true, flag_rd: true, flag_ra: false, questions: [{ name: 'Api.ALLOWED.test', type: 'A' }], answers: [{ name: 'Api.ALLOWED.test', type: 'A', ttl: 5, data: ADDRESS }] })
  t.equal(response.length, 12 + (sent.length - 12 - 11) + 16, 'the question, one answer (name compressed), no OPT back')
})

// ---- malformed and odd input ---------------------------------------------------------------

t.test('malformed UDP: FORMERR when the header is readable, dropped when not; the server keeps answering', { skip: NETNS_SKIP }, async (t) => {
  const { proxy } = await start(t)
  const client = await udpClient(t)
  const ok = (id: number) => query('api.allowed.test', 'A', id)
  const q = question(['api', 'allowed', 'test'])
  /** What a message got: its rcode, or "dropped" when the next response is to the query sent after it. */
  const outcome = async (msg: Buffer, id: number): Promise<number | 'dropped'> => {
    client.send(msg)
    client.send(ok(60_000 + id))
    const first = await client.next()
    if (idOf(first) === 60_000 + id) return 'dropped'
    t.equal(idOf(await client.next()), 60_000 + id, 'then the query after it is answered')
    t.equal(idOf(first), id, 'FORMERR and friends keep the id')
    return rcodeOf(first)
  }
  t.equal(await outcome(Buffer.from('hello'), 1), 'dropped', 'shorter than a header')
  t.equal(await outcome(Buffer.concat([header(2, 0x8000, 1), q]), 2), 'dropped', 'a response (QR=1): never answered, no reflection loops')
  t.equal(await outcome(Buffer.concat([header(3, 0, 2), q, q]), 3), RCODE.FORMERR, 'two questions')
  t.equal(await outcome(header(4, 0, 0), 4), RCODE.FORMERR, 'no question')
  t.equal(await outcome(Buffer.concat([header(5, 0x1000, 1), q]), 5), RCODE.NOTIMP, 'opcode STATUS')
  t.equal(await outcome(Buffer.concat([header(6, 0, 1), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]), 6), RCODE.FORMERR, 'a compression pointer in the question')
  t.equal(await outcome(Buffer.concat([header(7, 0, 1), q, Buffer.from('x')]), 7), RCODE.FORMERR, 'bytes after the question')
  t.equal(await outcome(Buffer.concat([header(8, 0, 1, 1), q]), 8), RCODE.FORMERR, 'an answer record in a query')
  t.equal(await outcome(Buffer.concat([header(9, 0, 1), q.subarray(0, q.length - 2)]), 9), RCODE.FORMERR, 'cut short')
  t.equal(await outcome(Buffer.concat([header(10, 0, 1), question(['a'.repeat(64), 'test'])]), 10), RCODE.FORMERR, 'a 64-byte label')
  const long = Array.from({ length: 5 }, () => 'a'.repeat(63))
  t.equal(await outcome(Buffer.concat([header(11, 0, 1), question(long)]), 11), RCODE.FORMERR, 'a name over 255 bytes')
  t.equal(await outcome(Buffer.concat([header(12, 0, 1, 0, 0, 1), q, Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])]), 12), RCODE.FORMERR, 'an additional record that is not OPT')
  const padded = query('api.allowed.test', 'A', 13, { additionals: [opt(520)] })
  t.equal(await outcome(padded, 13), RCODE.FORMERR, `a ${padded.length}-byte query over UDP (the limit is 512)`)

  t.equal(await outcome(Buffer.concat([header(20, 0, 1), question(['version', 'bind'], 16, 3)]), 20), RCODE.REFUSED, 'class CH: refused')
  t.equal(await outcome(Buffer.concat([header(21, 0, 1), question(['a.b', 'allowed', 'test'])]), 21), RCODE.NXDOMAIN, 'a dot inside a label is not a host name')
  t.equal(await outcome(Buffer.concat([header(22, 0, 1), question(['caf\xe9', 'test'])]), 22), RCODE.NXDOMAIN, 'bytes past ASCII')
  t.equal(await outcome(Buffer.concat([header(23, 0, 1), question(['1', '2', '3', '4'])]), 23), RCODE.NXDOMAIN, 'a numeric name')
  t.equal(await outcome(Buffer.concat([header(24, 0, 1), question([])]), 24), RCODE.NXDOMAIN, 'the root')

  await logLine(proxy, (l) => l.message === 'dns' && l.name === '.', 'the last odd query') // lines come in order
  const formerr = dnsLines(proxy, (l) => l.answer === 'formerr')
  t.equal(formerr.length, 10, 'each FORMERR is logged')
  t.ok(formerr.every((l) => l.reason === 'malformed' && l.name === undefined && typeof l.detail === 'string'), 'as malformed, with why')
  t.match(dnsLines(proxy, (l) => l.answer === 'notimp'), [{ reason: 'not-implemented', detail: 'opcode 2 is not QUERY' }])
  t.match(dnsLines(proxy, (l) => l.reason === 'invalid-name').map((l) => l.name), ['a\\046b.allowed.test.', 'caf\\233.test.', '1.2.3.4', '.'], 'names that are not host names are logged escaped')
  t.match(dnsLines(proxy, (l) => l.reason === 'class-not-in'), [{ answer: 'refused', qtype: 'TXT', name: 'version.bind' }])
})

t.test('random garbage never crashes the server or reaches an internal error', { skip: NETNS_SKIP }, async (t) => {
  const { proxy } = await start(t, { sandbox: { ...SANDBOX, dnsQueriesPerSecond: 1_000_000 } })
  const client = await udpClient(t)
  let seed = 53
  const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  const q = query('api.allowed.test', 'A', 7)
  const SENTINEL = 65_535
  // in batches, each closed by a good query: a burst of thousands would overflow the sockets' buffers
  for (let batch = 0; batch < 40; batch++) {
    for (let i = 0; i < 50; i++) {
      const msg = Buffer.from(q)
      for (let flips = 1 + Math.floor(random() * 4); flips > 0; flips--) msg[Math.floor(random() * msg.length)] = Math.floor(random() * 256)
      msg[0] = 0 // never the sentinel's id
      msg[2] = (msg[2] ?? 0) & 0x7f // QR=0 so most are parsed, not dropped
      client.send(i % 10 === 0 ? msg.subarray(0, Math.floor(random() * msg.length)) : msg)
    }
    client.send(query('api.allowed.test', 'A', SENTINEL))
    for (;;) if (idOf(await client.next()) === SENTINEL) break
  }
  t.pass('answered a good query after each of 40 batches of 50 bad ones')
  t.equal(proxy.logs().filter((l) => l.message === 'internal error').length, 0, 'no handler threw')
})

// ---- TCP -------------------------------------------------------------------------------------

t.test('TCP: length-prefixed queries, split or several in one write; garbage and oversized frames close the connection', { skip: NETNS_SKIP }, async (t) => {
  const { proxy } = await start(t)
  const one = framed(query('api.allowed.test', 'A', 1))
  const split = await tcpExchange([one.subarray(0, 1), one.subarray(1, 5), one.subarray(5)], 1)
  t.match(packet.decode(split.responses[0] ?? Buffer.alloc(12)), { id: 1, answers: [{ data: ADDRESS }] }, 'a length prefix split across writes')
  const two = await tcpExchange([Buffer.concat([framed(query('api.allowed.test', 'A', 2)), framed(query('denied.test', 'A', 3))])], 2)
  t.same(two.responses.map((r) => [idOf(r), rcodeOf(r)]), [[2, RCODE.NOERROR], [3, RCODE.NXDOMAIN]], 'two queries on one connection, answered in order')
  const afterBad = await tcpExchange([framed(Buffer.concat([header(4, 0, 2), question(['x'])])), framed(query('api.allowed.test', 'A', 5))], 2)
  t.same(afterBad.responses.map((r) => [idOf(r), rcodeOf(r)]), [[4, RCODE.FORMERR], [5, RCODE.NOERROR]], 'a FORMERR leaves the framing, and the connection, intact')

  const http = await tcpExchange([Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')], 1)
  t.same(http, { responses: [], closed: true }, 'HTTP on the DNS port: "GE" is a 18245-byte frame, over the 4096 limit: closed, nothing sent')
  const short = await tcpExchange([framed(Buffer.from('tiny'))], 1)
  t.same(short, { responses: [], closed: true }, 'a frame too short for a header: closed')
  const big = Buffer.concat([header(6, 0, 1), question(['api', 'allowed', 'test']), Buffer.alloc(4100 - 34)])
  t.same(await tcpExchange([framed(big)], 1), { responses: [], closed: true }, `a ${big.length}-byte frame: closed before it is read`)
  const padded = query('api.allowed.test', 'A', 7, { additionals: [opt(600)] })
  const overTcp = await tcpExchange([framed(padded)], 1)
  t.equal(rcodeOf(overTcp.responses[0] ?? Buffer.alloc(12)), RCODE.NOERROR, `the ${padded.length}-byte query refused over UDP is fine over TCP`)
  t.ok(dnsLines(proxy, (l) => l.transport === 'tcp').length >= 5, 'TCP queries are logged with their transport')
})

// ---- rate limit ------------------------------------------------------------------------------

t.test('rate limit per client address: a burst past dnsQueriesPerSecond is REFUSED, logged once a second, counted in /metrics', { skip: NETNS_SKIP }, async (t) => {
  const watchers = createWatchers()
  const rate = 5
  const { proxy } = await start(t, { sandbox: { ...SANDBOX, dnsQueriesPerSecond: rate } }, watchers)
  const flooder = await udpClient(t, '127.53.7.1')
  const burst = 30
  const started = performance.now()
  for (let id = 1; id <= burst; id++) flooder.send(query('api.allowed.test', 'A', id))
  const rcodes: number[] = []
  for (let i = 0; i < burst; i++) rcodes.push(rcodeOf(await flooder.next()))
  const elapsed = (performance.now() - started) / 1000
  const answered = rcodes.filter((r) => r === RCODE.NOERROR).length
  const refused = rcodes.filter((r) => r === RCODE.REFUSED).length
  // a full bucket holds `rate` queries; it refills at `rate` a second while the burst lasts
  const most = rate + Math.floor(elapsed * rate)
  t.ok(answered >= rate && answered <= most, `${answered} answered: the bucket (${rate}) and at most its refill over ${elapsed.toFixed(3)} s (${most})`)
  t.equal(answered + refused, burst, 'every other query was REFUSED')

  const neighbour = await udpClient(t, '127.53.7.2')
  t.equal(rcodeOf(await neighbour.ask(query('api.allowed.test', 'A', 999))), RCODE.NOERROR, 'another client has its own bucket')
  await logLine(proxy, (l) => l.message === 'dns' && String(l.client).startsWith('127.53.7.2:'), 'the neighbour\'s line') // lines come in order
  const limitedLines = dnsLines(proxy, (l) => l.reason === 'rate-limited')
  t.ok(limitedLines.length >= 1 && limitedLines.length <= 1 + Math.floor(elapsed), `${limitedLines.length} log line(s) for ${refused} refusals: at most one a second`)
  t.match(limitedLines[0], { answer: 'refused', name: 'api.allowed.test', client: /^127\.53\.7\.1:/ })
  const families = parsePrometheusTextFormat((await watchers.metrics.render()).text) as Array<{ name: string; metrics: Array<{ labels?: Record<string, string>; value?: string }> }>
  const counted = (labels: Record<string, string>): number =>
    Number(families.find((f) => f.name === 'proxygate_dns_queries_total')?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value ?? NaN)
  t.equal(counted({ answer: 'refused', reason: 'rate-limited' }), refused, 'every refusal is counted, logged or not')
  t.equal(counted({ answer: 'allow', reason: 'allow-rule' }), answered + 1)
})

// ---- reload, report mode, IPv6, lifecycle ----------------------------------------------------

t.test('a reload answers new queries under the new rules at once; a changed address or port warns that it needs a restart', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, upstream } = await start(t)
  const r = resolver()
  t.equal(await failure(r.resolve4('later.test')), 'ENOTFOUND', 'denied before')
  const rules = { allow: ['later.test:443'], dns: { servers: [upstream.server] }, sandbox: SANDBOX }
  proxy.reload(rules)
  t.same(await r.resolve4('later.test'), [ADDRESS], 'answered after the reload')
  t.equal(await failure(r.resolve4('api.allowed.test')), 'ENOTFOUND', 'and what the new rules leave out is denied')
  t.equal(proxy.logs().filter((l) => l.message.startsWith('sandbox DNS address or port changed')).length, 0, 'no warning while it is unchanged')
  proxy.reload({ ...rules, sandbox: { ...SANDBOX, dns: 5353 } })
  t.match(await logLine(proxy, (l) => l.message.startsWith('sandbox DNS address or port changed'), 'restart warning'), { level: 'warn', running: `${ADDRESS}:53`, configured: `${ADDRESS}:5353` })
  t.same(await r.resolve4('later.test'), [ADDRESS], 'still answering on the port it started on')
})

t.test('report mode answers what it would deny and says so', { skip: NETNS_SKIP }, async (t) => {
  const { proxy } = await start(t, { mode: 'report' })
  t.same(await resolver().resolve4('denied.test'), [ADDRESS])
  t.match(await logLine(proxy, (l) => l.message === 'dns' && l.name === 'denied.test', 'report line'), { answer: 'allow', reason: 'no-rule', wouldDeny: true, mode: 'report' })
})

t.test('an IPv6 sandbox address is answered to AAAA, and A gets no data', { skip: NETNS_SKIP }, async (t) => {
  await start(t, { sandbox: { socks: false, address: '::1', dns: 10053, http: [], tls: [] } })
  const r = resolver('[::1]:10053')
  t.same(await r.resolve6('api.allowed.test'), ['::1'])
  t.equal(await failure(r.resolve4('api.allowed.test')), 'ENODATA')
})

t.test('listen() rejects, naming the DNS listener, when its UDP or TCP port is taken; shutdown frees both', { skip: NETNS_SKIP }, async (t) => {
  const rules = { allow: ['api.allowed.test:443'], sandbox: SANDBOX }
  const udp = createSocket('udp4')
  await new Promise<void>((resolve) => udp.bind(PORT, ADDRESS, resolve))
  await t.rejects(startProxy(rules), { message: `sandbox DNS server cannot listen on ${ADDRESS}:${PORT} (UDP): bind EADDRINUSE ${ADDRESS}:${PORT}` })
  await new Promise<void>((resolve) => udp.close(resolve))
  const tcp = createServer()
  await new Promise<void>((resolve) => tcp.listen(PORT, ADDRESS, resolve))
  await t.rejects(startProxy(rules), { message: `sandbox DNS server cannot listen on ${ADDRESS}:${PORT} (TCP): listen EADDRINUSE: address already in use ${ADDRESS}:${PORT}` })
  await new Promise((resolve) => tcp.close(resolve))

  const proxy = await startProxy(rules)
  t.same(await resolver().resolve4('api.allowed.test'), [ADDRESS], 'starts once the port is free: the failed attempts left nothing bound')
  await proxy.close()
  const again = createSocket('udp4')
  await new Promise<void>((resolve) => again.bind(PORT, ADDRESS, resolve))
  again.close()
  const againTcp = createServer()
  await new Promise<void>((resolve) => againTcp.listen(PORT, ADDRESS, resolve))
  await new Promise((resolve) => againTcp.close(resolve))
  t.pass('after shutdown both ports are free')
})

t.test('no sandbox DNS without a DNS port', { skip: NETNS_SKIP }, async (t) => {
  const proxy = await startProxy({ allow: ['api.allowed.test:443'], sandbox: { ...SANDBOX, dns: false } })
  t.teardown(() => proxy.close())
  t.equal(await failure(resolver().resolve4('api.allowed.test')), 'ECONNREFUSED')
})

// ---- dashboard -------------------------------------------------------------------------------

t.test('the dashboard\'s activity shows DNS queries live, and denied names among the most denied with the rule to add', { skip: NETNS_SKIP }, async (t) => {
  const watchers = createWatchers()
  await start(t, {}, watchers)
  const live: string[] = []
  watchers.activity.subscribe((entry) => live.push(entry.kind === 'dns' ? `dns ${entry.record.name ?? ''} ${entry.record.answer}` : 'decision'))
  const r = resolver()
  await r.resolve4('api.allowed.test')
  await failure(r.resolve4('denied.test'))
  await failure(r.resolve4('denied.test'))
  t.same(live, ['dns api.allowed.test allow', 'dns denied.test deny', 'dns denied.test deny'])
  t.same(watchers.activity.recent().map((e) => e.kind), ['dns', 'dns', 'dns'])
  t.match(watchers.activity.topDenied(5), [{ target: 'denied.test (DNS)', count: 2, reason: 'no-rule', suggestion: '"denied.test:443"' }])
  t.same(watchers.activity.counters(), { allow: 0, deny: 0, error: 0 }, 'the counters stay those of connections')

  const admin = createAdmin({ host: '127.0.0.1', port: 0 }, { activity: watchers.activity, metrics: watchers.metrics, open: () => new Set(), ready: () => true, mode: () => 'enforce', rulesFile: 'rules.json', reload: () => ({ ok: true }), allow: () => ({ status: 409, body: { ok: false, message: 'not here' } }), token: 'x'.repeat(16), tokenFile: 'admin-token' })
  const { port } = await admin.listen()
  t.teardown(() => admin.close())
  const stream = await new Promise<string>((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/events', headers: { Host: `127.0.0.1:${port}` } }, (res) => {
      let text = ''
      res.on('data', (d: Buffer) => {
        text += d.toString()
        if ((text.match(/event: dns\n/g) ?? []).length === 3) {
          req.destroy()
          resolve(text)
        }
      })
    })
    req.on('error', reject)
  })
  t.match(stream, /event: dns\ndata: \{"client":"127\.0\.0\.1:\d+","transport":"udp","mode":"enforce","name":"denied\.test","qtype":"A","answer":"deny"/, 'the live stream sends them as "dns" events')
})
