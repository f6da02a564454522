// A name is resolved once, by proxy-gate's own DNS ("dns.servers"): every connection goes to the
// address that decision checked and logged, never to what the system resolver would say.
// proxy-gate (dist/cli.js) runs in a private mount namespace whose /etc/hosts sends the test names
// to 127.0.0.2, where canaries count connections; the fixture DNS sends them to 11.22.33.44, where
// the origins are. Any path that resolves the name again (getaddrinfo) lands on a canary.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, type AddressInfo, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { WebSocketServer } from 'ws'
import { createCa, writeCa } from '../lib/certs/ca.js'
import { CLI_PATH, startCli, type CliLine, type RunningCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { NETNS_SKIP, selfSigned, startCanary, type Canary } from './helpers/net.js'
import { exchange, toProxy, tunnel, upgradeHead, wsExchange } from './helpers/ws-raw.js'

/** where the fixture DNS sends the names: the origins */
const ORIGIN = '11.22.33.44'
/** where the system resolver sends them inside proxy-gate's namespace: the canaries */
const SYSTEM = '127.0.0.2'
const NAMES = ['open.test', 'opened.test']

const dir = tempDir('no-second-resolve')
const hostsFile = join(dir, 'hosts')
writeFileSync(hostsFile, `127.0.0.1 localhost\n${NAMES.map((name) => `${SYSTEM} ${name}\n`).join('')}`)

/** Runs argv in a new mount namespace with hostsFile mounted over /etc/hosts. */
const inNamespace = (argv: readonly string[]): [string, ...string[]] => ['/usr/bin/setpriv', '--pdeathsig', 'KILL', 'unshare', '--mount', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hostsFile, ...argv]

/** What Node's own lookup (getaddrinfo) answers for opened.test inside such a namespace, or why it cannot run. */
function systemAnswer(): { address: string } | { skip: string } {
  const [program, ...args] = inNamespace([process.execPath, '-e', "require('node:dns').lookup('opened.test', { family: 4 }, (e, a) => console.log(e ? e.code : a))"])
  const run = spawnSync(program, args, { encoding: 'utf8' })
  if (run.error || run.status !== 0) return { skip: `needs unshare --mount and mount --bind (root): ${run.error?.message ?? run.stderr.trim()}` }
  return { address: run.stdout.trim() }
}

const system = NETNS_SKIP ? { skip: NETNS_SKIP } : systemAnswer()
const SKIP = 'skip' in system ? system.skip : false

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))

// ---- origins, canaries and a parent proxy ----------------------------------------------------------

interface Origin {
  readonly port: number
  /** request paths, and upgrade paths as `ws PATH` */
  readonly seen: string[]
}

function listening(t: Test, server: Server, host: string, port = 0): Promise<number> {
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as Server & { closeAllConnections?: () => void }).closeAllConnections?.()
      }),
  )
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port))
  })
}

/** An HTTP(S) origin on ORIGIN that answers `origin PATH` and echoes WebSocket messages. */
async function startOrigin(t: Test, tls?: { cert: string; key: string }): Promise<Origin> {
  const seen: string[] = []
  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    seen.push(req.url ?? '')
    res.end(`origin ${req.url ?? ''}`)
  }
  const server = tls ? createHttpsServer(tls, answer) : createHttpServer(answer)
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    seen.push(`ws ${req.url ?? ''}`)
    ws.on('message', (data) => ws.send(`echo: ${(data as Buffer).toString()}`))
  })
  t.teardown(() => {
    for (const c of wss.clients) c.terminate()
  })
  return { port: await listening(t, server, ORIGIN), seen }
}

interface Parent {
  readonly hop: string
  /** `CONNECT name:port` and `GET http://...` as asked */
  readonly asked: string[]
}

/** A parent proxy that sends every name to ORIGIN (as the fixture DNS does): CONNECT and absolute-form requests. */
async function startParent(t: Test): Promise<Parent> {
  const asked: string[] = []
  const server = createHttpServer((req, res) => {
    asked.push(`${req.method ?? ''} ${req.url ?? ''}`)
    const url = new URL(req.url ?? '')
    const up = httpRequest({ host: ORIGIN, port: url.port, path: `${url.pathname}${url.search}`, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    asked.push(`CONNECT ${req.url ?? ''}`)
    const origin = connect({ host: ORIGIN, port: Number(/:(\d+)$/.exec(req.url ?? '')?.[1]) }, () => {
      client.write('HTTP/1.1 200 Connection established\r\n\r\n')
      if (head.length > 0) origin.write(head)
      client.pipe(origin).pipe(client)
    })
    origin.on('error', () => client.destroy())
    client.on('error', () => origin.destroy())
    client.on('close', () => origin.destroy())
  })
  const port = await listening(t, server, '127.0.0.1')
  return { hop: `127.0.0.1:${port}`, asked }
}

// ---- clients -----------------------------------------------------------------------------------

/** proxy-gate started for one test, and the client connections made to it (closed before its log is read). */
interface Gate {
  readonly cli: RunningCli
  readonly sockets: Set<Socket>
}

// ---- the world -----------------------------------------------------------------------------------

interface World {
  readonly plain: Origin
  readonly secure: Origin
  readonly canaries: readonly Canary[]
  readonly rules: (extra: Record<string, unknown>) => string
  readonly caDir: string
  readonly caPem: string
}

async function world(t: Test): Promise<World> {
  const originTls = selfSigned(['opened.test'])
  const plain = await startOrigin(t)
  const secure = await startOrigin(t, originTls)
  // a canary on each origin port at the address the system resolver gives
  const canaries = await Promise.all([plain.port, secure.port].map((port) => startCanary(SYSTEM, port)))
  t.teardown(() => Promise.all(canaries.map((c) => c.close())))
  const dns = await startDns(Object.fromEntries(NAMES.map((name) => [name, { A: [ORIGIN] }])))
  t.teardown(() => dns.close())
  const caDir = tempDir('no-second-resolve-ca')
  const ca = await createCa()
  writeCa(caDir, ca)
  const originCa = join(caDir, 'origin.pem')
  writeFileSync(originCa, originTls.cert)
  let n = 0
  const rules = (extra: Record<string, unknown>): string =>
    writeJson(dir, `rules-${++n}.json`, {
      allow: [`open.test:${plain.port}`, { host: 'opened.test', ports: [plain.port, secure.port], methods: ['GET'], paths: ['/**'] }],
      dns: { servers: [dns.server], timeoutMs: 2000 },
      tls: { ports: [secure.port], upstreamCaFiles: [originCa] },
      limits: { shutdownGraceMs: 1000 }, // what a failure leaves open does not hold up the teardown
      ...extra,
    })
  return { plain, secure, canaries, rules, caDir, caPem: ca.certPem }
}

async function startGate(t: Test, w: World, extra: Record<string, unknown>): Promise<Gate> {
  const cli = await startCli(['start', '--rules', w.rules(extra), '--listen', '127.0.0.1:0', '--log-format', 'json', '--admin-listen', 'off', '--dir', w.caDir], {
    command: inNamespace([process.execPath, CLI_PATH]),
  })
  t.teardown(() => cli.stop())
  const sockets = new Set<Socket>()
  t.teardown(() => {
    for (const s of sockets) s.destroy()
  })
  return { cli, sockets }
}

/** Resolves once `count` lines match, failing the wait after 5 s. */
function lines(cli: RunningCli, match: (l: CliLine) => boolean, count: number, what: string): Promise<CliLine[]> {
  const all = (): CliLine[] => cli.lines.filter(match)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: ${all().length} of ${count} lines`)), 5_000)
    void cli.waitFor(() => all().length >= count).then(() => {
      clearTimeout(timer)
      resolve(all())
    })
  })
}

/**
 * Every path: plain forward, CONNECT, ws:// upgrade, and in opened tunnels (plain and TLS) a request
 * and a WebSocket upgrade each. Each must reach the origin; the canaries must see nothing.
 */
async function everyPath(t: Test, w: World, gate: Gate): Promise<void> {
  const open = `open.test:${w.plain.port}`
  const openedPlain = `opened.test:${w.plain.port}`
  const openedTls = `opened.test:${w.secure.port}`
  const tls = { servername: 'opened.test', ca: w.caPem }
  w.plain.seen.length = 0
  w.secure.seen.length = 0
  const before = w.canaries.map((c) => c.connections())

  const port = gate.cli.port
  const track = (socket: Socket): void => void gate.sockets.add(socket)
  const ok = (path: string): RegExp => new RegExp(`^HTTP/1\\.1 200 [^]*origin ${path}$`)
  const echoed = /^HTTP\/1\.1 101 [^]*echo: through/
  t.match(await exchange(await toProxy(port, track), `GET http://${open}/forward HTTP/1.1\r\nHost: ${open}\r\n\r\n`), ok('/forward'), 'plain forward')
  t.match(await exchange(await tunnel(port, open, track), `GET /connect HTTP/1.1\r\nHost: ${open}\r\n\r\n`), ok('/connect'), 'CONNECT')
  t.match(await wsExchange(await toProxy(port, track), upgradeHead(`http://${open}/upgrade`, open)), echoed, 'ws:// upgrade')

  t.match(await exchange(await tunnel(port, openedPlain, track), `GET /opened-plain HTTP/1.1\r\nHost: ${openedPlain}\r\n\r\n`), ok('/opened-plain'), 'a request in an opened tunnel')
  t.match(await wsExchange(await tunnel(port, openedPlain, track), upgradeHead('/opened-plain-ws', openedPlain)), echoed, 'a WebSocket upgrade in an opened tunnel')
  t.match(await exchange(await tunnel(port, openedTls, track, tls), `GET /opened-tls HTTP/1.1\r\nHost: ${openedTls}\r\n\r\n`), ok('/opened-tls'), 'a request in an opened TLS tunnel')
  t.match(await wsExchange(await tunnel(port, openedTls, track, tls), upgradeHead('/opened-tls-ws', openedTls)), echoed, 'a WebSocket upgrade in an opened TLS tunnel')

  t.same(w.plain.seen, ['/forward', '/connect', 'ws /upgrade', '/opened-plain', 'ws /opened-plain-ws'], 'the plain origin saw each')
  t.same(w.secure.seen, ['/opened-tls', 'ws /opened-tls-ws'], 'the TLS origin saw each')
  t.same(w.canaries.map((c, i) => c.connections() - (before[i] ?? 0)), [0, 0], 'nothing went where the system resolver points')
}

/**
 * The log of everyPath, once every connection closed: each decision allowed and resolved ORIGIN,
 * and chose it where proxy-gate dials (not through a parent); each closed line matches `closed` (`chosen` absent when it is not in `closed`).
 */
async function checkLog(t: Test, gate: Gate, closed: Record<string, unknown>): Promise<void> {
  for (const s of gate.sockets) s.destroy()
  const { cli } = gate
  // the forward, the CONNECT, the upgrade; 4 opened tunnels and the 4 requests inside them
  const decisions = await lines(cli, (l) => l.message === 'decision', 11, 'decision lines')
  for (const d of decisions) {
    const what = `decision ${String(d.method)} ${String(d.target)}${typeof d.path === 'string' ? d.path : ''}`
    t.match(d, { decision: 'allow', resolved: [ORIGIN] }, what)
    // the decision's chosen is the address proxy-gate dials: none when the parent dials
    t.equal(d.chosen, 'chosen' in closed ? ORIGIN : undefined, `${what}: chosen`)
  }
  // the forward and 2 requests in opened tunnels; the CONNECT and 4 opened tunnels; 3 upgrades
  const ends = await lines(cli, (l) => l.message === 'closed', 11, 'closed lines')
  t.same(ends.map((l) => l.kind).sort(), ['forward', 'forward', 'forward', 'tunnel', 'tunnel', 'tunnel', 'tunnel', 'tunnel', 'upgrade', 'upgrade', 'upgrade'])
  for (const end of ends) {
    t.match(end, closed, `closed ${String(end.kind)} ${String(end.id)}`)
    if (!('chosen' in closed)) t.notOk('chosen' in end, `closed ${String(end.kind)} ${String(end.id)}: no address of its own, the parent chose`)
  }
}

t.test('proxy-gate resolves names only through dns.servers: no connection follows the system resolver', { skip: SKIP }, async (t) => {
  t.same(system, { address: SYSTEM }, 'inside the namespace the system resolver disagrees with dns.servers')
  const w = await world(t)

  t.test('direct', async (t) => {
    const gate = await startGate(t, w, {})
    await everyPath(t, w, gate)
    await checkLog(t, gate, { chosen: ORIGIN, via: undefined })
  })

  t.test('through a parent proxy', async (t) => {
    const parent = await startParent(t)
    const gate = await startGate(t, w, { upstream: `http://${parent.hop}` })
    await everyPath(t, w, gate)
    const open = `open.test:${w.plain.port}`
    const opened = [`CONNECT opened.test:${w.plain.port}`, `CONNECT opened.test:${w.plain.port}`, `CONNECT opened.test:${w.secure.port}`, `CONNECT opened.test:${w.secure.port}`]
    t.same(parent.asked, [`GET http://${open}/forward`, `CONNECT ${open}`, `CONNECT ${open}`, ...opened], 'the parent was asked for each, by name')
    await checkLog(t, gate, { via: parent.hop })
  })
})
