// Upstream proxy chaining ("upstream" and "upstreamBypass" in rules.json): proxy-gate decides first,
// then allowed traffic leaves through a parent proxy. Two parents on loopback: a second real
// proxy-gate instance (end to end with real clients), and a tiny recording parent (a raw TCP server)
// that shows the exact bytes proxy-gate sends it and can answer anything, late or malformed.
// Corpus case I 92: no tunnel byte reaches the parent before its 2xx to CONNECT.
import { EventEmitter } from 'node:events'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect, promisify } from 'node:util'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { ProxyAgent, request } from 'undici'
import { parseConfig, parseUpstream } from '../lib/rules/config.js'
import { redactCredentials } from '../lib/policy/target.js'
import { formatRuleErrors } from '../lib/policy/rules.js'
import { parseParentHead } from '../lib/net/upstream.js'
import { startDns, type TestDns } from './helpers/dns.js'
import { completeResponses, parseResponses, rawExchange, rawSession, startHttpsUpstream, startHttpUpstream, type RawResponse } from './helpers/net.js'
import { logLine, startProxy, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))

// ---- the secret, in every form it could leak -----------------------------------------------

const USER = 'corp-user'
const PASSWORD = 'S3cret-Pa55@word!'
/** the password as written in the URL ("@" escaped) */
const URL_PASSWORD = 'S3cret-Pa55%40word!'
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`
const CLIENT_BASIC = `Basic ${Buffer.from('container:client-only-secret').toString('base64')}`
const SECRETS = [PASSWORD, URL_PASSWORD, 'S3cret', Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), USER]

const upstreamUrl = (port: number): string => `http://${USER}:${URL_PASSWORD}@127.0.0.1:${port}`

function assertNoSecret(t: Test, text: string, what: string): void {
  for (const secret of SECRETS) t.notOk(text.includes(secret), `${what}: no "${secret}"`)
}

// ---- a recording parent proxy --------------------------------------------------------------

interface ParentConnection {
  /** the first request head as received (up to and including the blank line) */
  head: string
  /** every request head on this connection (plain HTTP keeps connections alive) */
  heads: string[]
  /** every byte received when the parent began its answer */
  atReply: string | undefined
  /** every byte received so far */
  data: string
}

interface Answer {
  /** what to send back; undefined: never answer */
  readonly reply?: string
  readonly delayMs?: number
  /** after the reply: 'close' ends the connection, 'echo' sends back whatever arrives next */
  readonly then?: 'close' | 'echo' | 'hold'
}

interface RecordingParent {
  readonly port: number
  readonly conns: ParentConnection[]
  /** resolves once `until` holds after some bytes arrived, rejects if it does not within 5 s */
  received(until: () => boolean, what: string): Promise<void>
  close(): Promise<void>
}

async function recordingParent(t: Test, answer: (head: string) => Answer): Promise<RecordingParent> {
  const conns: ParentConnection[] = []
  const sockets = new Set<Socket>()
  const arrived = new EventEmitter()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    const conn: ParentConnection = { head: '', heads: [], atReply: undefined, data: '' }
    conns.push(conn)
    let echo = false
    let offset = 0
    socket.on('data', (chunk: Buffer) => {
      conn.data += chunk.toString('latin1')
      if (echo) return void socket.write(chunk)
      const end = conn.data.indexOf('\r\n\r\n', offset)
      if (end < 0) return
      const head = conn.data.slice(offset, end + 4)
      offset = end + 4
      conn.heads.push(head)
      if (conn.head === '') conn.head = head
      const a = answer(head)
      if (a.reply === undefined) return
      const send = (): void => {
        conn.atReply = conn.data
        socket.write(Buffer.from(a.reply ?? '', 'latin1'))
        if (a.then === 'close') socket.end()
        if (a.then === 'echo') {
          echo = true
          const early = conn.data.slice(offset)
          if (early !== '') socket.write(Buffer.from(early, 'latin1'))
        }
      }
      if (a.delayMs) setTimeout(send, a.delayMs)
      else send()
    })
    socket.on('data', () => arrived.emit('data')) // after the handler above has read the chunk
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const parent: RecordingParent = {
    port: (server.address() as AddressInfo).port,
    conns,
    received: (until, what) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (!until()) return
          arrived.off('data', check)
          clearTimeout(timer)
          resolve()
        }
        const timer = setTimeout(() => {
          arrived.off('data', check)
          reject(new Error(`the parent never received ${what}`))
        }, 5_000)
        arrived.on('data', check)
        check()
      }),
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
  t.teardown(() => parent.close())
  return parent
}

const OK_200 = 'HTTP/1.1 200 Connection established\r\n\r\n'
const status = (code: number, text: string, extra = ''): string => `HTTP/1.1 ${code} ${text}\r\n${extra}Content-Length: 9\r\n\r\nparent no`

// ---- fixtures ------------------------------------------------------------------------------

interface World {
  readonly dns: TestDns
  /** a port used as the destination port (a real plain HTTP origin listens there) */
  readonly port: number
  readonly origin: Awaited<ReturnType<typeof startHttpUpstream>>
}

async function world(t: Test): Promise<World> {
  const origin = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({
    'api.allowed.test': { A: ['127.0.0.1'] },
    'direct.allowed.test': { A: ['127.0.0.1'] },
    'evil.test': { A: ['127.0.0.1'] },
    'meta.allowed.test': { A: ['169.254.169.254'] },
  })
  t.teardown(async () => {
    await origin.close()
    await dns.close()
  })
  return { dns, port: origin.port, origin }
}

/** proxy-gate allowing api/direct/meta.allowed.test and loopback on the world's port, with an upstream. */
async function child(t: Test, w: World, upstream: string | undefined, extra: Record<string, unknown> = {}): Promise<TestProxy> {
  const proxy = await startProxy({
    allow: [`api.allowed.test:${w.port}`, `direct.allowed.test:${w.port}`, `meta.allowed.test:${w.port}`, `127.0.0.1:${w.port}`],
    dns: { servers: [w.dns.server], timeoutMs: 2000 },
    ...(upstream === undefined ? {} : { upstream }),
    ...extra,
  })
  t.teardown(() => proxy.close())
  return proxy
}

function connectHead(target: string, extra = ''): string {
  return `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: ${CLIENT_BASIC}\r\n${extra}\r\n`
}

/** One request as raw bytes; the answer once a whole response (or a close) is in. */
async function ask(port: number, bytes: string): Promise<RawResponse> {
  return first((await rawExchange(port, bytes, { until: (s) => completeResponses(s) >= 1 })).text)
}

function first(text: string): RawResponse {
  const r = parseResponses(text)[0]
  if (!r) throw new Error(`no response in ${JSON.stringify(text)}`)
  return r
}

/** The Proxy-Status header as parameters: error, next-hop, received-status, details. */
function proxyStatus(r: RawResponse): Record<string, string> {
  const value = r.headers['proxy-status']?.[0] ?? ''
  const out: Record<string, string> = {}
  for (const m of value.matchAll(/; ([a-z-]+)=("(?:[^"\\]|\\.)*"|[^;]+)/g)) out[m[1] ?? ''] = (m[2] ?? '').replace(/^"|"$/g, '').replace(/\\(.)/g, '$1')
  return out
}

const allLogs = (...proxies: TestProxy[]): string => proxies.map((p) => JSON.stringify(p.logs())).join('\n')

// ---- rules.json: "upstream" and "upstreamBypass" -------------------------------------------

function errorsOf(json: Record<string, unknown>): Array<[string, string, string]> {
  const parsed = parseConfig(json)
  return parsed.ok ? [] : parsed.errors.map((e) => [e.path, e.entry, e.message])
}

t.test('upstream: an http:// URL with an explicit port, credentials optional and %-decoded', async (t) => {
  const good = parseUpstream('http://corp-user:S3cret-Pa55%40word!@corp-proxy.example:8080')
  t.ok(good.ok)
  if (!good.ok) return
  t.equal(good.value.hop, 'corp-proxy.example:8080')
  t.equal(good.value.display, 'http://[redacted]@corp-proxy.example:8080', 'shown without credentials')
  t.equal(good.value.authorization(), `Basic ${Buffer.from('corp-user:S3cret-Pa55@word!').toString('base64')}`, 'Basic of user:password, %40 decoded to "@"')
  const bare = parseUpstream('http://10.0.0.5:3128/')
  t.ok(bare.ok && bare.value.authorization() === undefined && bare.value.display === 'http://10.0.0.5:3128', 'no credentials, trailing slash accepted')
  const v6 = parseUpstream('HTTP://[fd00::10]:3128')
  t.ok(v6.ok && v6.value.hop === '[fd00::10]:3128' && v6.value.host === 'fd00::10', 'IPv6 in brackets; the scheme is case-insensitive')
  const userOnly = parseUpstream('http://token@proxy:8080')
  t.ok(userOnly.ok && userOnly.value.authorization() === `Basic ${Buffer.from('token:').toString('base64')}`, 'a user without a password')

  const rows: Array<[unknown, RegExp]> = [
    ['https://corp:8443', /scheme "https" is not supported: the parent proxy must be an http:\/\/ URL/],
    ['socks5://u:p@corp:1080', /scheme "socks5" is not supported/],
    ['corp-proxy:8080', /must be a URL/],
    ['http://corp-proxy', /needs an explicit port/],
    ['http://corp-proxy:8080/proxy', /must not have a path, query or fragment/],
    ['http://corp-proxy:8080?x=1', /must not have a path, query or fragment/],
    ['http://corp-proxy:8080#f', /must not have a path, query or fragment/],
    ['http://u:p@ss@corp:8080', /"@" in the user name or password must be written as %40/],
    ['http://u:%zz@corp:8080', /bad %-escape/],
    ['http://u:%0a@corp:8080', /control character/],
    ['http://:pw@corp:8080', /need a user name/],
    ['http://corp_proxy:99999', /port "99999"/],
    ['http://127.1:8080', /not a canonical IPv4 address/],
    [8080, /must be a string/],
  ]
  for (const [value, message] of rows) {
    const r = parseUpstream(value)
    t.notOk(r.ok, `${String(value)} is refused`)
    if (!r.ok) t.match(r.error, message, String(value))
  }
})

t.test('config errors name the key and never show the credentials', async (t) => {
  const cases: Array<Record<string, unknown>> = [
    { upstream: `ftp://${USER}:${URL_PASSWORD}@corp:21` },
    { upstream: `http://${USER}:${URL_PASSWORD}@corp:8080/path` },
    { upstream: `http://${USER}:${PASSWORD}@corp:8080` },
    { upstream: `${USER}:${URL_PASSWORD}@corp:8080` },
    { upstream: `http://${USER}:pa/ss${URL_PASSWORD}@corp:8080` },
    { upstream: [`http://${USER}:${URL_PASSWORD}@corp:8080`] },
    { upstrem: `http://${USER}:${URL_PASSWORD}@corp:8080` },
    { upstream: `http://${USER}:${URL_PASSWORD}@corp`, upstreamBypass: ['x'] },
  ]
  for (const json of cases) {
    const errors = errorsOf(json)
    t.ok(errors.length > 0, `${Object.keys(json).join(',')} is an error`)
    const parsed = parseConfig(json)
    const printed = parsed.ok ? '' : formatRuleErrors(parsed.errors)
    assertNoSecret(t, printed, `validate output for ${errors[0]?.[0] ?? '?'}`)
    t.match(printed, /\[redacted\]@/, 'the entry is shown redacted')
  }
  t.equal(errorsOf({ upstream: 'https://corp:8443' })[0]?.[0], 'upstream', 'the error names the key')
  t.same(errorsOf({ upstreamBypass: ['internal.example'] }).map((e) => e[0]), ['upstreamBypass'], 'upstreamBypass needs upstream')

  t.equal(redactCredentials('"http://a:b@c:1"'), '"http://[redacted]@c:1"')
  t.equal(redactCredentials('["x","http://a:b\\"@q@c:1"]'), '["x","http://[redacted]@c:1"]', 'escaped quotes and a raw "@" do not leak a tail')
  t.equal(redactCredentials('user:pw@corp:8080'), '[redacted]@corp:8080', 'no scheme')
  t.equal(redactCredentials('"corp:8080"'), '"corp:8080"', 'nothing to hide')

  const valid = parseConfig({ upstream: upstreamUrl(3128), upstreamBypass: ['*.corp.example', 'corp.example', '10.0.0.0/8', 'fd00::/8'] })
  t.ok(valid.ok, 'a valid upstream with a bypass list')
  if (valid.ok) {
    const json = JSON.stringify(valid.value, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value))
    t.match(json, /"upstream":"http:\/\/\[redacted\]@127\.0\.0\.1:3128"/, 'JSON shows the redacted URL')
    assertNoSecret(t, json, 'JSON of the parsed config')
    assertNoSecret(t, inspect(valid.value, { depth: 10, showHidden: true }), 'inspect of the parsed config')
    t.equal(valid.value.upstreamBypass.length, 4)
  }
})

t.test('upstreamBypass: the bypass host patterns, no ports, NO_PROXY leading dots explained', async (t) => {
  const base = { upstream: 'http://corp:8080' }
  t.same(errorsOf({ ...base, upstreamBypass: '*.corp' }).map((e) => e[2]), ['"upstreamBypass" must be an array of hosts'])
  const [dot] = errorsOf({ ...base, upstreamBypass: ['.corp.example'] })
  t.equal(dot?.[0], 'upstreamBypass[0]')
  t.match(dot?.[2], /write "\*\.corp\.example" for its subdomains \(and "corp\.example" for the name itself\)/)
  t.match(errorsOf({ ...base, upstreamBypass: ['ok.example', 'corp.example:443'] }), [['upstreamBypass[1]', '"corp.example:443"', /no ports/]])
  t.match(errorsOf({ ...base, upstreamBypass: ['a*.corp'] }), [['upstreamBypass[0]', '"a*.corp"', /wildcard/]])
  t.match(errorsOf({ ...base, upstreamBypass: [42] }), [['upstreamBypass[0]', '42', /must be a string/]])
})

t.test('validate and check show the upstream redacted, and the route check would take', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'proxy-gate-upstream-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
  const run = async (args: string[]): Promise<{ code: number; out: string }> => {
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [cli, ...args])
      return { code: 0, out: stdout + stderr }
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string }
      return { code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }
    }
  }
  const good = join(dir, 'rules.json')
  writeFileSync(good, JSON.stringify({ allow: ['127.0.0.1:443', '127.0.0.2:443'], upstream: upstreamUrl(8080), upstreamBypass: ['127.0.0.2'] }))
  const validated = await run(['validate', '--rules', good])
  t.equal(validated.code, 0)
  t.match(validated.out, 'upstream: http://[redacted]@127.0.0.1:8080 (1 upstreamBypass)')
  const through = await run(['check', '127.0.0.1:443', '--rules', good])
  t.equal(through.code, 0)
  t.match(through.out, /route: +through upstream proxy 127\.0\.0\.1:8080/)
  const bypassed = await run(['check', '127.0.0.2:443', '--rules', good])
  t.match(bypassed.out, /route: +direct \(upstreamBypass\)/)
  const bad = join(dir, 'bad.json')
  writeFileSync(bad, JSON.stringify({ upstream: `https://${USER}:${URL_PASSWORD}@corp:8443`, upstraem: upstreamUrl(1) }))
  const invalid = await run(['validate', '--rules', bad])
  t.equal(invalid.code, 1)
  t.match(invalid.out, /upstream "https:\/\/\[redacted\]@corp:8443": scheme "https" is not supported/)
  for (const r of [validated, through, bypassed, invalid]) assertNoSecret(t, r.out, 'CLI output')
})

t.test('the parent response head is parsed strictly', async (t) => {
  t.equal(parseParentHead('HTTP/1.1 200 Connection established\r\n\r\n'), 200)
  t.equal(parseParentHead('HTTP/1.0 200\r\nVia: 1.1 squid\r\n\r\n'), 200, 'no reason phrase, HTTP/1.0, fields')
  t.equal(parseParentHead('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\n\r\n'), 407)
  for (const bad of [
    'HTTP/1.1 200 OK\nX: y\r\n\r\n',
    'HTTP/1.1 200 OK\r\n folded\r\n\r\n',
    'HTTP/1.1 200 OK\r\nX : y\r\n\r\n',
    'HTTP/1.1 2000 OK\r\n\r\n',
    'HTTP/2 200\r\n\r\n',
    'ICY 200 OK\r\n\r\n',
    'HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n',
    'HTTP/1.1 200 OK\r\n: empty\r\n\r\n',
  ]) {
    t.equal(parseParentHead(bad), undefined, JSON.stringify(bad))
  }
})

// ---- CONNECT through the recording parent ------------------------------------------------

t.test('CONNECT: the parent sees exactly CONNECT name:port with our credentials, and nothing before its 2xx', async (t) => {
  const w = await world(t)
  const parent = await recordingParent(t, () => ({ reply: OK_200, delayMs: 300, then: 'echo' }))
  const proxy = await child(t, w, upstreamUrl(parent.port))
  const target = `api.allowed.test:${w.port}`
  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  // the CONNECT and an optimistic payload in one write: proxy-gate must hold the payload back
  await session.send(`${connectHead(target)}OPTIMISTIC-PAYLOAD`)
  t.equal(first(await session.waitFor((s) => s.includes('\r\n\r\n'))).status, 200, 'the client gets its 200')
  t.not(parent.conns[0]?.atReply, undefined, 'only after the parent answered (non-TLS ports answer after the dial)')
  const text = await session.waitFor((s) => s.includes('OPTIMISTIC-PAYLOAD'))
  t.equal(text.slice(text.indexOf('\r\n\r\n') + 4), 'OPTIMISTIC-PAYLOAD', 'the payload went through the parent and came back')
  t.equal(parent.conns.length, 1)
  const conn = parent.conns[0]
  t.equal(conn?.head, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: ${BASIC}\r\n\r\n`, 'exact CONNECT bytes')
  t.equal(conn?.atReply, conn?.head, 'not one tunnel byte before the parent 2xx (corpus 92)')
  t.notOk(conn?.data.includes(CLIENT_BASIC), "the client's own Proxy-Authorization never reaches the parent")
  await session.send('MORE')
  await session.waitFor((s) => s.endsWith('MORE'))
  t.ok(session.text().endsWith('OPTIMISTIC-PAYLOADMORE'), 'the tunnel keeps relaying')
  session.destroy()
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'tunnel', 'closed')
  t.equal(closed.via, `127.0.0.1:${parent.port}`, 'the closed line names the parent')
  t.equal(closed.chosen, undefined, 'no chosen address: the parent chose')
  t.equal(closed.bytesFromClient, 'OPTIMISTIC-PAYLOADMORE'.length, 'the CONNECT exchange is not counted as tunnel bytes')
  t.equal(closed.bytesToClient, 'OPTIMISTIC-PAYLOADMORE'.length)
  assertNoSecret(t, allLogs(proxy), 'logs')
})

t.test('CONNECT on a TLS port: the ClientHello waits for the parent 2xx; a refusal then closes the tunnel and is logged', async (t) => {
  const w = await world(t)
  let refuse = false
  const parent = await recordingParent(t, () => (refuse ? { reply: status(403, 'Forbidden'), then: 'close' } : { reply: OK_200, delayMs: 300, then: 'hold' }))
  const proxy = await child(t, w, upstreamUrl(parent.port), { tls: { ports: [w.port] } })
  const target = `api.allowed.test:${w.port}`

  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(connectHead(target))
  await session.waitFor((s) => s.includes('\r\n\r\n'))
  t.equal(first(session.text()).status, 200, 'TLS ports answer 200 first')
  const tls = tlsConnect({ socket: session.socket, servername: 'api.allowed.test', rejectUnauthorized: false })
  tls.on('error', () => undefined)
  t.teardown(() => tls.destroy())
  const bytesAfterHead = (): number => (parent.conns[0]?.head ? parent.conns[0].data.length - parent.conns[0].head.length : 0)
  await parent.received(() => bytesAfterHead() > 0, 'the ClientHello')
  const conn = parent.conns[0]
  t.equal(conn?.head, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: ${BASIC}\r\n\r\n`)
  t.equal(conn?.atReply, conn?.head, 'the ClientHello was held until the parent answered')
  t.equal(conn?.data.charCodeAt(conn.head.length), 0x16, 'then the ClientHello went through')
  tls.destroy()

  refuse = true
  const second = await rawSession(proxy.port)
  t.teardown(() => second.destroy())
  await second.send(connectHead(target))
  await second.waitFor((s) => s.includes('\r\n\r\n'))
  const tls2 = tlsConnect({ socket: second.socket, servername: 'api.allowed.test', rejectUnauthorized: false })
  tls2.on('error', () => undefined)
  await second.closed
  t.pass('the tunnel is closed (the 200 was already sent)')
  const failed = await logLine(proxy, (l) => l.message === 'upstream failed', 'upstream failed')
  t.match(failed, { status: 502, error: 'destination_unavailable', nextHop: `127.0.0.1:${parent.port}`, detail: `upstream proxy 127.0.0.1:${parent.port} answered 403 Forbidden to CONNECT ${target}` })
  t.equal(parent.conns.length, 2, 'the refused CONNECT reached the parent')
  t.equal(parent.conns[1]?.atReply, parent.conns[1]?.head, 'the refused CONNECT got no payload either')
  assertNoSecret(t, allLogs(proxy), 'logs')
})

t.test("the parent's refusals and failures become 502/504 with Proxy-Status next-hop", async (t) => {
  const w = await world(t)
  const answers: Record<string, Answer> = {
    '403': { reply: status(403, 'Forbidden'), then: 'close' },
    '407': { reply: status(407, 'Proxy Authentication Required', 'Proxy-Authenticate: Basic realm="corp"\r\n'), then: 'close' },
    '502': { reply: status(502, 'Bad Gateway'), then: 'close' },
    '504': { reply: status(504, 'Gateway Timeout'), then: 'close' },
    bareLf: { reply: 'HTTP/1.1 200 OK\nX: y\n\n', then: 'hold' },
    fold: { reply: 'HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n', then: 'hold' },
    huge: { reply: `HTTP/1.1 200 OK\r\n${'X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(400)}\r\n`, then: 'hold' },
    garbage: { reply: 'SSH-2.0-OpenSSH_9.6\r\n\r\n', then: 'hold' },
    hangup: { reply: 'HTTP/1.1 20', then: 'close' },
    silent: {},
  }
  let which = '403'
  const parent = await recordingParent(t, () => answers[which] ?? {})
  const proxy = await child(t, w, upstreamUrl(parent.port), { limits: { connectTimeoutMs: 400 } })
  const hop = `127.0.0.1:${parent.port}`
  const target = `api.allowed.test:${w.port}`
  const rows: Array<[string, number, string, number | undefined, RegExp]> = [
    ['403', 502, 'destination_unavailable', 403, /answered 403 Forbidden to CONNECT api\.allowed\.test/],
    ['407', 502, 'proxy_configuration_error', 407, /answered 407 Proxy Authentication Required .*check the credentials in "upstream"/],
    ['502', 502, 'destination_unavailable', 502, /answered 502 Bad Gateway/],
    ['504', 504, 'destination_unavailable', 504, /answered 504 Gateway Timeout/],
    ['bareLf', 502, 'http_protocol_error', undefined, /malformed response/],
    ['fold', 502, 'http_protocol_error', undefined, /malformed response/],
    ['huge', 502, 'http_protocol_error', undefined, /response head larger than 16384 bytes/],
    ['garbage', 502, 'http_protocol_error', undefined, /malformed response/],
    ['hangup', 502, 'connection_terminated', undefined, /closed the connection before answering CONNECT/],
    ['silent', 504, 'connection_read_timeout', undefined, /did not answer CONNECT .* within 400 ms/],
  ]
  for (const [name, code, error, received, details] of rows) {
    which = name
    const before = parent.conns.length
    const res = await rawExchange(proxy.port, `${connectHead(target)}PAYLOAD`)
    const r = first(res.text)
    t.equal(r.status, code, `${name}: ${code}`)
    const ps = proxyStatus(r)
    t.equal(ps.error, error, `${name}: error type`)
    t.equal(ps['next-hop'], hop, `${name}: next-hop names the parent`)
    t.equal(ps['received-status'], received === undefined ? undefined : String(received), `${name}: received-status`)
    t.match(ps.details, details, `${name}: details`)
    t.match(r.body, /^proxy-gate: /, `${name}: a text body`)
    t.ok(res.closed, `${name}: closed`)
    assertNoSecret(t, res.text, `${name}: the response`)
    const conn = parent.conns[before]
    t.notOk(conn?.data.includes('PAYLOAD'), `${name}: the payload never reached the parent`)
    t.notOk(res.text.includes('Proxy-Authenticate') || res.text.includes('parent no'), `${name}: nothing of the parent's answer is relayed`)
  }
  await parent.close()
  const down = first((await rawExchange(proxy.port, connectHead(target))).text)
  t.equal(down.status, 502, 'parent not listening: 502')
  t.match(proxyStatus(down), { error: 'connection_refused', 'next-hop': hop, details: `upstream proxy ${hop} refused the connection` })
  assertNoSecret(t, allLogs(proxy), 'logs')
})

// ---- plain HTTP through the recording parent ----------------------------------------------

t.test('plain HTTP goes absolute-form to the parent, with our credentials and never the client ones', async (t) => {
  const w = await world(t)
  let answer: Answer = { reply: 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-From: parent\r\n\r\nfrom parent', then: 'hold' }
  const parent = await recordingParent(t, () => answer)
  const proxy = await child(t, w, upstreamUrl(parent.port))
  const hop = `127.0.0.1:${parent.port}`
  const url = `http://api.allowed.test:${w.port}/some/path?q=1`
  const r = await ask(proxy.port, `GET ${url} HTTP/1.1\r\nHost: api.allowed.test:${w.port}\r\nProxy-Authorization: ${CLIENT_BASIC}\r\nX-Client: yes\r\n\r\n`)
  t.equal(r.status, 200)
  t.equal(r.body, 'from parent')
  t.same(r.headers['x-from'], ['parent'])
  const head = parent.conns[0]?.head ?? ''
  t.ok(head.startsWith(`GET ${url} HTTP/1.1\r\n`), 'absolute-form request line')
  const lines = head.split('\r\n').map((l) => l.toLowerCase())
  t.ok(lines.includes(`host: api.allowed.test:${w.port}`), 'Host is the checked authority')
  t.same(
    lines.filter((l) => l.startsWith('proxy-authorization:')),
    [`proxy-authorization: ${BASIC.toLowerCase()}`],
    'exactly one Proxy-Authorization: the configured one',
  )
  t.notOk(head.includes(CLIENT_BASIC), "the client's credentials stay with proxy-gate")
  t.ok(lines.includes('x-client: yes'), 'end-to-end headers pass')
  t.equal(w.origin.requests.length, 0, 'the origin was not contacted directly')
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'forward', 'closed')
  t.equal(closed.via, hop)

  answer = { reply: 'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 9\r\n\r\nparent no', then: 'hold' }
  const denied = await ask(proxy.port, `GET ${url} HTTP/1.1\r\nHost: api.allowed.test:${w.port}\r\n\r\n`)
  t.equal(denied.status, 502, "the parent's 407 is our configuration problem: 502")
  t.match(proxyStatus(denied), { error: 'proxy_configuration_error', 'next-hop': hop, 'received-status': '407' })
  t.notOk('proxy-authenticate' in denied.headers, 'no Proxy-Authenticate reaches the client')
  t.notOk(denied.body.includes('parent no'))

  answer = { reply: 'HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nparent no', then: 'hold' }
  const forbidden = await ask(proxy.port, `GET ${url} HTTP/1.1\r\nHost: api.allowed.test:${w.port}\r\n\r\n`)
  t.equal(forbidden.status, 403, 'other answers are relayed (the parent cannot be told apart from the origin)')
  t.equal(forbidden.body, 'parent no')

  answer = {}
  await parent.close()
  const down = await ask(proxy.port, `GET ${url} HTTP/1.1\r\nHost: api.allowed.test:${w.port}\r\n\r\n`)
  t.equal(down.status, 502)
  t.match(proxyStatus(down), { error: 'connection_refused', 'next-hop': hop })
  assertNoSecret(t, allLogs(proxy), 'logs')
  assertNoSecret(t, JSON.stringify([denied, forbidden, down]), 'responses')
})

t.test('a denied destination never reaches the parent; the address guard still runs on the name', async (t) => {
  const w = await world(t)
  const parent = await recordingParent(t, () => ({ reply: OK_200, then: 'echo' }))
  const proxy = await child(t, w, upstreamUrl(parent.port))
  const cases: Array<[string, string, number, string]> = [
    ['CONNECT no rule', connectHead(`evil.test:${w.port}`), 403, 'http_request_denied'],
    ['CONNECT other port', connectHead(`api.allowed.test:${w.port + 1}`), 403, 'http_request_denied'],
    ['CONNECT metadata address', connectHead(`meta.allowed.test:${w.port}`), 403, 'destination_ip_prohibited'],
    ['GET no rule', `GET http://evil.test:${w.port}/ HTTP/1.1\r\nHost: evil.test:${w.port}\r\n\r\n`, 403, 'http_request_denied'],
    ['GET metadata address', `GET http://meta.allowed.test:${w.port}/ HTTP/1.1\r\nHost: meta.allowed.test:${w.port}\r\n\r\n`, 403, 'destination_ip_prohibited'],
    ['CONNECT a name no rule allows', connectHead(`nx.allowed.test:${w.port}`), 403, 'http_request_denied'],
  ]
  for (const [what, bytes, code, error] of cases) {
    const r = await ask(proxy.port, bytes.startsWith('CONNECT') ? `${bytes}PAYLOAD` : bytes)
    t.equal(r.status, code, what)
    t.equal(proxyStatus(r).error, error, `${what}: ${error}`)
    t.equal(proxyStatus(r)['next-hop'], undefined, `${what}: proxy-gate's own denial names no next hop`)
  }
  t.equal(parent.conns.length, 0, 'the parent saw no connection at all')
})

t.test('upstreamBypass destinations go direct; the rest through the parent', async (t) => {
  const w = await world(t)
  const parent = await recordingParent(t, (head) =>
    head.startsWith('CONNECT') ? { reply: OK_200, then: 'echo' } : { reply: 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nparent', then: 'hold' },
  )
  const proxy = await child(t, w, upstreamUrl(parent.port), { upstreamBypass: ['direct.allowed.test', '127.0.0.0/8'] })
  const get = async (host: string): Promise<RawResponse> =>
    await ask(proxy.port, `GET http://${host}:${w.port}/x HTTP/1.1\r\nHost: ${host}:${w.port}\r\nConnection: close\r\n\r\n`)

  const direct = await get('direct.allowed.test')
  t.equal(direct.body, 'hello GET /x', 'bypassed name: straight to the origin')
  const byIp = await get('127.0.0.1')
  t.equal(byIp.body, 'hello GET /x', 'bypassed range: straight to the origin')
  t.equal(w.origin.requests.length, 2)
  t.equal(parent.conns.length, 0, 'the parent saw neither')
  const viaParent = await get('api.allowed.test')
  t.equal(viaParent.body, 'parent', 'anything else goes to the parent')
  t.equal(parent.conns.length, 1)

  const tunnel = await rawExchange(proxy.port, `${connectHead(`direct.allowed.test:${w.port}`)}GET /t HTTP/1.1\r\nHost: direct.allowed.test\r\nConnection: close\r\n\r\n`, {
    until: (s) => s.includes('hello GET /t'),
  })
  t.ok(tunnel.text.includes('hello GET /t'), 'a bypassed CONNECT is dialled directly')
  t.equal(parent.conns.length, 1, 'still one parent connection')
  const through = await rawExchange(proxy.port, `${connectHead(`api.allowed.test:${w.port}`)}PING`, { until: (s) => s.endsWith('PING') })
  t.ok(through.text.endsWith('PING'), 'a CONNECT not bypassed goes through the parent')
  t.equal(parent.conns.length, 2)
})

// ---- a real proxy-gate as the parent --------------------------------------------------------

t.test('chained through a second proxy-gate: CONNECT, TLS with SNI checks on both, plain HTTP, and its denials', async (t) => {
  const w = await world(t)
  const https = await startHttpsUpstream('127.0.0.1', ['api.allowed.test'])
  t.teardown(() => https.close())
  const parent = await startProxy({
    allow: [`api.allowed.test:${w.port}`, `127.0.0.1:${w.port}`, `api.allowed.test:${https.port}`, `127.0.0.1:${https.port}`],
    dns: { servers: [w.dns.server], timeoutMs: 2000 },
    tls: { ports: [https.port] },
  })
  t.teardown(() => parent.close())
  // the child allows more than the parent: direct.allowed.test is the parent's to refuse
  const proxy = await child(t, w, upstreamUrl(parent.port), {
    allow: [`api.allowed.test:${w.port}`, `direct.allowed.test:${w.port}`, `127.0.0.1:${w.port}`, `api.allowed.test:${https.port}`, `127.0.0.1:${https.port}`],
    tls: { ports: [https.port] },
  })

  // HTTPS with a real client: both proxies answer 200 first and check the ClientHello's name
  const tunnelAgent = new ProxyAgent({ uri: proxy.url, token: CLIENT_BASIC, requestTls: { ca: https.tls.cert } })
  const secure = await request(`https://api.allowed.test:${https.port}/secure`, { dispatcher: tunnelAgent })
  t.equal(secure.statusCode, 200)
  t.equal(await secure.body.text(), 'hello GET /secure')
  await logLine(parent, (l) => l.message === 'decision' && l.method === 'CONNECT' && l.target === `api.allowed.test:${https.port}` && l.sni === 'api.allowed.test', 'parent decision')
  t.pass('the parent decided the CONNECT by name and checked the SNI')

  // and curl, with its own proxy credentials (proxy-gate keeps them; the parent gets the configured ones)
  const caDir = mkdtempSync(join(tmpdir(), 'proxy-gate-upstream-ca-'))
  t.teardown(() => rmSync(caDir, { recursive: true, force: true }))
  writeFileSync(join(caDir, 'ca.pem'), https.tls.cert)
  const curl = await promisify(execFile)('curl', ['-sS', '--max-time', '10', '-x', proxy.url, '--proxy-user', 'container:client-only-secret', '--cacert', join(caDir, 'ca.pem'), `https://api.allowed.test:${https.port}/curl`]).catch(
    (error: unknown) => ({ stdout: `curl failed: ${String(error)}` }),
  )
  t.equal(curl.stdout, 'hello GET /curl', 'curl through both proxies')

  // plain HTTP with a real client
  const plainAgent = new ProxyAgent({ uri: proxy.url, proxyTunnel: false, token: CLIENT_BASIC })
  t.teardown(async () => {
    await tunnelAgent.destroy()
    await plainAgent.destroy()
  })
  const plain = await request(`http://api.allowed.test:${w.port}/plain?x=1`, { dispatcher: plainAgent })
  t.equal(plain.statusCode, 200)
  t.equal(await plain.body.text(), 'hello GET /plain?x=1')
  const seen = w.origin.requests.at(-1)
  t.equal(seen?.headers.host, `api.allowed.test:${w.port}`)
  t.notOk(seen?.rawHeaders.some((h) => /proxy-authorization/i.test(h)), 'no Proxy-Authorization reaches the origin')
  await logLine(parent, (l) => l.message === 'decision' && l.method === 'GET' && l.target === `api.allowed.test:${w.port}`, 'parent GET decision')

  // a raw CONNECT to a plain port, the payload sent optimistically
  const raw = await rawExchange(proxy.port, `${connectHead(`api.allowed.test:${w.port}`)}GET /raw HTTP/1.1\r\nHost: api.allowed.test\r\nConnection: close\r\n\r\n`, {
    until: (s) => s.includes('hello GET /raw'),
  })
  t.equal(parseResponses(raw.text)[0]?.status, 200)
  t.ok(raw.text.includes('hello GET /raw'), 'the payload crossed both proxies after both 200s')

  // what the child allows and the parent denies: 502 naming the parent, with its 403
  const refused = first((await rawExchange(proxy.port, connectHead(`direct.allowed.test:${w.port}`))).text)
  t.equal(refused.status, 502)
  t.match(proxyStatus(refused), { error: 'destination_unavailable', 'next-hop': `127.0.0.1:${parent.port}`, 'received-status': '403' })
  const refusedGet = await ask(proxy.port, `GET http://direct.allowed.test:${w.port}/ HTTP/1.1\r\nHost: direct.allowed.test:${w.port}\r\n\r\n`)
  t.equal(refusedGet.status, 403, "plain HTTP: the parent's 403 is relayed as it is")
  t.match(refusedGet.body, /^proxy-gate: denied GET direct\.allowed\.test/, "(the parent's own denial text)")

  await tunnelAgent.destroy()
  await plainAgent.destroy()
  await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'tunnel' && l.via === `127.0.0.1:${parent.port}`, 'child closed via parent')
  assertNoSecret(t, allLogs(proxy, parent), 'logs of both proxies')
})

t.test('reload: a changed upstream applies to new connections; removing it goes direct; pointing it at itself is a loop', async (t) => {
  const w = await world(t)
  const first200 = await recordingParent(t, () => ({ reply: OK_200, then: 'echo' }))
  const second200 = await recordingParent(t, () => ({ reply: OK_200, then: 'echo' }))
  const rules = (upstream: string | undefined): Record<string, unknown> => ({
    allow: [`api.allowed.test:${w.port}`, `127.0.0.1:${w.port}`],
    dns: { servers: [w.dns.server], timeoutMs: 2000 },
    ...(upstream ? { upstream } : {}),
  })
  const proxy = await child(t, w, upstreamUrl(first200.port))
  const ping = async (): Promise<string> =>
    (await rawExchange(proxy.port, `${connectHead(`api.allowed.test:${w.port}`)}PING`, { until: (s) => s.endsWith('PING') || s.includes('HTTP/1.1 5') })).text

  t.ok((await ping()).endsWith('PING'))
  t.equal(first200.conns.length, 1)
  // a tunnel left open across the reload keeps its parent
  const open = await rawSession(proxy.port)
  t.teardown(() => open.destroy())
  await open.send(`${connectHead(`api.allowed.test:${w.port}`)}A`)
  await open.waitFor((s) => s.endsWith('A'))

  proxy.reload(rules(upstreamUrl(second200.port)))
  await logLine(proxy, (l) => l.message === 'upstream changed' && l.upstream === `http://[redacted]@127.0.0.1:${second200.port}`, 'upstream changed')
  t.ok((await ping()).endsWith('PING'))
  t.equal(second200.conns.length, 1, 'new tunnels use the new parent')
  await open.send('B')
  await open.waitFor((s) => s.endsWith('AB'))
  t.ok(open.text().endsWith('AB'), 'the open tunnel still works')
  open.destroy()

  proxy.reload(rules(undefined))
  const direct = await rawExchange(proxy.port, `${connectHead(`api.allowed.test:${w.port}`)}GET /d HTTP/1.1\r\nHost: api.allowed.test\r\nConnection: close\r\n\r\n`, {
    until: (s) => s.includes('hello GET /d'),
  })
  t.ok(direct.text.includes('hello GET /d'), 'without upstream: direct')
  t.equal(first200.conns.length + second200.conns.length, 3, 'no parent involved')

  proxy.reload(rules(`http://127.0.0.1:${proxy.port}`))
  const loop = first((await rawExchange(proxy.port, connectHead(`api.allowed.test:${w.port}`))).text)
  t.equal(loop.status, 502)
  t.match(proxyStatus(loop), { error: 'proxy_loop_detected', 'next-hop': `127.0.0.1:${proxy.port}` })
  const loopGet = await ask(proxy.port, `GET http://api.allowed.test:${w.port}/ HTTP/1.1\r\nHost: api.allowed.test:${w.port}\r\n\r\n`)
  t.equal(loopGet.status, 502)
  t.match(proxyStatus(loopGet), { error: 'proxy_loop_detected', 'next-hop': `127.0.0.1:${proxy.port}` })
  assertNoSecret(t, allLogs(proxy), 'logs')
})
