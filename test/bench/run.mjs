#!/usr/bin/env node
// `npm run bench`: proxy-gate side by side with a direct connection, the floor (a bare Node
// CONNECT relay, test/bench/floor.mjs, and for plain HTTP a bare node:http + undici forwarder,
// test/bench/floor-http.mjs: no policy, no logs) and, when installed, Squid and tinyproxy. A benchmark tool, not a test (tap only runs test/**/*.test.ts). Method:
// every figure is a ratio measured in one run, targets interleaved over several rounds (the order
// rotates each round), median shown with min-max. Traffic stays on loopback; every process this
// starts is stopped by PID when it ends (and by the origin process if this one dies).
//
//   npm run bench                       build, then every workload (~5 minutes on 2 cores)
//   npm run bench -- --quick            1 round, short runs: a smoke test of the tool itself
//   npm run bench -- --only http,tunnels --rounds 5 --json out.json
//
// Workloads (see BENCHMARKS.md for the reading):
//   http     wrk, plain-HTTP forwarding in absolute form, keep-alive, 18-byte responses: req/s, p50/p99, CPU/request
//   bulk     CONNECT bulk download through one tunnel and through 8 at once: MB/s, CPU per GB
//   tunnels  new tunnels per second: connect, CONNECT, one small round trip, close
//   latency  fixed moderate request rate over keep-alive connections: p50/p99 and the added latency vs direct
//            (with taskset, the proxy under test alone on CPU 1, the generator and origin on CPU 0)
//   memory   RSS of each (freshly started) proxy with ~10,000 idle open tunnels: 2 s after opening, and settled
//   policy   load time and decisions/s for 100,000 rules vs 1,000 (lib functions, in a child process)
//   leaf     leaf certificate minting, uncached and cached (lib/certs/leaf.ts createLeafMinter)
import { spawn, spawnSync, fork } from 'node:child_process'
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const HERE = fileURLToPath(new URL('./', import.meta.url))
const CLI = join(ROOT, 'dist', 'cli.js')

const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    only: { type: 'string' },
    peers: { type: 'string', default: 'squid,tinyproxy' },
    connections: { type: 'string', default: '50' },
    'bulk-mib': { type: 'string' },
    'parallel-mib': { type: 'string' },
    rate: { type: 'string', default: '1000' },
    tunnels: { type: 'string', default: '10000' },
    settle: { type: 'string' },
    rules: { type: 'string', default: '100000' },
    json: { type: 'string' },
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
})

if (opts.help) {
  console.log(`usage: npm run bench -- [options]
  --rounds N          interleaved rounds per workload (default 3; 1 with --quick)
  --seconds S         length of each timed run (default 5; 2 with --quick)
  --only LIST         workloads: http,bulk,tunnels,latency,memory,policy,leaf (default: all)
  --peers LIST        peers to race when installed: squid,tinyproxy (default both; "" for none);
                      the floor always runs: test/bench/floor.mjs (a bare Node CONNECT relay) and,
                      for http and latency, test/bench/floor-http.mjs (node:http + undici)
  --connections N     wrk connections for http (default 50)
  --bulk-mib N        one-tunnel transfer size in MiB (default 256; 32 with --quick)
  --parallel-mib N    per-tunnel size for the 8-tunnel transfer in MiB (default 64; 8 with --quick)
  --rate R            requests/s for the latency workload (default 1000)
  --tunnels N         idle tunnels for the memory workload (default 10000, capped by the fd limit)
  --settle S          memory: RSS is read again after the tunnels sat idle this long (default 30; 5 with --quick)
  --rules N           rule count for the policy workload (default 100000)
  --json FILE         also write every raw figure as JSON
  --keep              keep the run folder (configs, logs) and print where it is
  --profile           instead of the workloads: proxy-gate under node --cpu-prof, wrk load on plain
                      HTTP for 2 x --seconds, then the top costs (the run folder, with the
                      .cpuprofile for Chrome DevTools, is kept)`)
  process.exit(0)
}

const QUICK = opts.quick
const ROUNDS = Number(opts.rounds ?? (QUICK ? 1 : 3))
const SECONDS = Number(opts.seconds ?? (QUICK ? 2 : 5))
const CONNS = Number(opts.connections)
const BULK_MIB = Number(opts['bulk-mib'] ?? (QUICK ? 32 : 256))
const PAR_MIB = Number(opts['parallel-mib'] ?? (QUICK ? 8 : 64))
const PAR_STREAMS = 8
const RATE = Number(opts.rate)
const SETTLE_S = Number(opts.settle ?? (QUICK ? 5 : 30))
const ALL = ['http', 'bulk', 'tunnels', 'latency', 'memory', 'policy', 'leaf']
const ONLY = new Set(opts.only ? opts.only.split(',').map((s) => s.trim()) : ALL)
for (const w of ONLY) if (!ALL.includes(w)) fail(`unknown workload "${w}" (known: ${ALL.join(', ')})`)

/** @param {string} message @returns {never} */
function fail(message) {
  console.error(`bench: ${message}`)
  process.exit(2)
}
/** @param {string} message */
const note = (message) => process.stderr.write(`${message}\n`)

// ---- small helpers ------------------------------------------------------------------------

/** @param {number[]} xs */
function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
/** @param {number[]} xs @param {number} p */
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}
const has = (/** @type {string} */ cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
const TASKSET = has('taskset')
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100

/** utime+stime of a process (all its threads), in seconds; NaN when unreadable. */
function cpuSeconds(/** @type {number} */ pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields from #3 (state) on
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK // #14 utime, #15 stime
  } catch {
    return NaN
  }
}
/** Resident set size in MB (10^6 bytes) from /proc/PID/status. */
function rssMB(/** @type {number} */ pid) {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return kb === undefined ? NaN : (Number(kb) * 1024) / 1e6
  } catch {
    return NaN
  }
}
function fdHardLimit() {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
  const hard = line?.trim().split(/\s+/)[4]
  return hard === undefined || hard === 'unlimited' ? 1_048_576 : Number(hard)
}
async function freePort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)))
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port
  await new Promise((resolve) => server.close(() => resolve(undefined)))
  return port
}
/** Resolves once something accepts on 127.0.0.1:port; rejects after `ms` or when `alive()` turns false. */
async function waitForPort(/** @type {number} */ port, /** @type {() => boolean} */ alive, ms = 15_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)))
      s.on('error', () => resolve(false))
    })
    if (ok) return
    if (!alive()) throw new Error('exited before listening')
    if (Date.now() > deadline) throw new Error(`not listening on ${port} after ${ms} ms`)
    await sleep(100)
  }
}

// ---- processes: origin, proxies -----------------------------------------------------------

/** @typedef {{ http: number, bulk: number, echo: number }} OriginPorts */
/**
 * @typedef {object} Peer
 * @property {string} name
 * @property {number} port
 * @property {number} pid
 * @property {() => Promise<void>} stop
 * @property {() => string} describe  what to show about the running peer (config, log)
 * @property {string | undefined} logFile
 */

const runDir = mkdtempSync(join(tmpdir(), 'proxy-gate-bench-'))
/** set in --profile mode: proxy-gate then runs under node --cpu-prof and writes its profile here */
let profileDir = /** @type {string | undefined} */ (undefined)
chmodSync(runDir, 0o755) // squid and tinyproxy drop root for "proxy" / "nobody" and must reach their folders
/** @type {import('node:child_process').ChildProcess} */
let origin
/** @type {Set<Peer>} */
const running = new Set()

async function startOrigin() {
  origin = fork(join(HERE, 'origin.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  return /** @type {Promise<OriginPorts>} */ (
    new Promise((resolve, reject) => {
      origin.once('message', (/** @type {any} */ msg) => (msg?.ready ? resolve(msg.ready) : reject(new Error('origin: unexpected message'))))
      origin.once('exit', (code) => reject(new Error(`origin exited (${code})`)))
    })
  )
}

/**
 * Spawns a proxy process, waits until it listens, and registers it with the origin's watchdog.
 * @param {string} name @param {string} command @param {string[]} args @param {number} port
 * @param {{ cwd?: string, stdout?: number | 'ignore', logFile?: string, describe?: () => string }} [more]
 * @returns {Promise<Peer>}
 */
async function startPeer(name, command, args, port, more = {}) {
  const errFile = join(runDir, `${name}.stderr`)
  const errFd = openSync(errFile, 'w')
  const child = spawn(command, args, { cwd: more.cwd ?? runDir, stdio: ['ignore', more.stdout ?? 'ignore', errFd] })
  closeSync(errFd)
  if (typeof more.stdout === 'number') closeSync(more.stdout)
  let exited = false
  const exitedP = new Promise((resolve) => child.once('exit', () => ((exited = true), resolve(undefined))))
  const pid = /** @type {number} */ (child.pid)
  origin.send({ watch: pid })
  try {
    await waitForPort(port, () => !exited)
  } catch (error) {
    child.kill('SIGKILL')
    origin.send({ unwatch: pid })
    const tail = existsSync(errFile) ? readFileSync(errFile, 'utf8').split('\n').slice(-15).join('\n') : ''
    throw new Error(`${name} did not start: ${/** @type {Error} */ (error).message}\n${tail}`)
  }
  /** @type {Peer} */
  const peer = {
    name,
    port,
    pid,
    logFile: more.logFile,
    describe: more.describe ?? (() => ''),
    stop: async () => {
      running.delete(peer)
      if (!exited) {
        child.kill('SIGTERM')
        const killer = setTimeout(() => child.kill('SIGKILL'), 12_000)
        await exitedP
        clearTimeout(killer)
      }
      origin.send({ unwatch: pid })
    },
  }
  running.add(peer)
  return peer
}

/**
 * A realistic rules file: the shipped rules.json entries, a few hundred more (exact names,
 * wildcards, CIDRs, on the usual ports), a few deny rules, and the loopback origin ports that
 * the bench needs (an IP rule is the only way to allow loopback, by design).
 * @param {OriginPorts} ports
 */
function benchRules(ports) {
  const shipped = JSON.parse(readFileSync(join(ROOT, 'rules.json'), 'utf8'))
  const allow = [...shipped.allow]
  for (let i = 0; i < 150; i++) allow.push(i % 3 ? `svc-${i}.internal-apps.example.com:443` : { host: `api-${i}.partner.example.net`, ports: [443, 8443], note: `partner API ${i}` })
  for (let i = 0; i < 100; i++) allow.push(`*.tenant-${i}.saas.example.org:443`)
  for (let i = 0; i < 50; i++) allow.push(`${23 + (i % 7)}.${40 + i}.${i}.0/24:443`)
  allow.push(`127.0.0.1:${ports.http}`, `127.0.0.1:${ports.bulk}`, `127.0.0.1:${ports.echo}`)
  return {
    listen: shipped.listen,
    mode: 'enforce',
    allow,
    deny: ['gist.github.com:*', '*.ads.example.com', '23.40.7.0/24'],
    bypass: shipped.bypass,
    dns: shipped.dns,
    // the default maxConnections (4096) would refuse the memory workload's ~10,000 tunnels
    limits: { maxConnections: 25_000 },
  }
}

/** The bare Node relay (CONNECT only): what proxy-gate's tunnels cost above Node itself. @returns {Promise<Peer>} */
async function startFloor() {
  const port = await freePort()
  const args = [join(HERE, 'floor.mjs'), String(port)]
  return startPeer('floor', process.execPath, args, port, { describe: () => `node ${args.join(' ')} (CONNECT only: no policy, no logs)` })
}

/** The bare plain-HTTP forwarder (node:http + undici): the floor of the HTTP and latency workloads. @returns {Promise<Peer>} */
async function startHttpFloor() {
  const port = await freePort()
  const args = [join(HERE, 'floor-http.mjs'), String(port)]
  return startPeer('floor-http', process.execPath, args, port, { cwd: ROOT, describe: () => `node ${args.join(' ')} (plain HTTP only: node:http + undici, no policy, no logs)` })
}

/** @param {OriginPorts} ports @returns {Promise<Peer>} */
async function startProxyGate(ports) {
  if (!existsSync(CLI)) fail(`${CLI} is missing: run "npm run build" first (npm run bench does)`)
  const port = await freePort()
  const dir = join(runDir, 'proxy-gate')
  mkdirSync(dir, { recursive: true })
  const rulesFile = join(dir, 'rules.json')
  const rules = benchRules(ports)
  writeFileSync(rulesFile, JSON.stringify(rules, null, 2))
  // not in the rules folder: its watcher would wake on every write
  const logFile = join(runDir, 'proxy-gate.log')
  // default log level (info), JSON lines to a file: the counterpart of Squid's access log
  const args = [CLI, 'start', '--rules', rulesFile, '--listen', `127.0.0.1:${port}`, '--log-format', 'json']
  // builds with the admin listener (metrics, dashboard) get it on a free port, as it runs by default
  if (readFileSync(CLI, 'utf8').includes("'admin-listen'")) args.push('--admin-listen', `127.0.0.1:${await freePort()}`, '--admin-token-file', join(dir, 'admin-token'))
  // experiments: BENCH_PROXY_GATE_ARGS="--log-level warn" adds arguments to "proxy-gate start",
  args.push(...(process.env.BENCH_PROXY_GATE_ARGS ?? '').split(' ').filter(Boolean))
  // and BENCH_NODE_ARGS="--max-semi-space-size=32" flags to the node that runs it
  const extra = [...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])]
  return startPeer('proxy-gate', process.execPath, [...extra, ...args], port, {
    cwd: dir,
    stdout: openSync(logFile, 'a'),
    logFile,
    describe: () => `node ${args.join(' ')} (${rules.allow.length} allow + ${rules.deny.length} deny rules)`,
  })
}

async function startSquid() {
  const port = await freePort()
  const dir = join(runDir, 'squid')
  mkdirSync(dir, { recursive: true })
  const conf = join(dir, 'squid.conf')
  writeFileSync(
    conf,
    [
      `http_port 127.0.0.1:${port}`,
      'visible_hostname bench-squid',
      'acl localhost_src src 127.0.0.1/32',
      'acl loop_dst dst 127.0.0.1/32',
      'http_access allow localhost_src loop_dst',
      'http_access deny all',
      'cache deny all',
      'cache_mem 8 MB',
      'pid_filename none',
      `access_log stdio:${dir}/access.log`,
      'cache_store_log none',
      `cache_log ${dir}/cache.log`,
      `coredump_dir ${dir}`,
      'shutdown_lifetime 1 seconds',
      'via off',
      'forwarded_for delete',
      'pinger_enable off',
      `max_filedescriptors ${fdHardLimit()}`,
      '',
    ].join('\n'),
  )
  if (process.getuid?.() === 0) chownTree(dir, 'proxy') // squid started as root works as user "proxy"
  return startPeer('squid', 'squid', ['-N', '-f', conf], port, { logFile: `${dir}/access.log`, describe: () => `squid -N -f ${conf}` })
}

async function startTinyproxy(/** @type {number} */ maxClients) {
  const port = await freePort()
  const dir = join(runDir, 'tinyproxy')
  mkdirSync(dir, { recursive: true })
  const conf = join(dir, 'tinyproxy.conf')
  const root = process.getuid?.() === 0
  writeFileSync(
    conf,
    [
      ...(root ? ['User nobody', 'Group nogroup'] : []),
      `Port ${port}`,
      'Listen 127.0.0.1',
      'Timeout 600',
      'Allow 127.0.0.1',
      `MaxClients ${maxClients}`,
      'LogLevel Connect', // its access log: one line per connection and per request
      `LogFile "${dir}/tinyproxy.log"`,
      'DisableViaHeader Yes',
      '',
    ].join('\n'),
  )
  if (root) chownTree(dir, 'nobody')
  return startPeer('tinyproxy', 'tinyproxy', ['-d', '-c', conf], port, { logFile: `${dir}/tinyproxy.log`, describe: () => `tinyproxy -d -c ${conf}` })
}

function chownTree(/** @type {string} */ dir, /** @type {string} */ user) {
  const id = spawnSync('id', ['-u', user], { encoding: 'utf8' })
  const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' })
  if (id.status !== 0 || gid.status !== 0) return
  chownSync(dir, Number(id.stdout), Number(gid.stdout))
}

// ---- load generators ----------------------------------------------------------------------

/** @typedef {{ kind: 'direct' } | { kind: 'proxy', peer: Peer }} Route */
/** @typedef {{ name: string, route: Route }} Target */

/**
 * wrk against the origin, directly (origin-form) or through a proxy (absolute-form request line,
 * the Lua trick from METHOD.md); a `done` hook prints the figures as JSON.
 * @param {Target} target @param {number} originPort @param {number} seconds
 */
function runWrk(target, originPort, seconds) {
  const origin = `127.0.0.1:${originPort}`
  const proxied = target.route.kind === 'proxy'
  const script = join(runDir, `wrk-${proxied ? 'abs' : 'direct'}.lua`)
  writeFileSync(
    script,
    `wrk.path = "${proxied ? `http://${origin}/` : '/'}"
wrk.headers["Host"] = "${origin}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
`,
  )
  const port = target.route.kind === 'proxy' ? target.route.peer.port : originPort
  const pid = target.route.kind === 'proxy' ? target.route.peer.pid : undefined
  const cpu0 = pid ? cpuSeconds(pid) : NaN
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', ['-t1', `-c${CONNS}`, `-d${seconds}s`, '--timeout', '5s', '-s', script, `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('exit', () => {
      const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN
      const m = /WRKJSON (\{.*\})/.exec(out)
      if (!m) return reject(new Error(`wrk output not understood:\n${out}`))
      const r = JSON.parse(m[1])
      const secs = r.durationUs / 1e6
      resolve({
        rps: r.requests / secs,
        p50Ms: r.p50Us / 1000,
        p99Ms: r.p99Us / 1000,
        cpuUsPerReq: (cpu * 1e6) / r.requests,
        requests: r.requests,
        errors: { connect: r.connect, read: r.read, write: r.write, status: r.status, timeout: r.timeout },
      })
    })
  })
}

/**
 * A client socket at the origin's `destPort`: directly, or through the proxy with CONNECT (the
 * 200 and its head consumed; anything after it is pushed back into the socket).
 * @param {Route} route @param {number} destPort @returns {Promise<import('node:net').Socket>}
 */
function openTunnel(route, destPort) {
  return new Promise((resolve, reject) => {
    const port = route.kind === 'proxy' ? route.peer.port : destPort
    const socket = connect({ port, host: '127.0.0.1', noDelay: true })
    const timer = setTimeout(() => onError(new Error('no tunnel within 10 s')), 10_000)
    const onError = (/** @type {Error} */ e) => (clearTimeout(timer), socket.destroy(), reject(e))
    socket.once('error', onError)
    socket.once('connect', () => {
      if (route.kind === 'direct') {
        clearTimeout(timer)
        socket.off('error', onError)
        return resolve(socket)
      }
      socket.write(`CONNECT 127.0.0.1:${destPort} HTTP/1.1\r\nHost: 127.0.0.1:${destPort}\r\n\r\n`)
      let head = Buffer.alloc(0)
      const onData = (/** @type {Buffer} */ chunk) => {
        head = Buffer.concat([head, chunk])
        const end = head.indexOf('\r\n\r\n')
        if (end < 0) return
        socket.off('data', onData)
        socket.off('end', onEnd)
        socket.pause()
        const status = head.subarray(0, head.indexOf('\r\n')).toString('latin1')
        if (!/^HTTP\/1\.[01] 200/.test(status)) return onError(new Error(`CONNECT answered "${status}"`))
        if (head.length > end + 4) socket.unshift(head.subarray(end + 4))
        clearTimeout(timer)
        socket.off('error', onError)
        resolve(socket)
      }
      const onEnd = () => onError(new Error('closed before answering CONNECT'))
      socket.on('data', onData)
      socket.once('end', onEnd)
    })
  })
}

/** Bulk download through `streams` tunnels of `bytes` each: MB/s over the whole transfer. @param {Target} target @param {number} bulkPort @param {number} bytes @param {number} streams */
async function runBulk(target, bulkPort, bytes, streams) {
  const sockets = await Promise.all(Array.from({ length: streams }, () => openTunnel(target.route, bulkPort)))
  const pid = target.route.kind === 'proxy' ? target.route.peer.pid : undefined
  const cpu0 = pid ? cpuSeconds(pid) : NaN
  const t0 = process.hrtime.bigint()
  const received = await Promise.all(
    sockets.map(
      (socket) =>
        new Promise((resolve, reject) => {
          let got = 0
          socket.on('data', (/** @type {Buffer} */ chunk) => (got += chunk.length))
          socket.once('error', reject)
          socket.once('end', () => (socket.destroy(), resolve(got)))
          socket.write(`SEND ${bytes}\n`)
          socket.resume()
        }),
    ),
  )
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  const total = received.reduce((a, b) => a + b, 0)
  if (total !== bytes * streams) throw new Error(`${target.name}: received ${total} of ${bytes * streams} bytes`)
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN
  return { mbps: total / secs / 1e6, seconds: secs, cpuMsPerGB: (cpu * 1000) / (total / 1e9) }
}

/** Round trip of a few bytes in an open tunnel. @param {import('node:net').Socket} socket */
function roundTrip(socket, payload = 'ping\n') {
  return new Promise((resolve, reject) => {
    let got = 0
    const fail = (/** @type {Error} */ e) => (clearTimeout(timer), socket.destroy(), reject(e))
    const timer = setTimeout(() => fail(new Error('no echo within 10 s')), 10_000)
    const onData = (/** @type {Buffer} */ chunk) => {
      got += chunk.length
      if (got < payload.length) return
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('error', fail)
      socket.off('end', onEnd)
      socket.pause()
      resolve(undefined)
    }
    const onEnd = () => fail(new Error('tunnel closed during the round trip'))
    socket.on('data', onData)
    socket.once('error', fail)
    socket.once('end', onEnd)
    socket.write(payload)
    socket.resume()
  })
}

/** New tunnels per second: `concurrency` loops of connect, CONNECT, round trip, close. @param {Target} target @param {number} echoPort @param {number} seconds */
async function runTunnels(target, echoPort, seconds, concurrency = 50) {
  const pid = target.route.kind === 'proxy' ? target.route.peer.pid : undefined
  const cpu0 = pid ? cpuSeconds(pid) : NaN
  const t0 = Date.now()
  const end = t0 + seconds * 1000
  let done = 0
  let errors = 0
  /** @type {string | undefined} */
  let firstError
  const loop = async () => {
    while (Date.now() < end) {
      try {
        const socket = await openTunnel(target.route, echoPort)
        await roundTrip(socket)
        socket.end()
        socket.resume() // read the proxy's FIN
        await new Promise((resolve) => (socket.destroyed ? resolve(undefined) : socket.once('close', resolve)))
        done++
      } catch (error) {
        errors++
        firstError ??= /** @type {Error} */ (error).message
        await sleep(5)
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
  const secs = (Date.now() - t0) / 1000
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN
  return { perSecond: done / secs, tunnels: done, errors, firstError, cpuUsPerTunnel: (cpu * 1e6) / done }
}

/**
 * Requests at a fixed rate over keep-alive connections (reopened when a server closes them):
 * latency from writing the request to the last byte of the response.
 * @param {Target} target @param {number} httpPort @param {number} seconds @param {number} rate
 */
async function runLatency(target, httpPort, seconds, rate) {
  const pinned = pinForLatency(target)
  try {
    return await sendAtRate(target, httpPort, seconds, rate)
  } finally {
    pinned.undo()
  }
}

/**
 * Latency at a low rate is mostly scheduling: with the generator, the origin and the proxy on two
 * cores, any of them waits for a core now and then, and that wait lands in p99. When taskset is
 * there, the proxy under test gets CPU 1 to itself (all its threads) and the rest shares CPU 0,
 * the same for every target (direct too), for this workload only.
 * @param {Target} target
 */
function pinForLatency(target) {
  const all = `0-${cpus().length - 1}`
  const pids = [process.pid, /** @type {number} */ (origin.pid)]
  const proxy = target.route.kind === 'proxy' ? target.route.peer.pid : undefined
  const set = (/** @type {number} */ pid, /** @type {string} */ cpu) => spawnSync('taskset', ['-a', '-p', '-c', cpu, String(pid)], { stdio: 'ignore' }).status === 0
  if (cpus().length < 2 || !TASKSET) return { undo: () => {} }
  for (const pid of pids) set(pid, '0')
  if (proxy) set(proxy, '1')
  return {
    undo: () => {
      for (const pid of [...pids, ...(proxy ? [proxy] : [])]) set(pid, all)
    },
  }
}

/** @param {Target} target @param {number} httpPort @param {number} seconds @param {number} rate */
async function sendAtRate(target, httpPort, seconds, rate) {
  const origin = `127.0.0.1:${httpPort}`
  const proxied = target.route.kind === 'proxy'
  const port = target.route.kind === 'proxy' ? target.route.peer.port : httpPort
  const request = Buffer.from(`GET ${proxied ? `http://${origin}/` : '/'} HTTP/1.1\r\nHost: ${origin}\r\nUser-Agent: proxy-gate-bench\r\n\r\n`)
  const pid = target.route.kind === 'proxy' ? target.route.peer.pid : undefined
  /** @type {number[]} */
  const latencies = []
  let errors = 0
  let inFlight = 0
  // false once the server is seen closing connections after a response (tinyproxy does): then
  // every request gets a new connection, as with "Connection: close"
  let reuse = true
  /** @typedef {{ socket: import('node:net').Socket, busy: boolean, dead: boolean, served: number, buf: Buffer, started: bigint }} Conn */
  /** @type {Conn[]} */
  const idle = []
  const open = () => {
    /** @type {Conn} */
    const conn = { socket: connect({ port, host: '127.0.0.1', noDelay: true }), busy: false, dead: false, served: 0, buf: Buffer.alloc(0), started: 0n }
    const finish = (/** @type {boolean} */ ok, /** @type {boolean} */ keep) => {
      if (conn.busy) {
        conn.busy = false
        conn.served++
        inFlight--
        if (ok) latencies.push(Number(process.hrtime.bigint() - conn.started) / 1e6)
        else errors++
      }
      if (keep && reuse && !conn.dead) idle.push(conn)
      else {
        conn.dead = true
        conn.socket.destroy()
      }
    }
    conn.socket.on('data', (chunk) => {
      conn.buf = conn.buf.length ? Buffer.concat([conn.buf, chunk]) : chunk
      const end = conn.buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = conn.buf.subarray(0, end).toString('latin1')
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)
      if (!length) return finish(false, false)
      if (conn.buf.length < end + 4 + Number(length[1])) return
      conn.buf = Buffer.alloc(0)
      const close = /\r\nconnection:\s*close/i.test(head) || (head.startsWith('HTTP/1.0') && !/\r\nconnection:\s*keep-alive/i.test(head))
      finish(head.startsWith('HTTP/1.1 200') || head.startsWith('HTTP/1.0 200'), !close)
    })
    const onGone = () => {
      if (conn.dead) return
      if (conn.served > 0) reuse = false // the server closed a connection it had answered on
      if (conn.busy && conn.served > 0 && conn.buf.length === 0) {
        // closed as we reused it, before any answer: send again on a new connection, as HTTP clients do
        conn.dead = true
        conn.busy = false
        inFlight--
        return send(conn.started)
      }
      finish(false, false)
    }
    conn.socket.on('error', onGone)
    conn.socket.on('close', onGone)
    return conn
  }
  const send = (/** @type {bigint | undefined} */ started) => {
    let conn = idle.pop()
    while (conn?.dead) conn = idle.pop()
    conn ??= open()
    conn.busy = true
    inFlight++
    conn.started = started ?? process.hrtime.bigint()
    conn.socket.write(request)
  }
  // warm the connections up, then send on schedule
  for (let i = 0; i < 8; i++) idle.push(open())
  await sleep(200)
  const cpu0 = pid ? cpuSeconds(pid) : NaN
  const t0 = performance.now()
  let sent = 0
  const total = Math.round(seconds * rate)
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000))
    while (sent < due) {
      send(undefined)
      sent++
    }
    await sleep(1)
  }
  const drainBy = Date.now() + 5_000
  while (inFlight > 0 && Date.now() < drainBy) await sleep(5)
  const cpu = pid ? cpuSeconds(pid) - cpu0 : NaN
  for (const c of idle) c.socket.destroy()
  return { p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), count: latencies.length, errors: errors + inFlight, cpuUsPerReq: (cpu * 1e6) / latencies.length }
}

/** RSS of a proxy with `n` idle tunnels open (each did one round trip end to end). @param {Peer} peer @param {number} echoPort @param {number} n */
async function runIdleTunnels(peer, echoPort, n) {
  await sleep(1_000)
  const before = rssMB(peer.pid)
  /** @type {import('node:net').Socket[]} */
  const sockets = []
  let errors = 0
  /** @type {string | undefined} */
  let firstError
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      try {
        const socket = await openTunnel({ kind: 'proxy', peer }, echoPort)
        await roundTrip(socket, 'x')
        socket.on('error', () => undefined)
        sockets.push(socket)
      } catch (error) {
        errors++
        firstError ??= /** @type {Error} */ (error).message
      }
    }
  }
  await Promise.all(Array.from({ length: 100 }, worker))
  const opened = Date.now()
  const rssNow = async () => {
    const samples = []
    for (let i = 0; i < 5; i++) {
      samples.push(rssMB(peer.pid))
      await sleep(200)
    }
    return median(samples)
  }
  await sleep(2_000)
  const after = await rssNow()
  // idle long enough for a garbage-collected runtime to give back what the burst of opening took
  await sleep(Math.max(0, opened + SETTLE_S * 1_000 - Date.now()))
  const settled = await rssNow()
  const open = sockets.length
  for (const s of sockets) s.destroy()
  await sleep(1_000)
  const perTunnel = (/** @type {number} */ mb) => ((mb - before) * 1e3) / open
  const projected = (/** @type {number} */ mb) => before + ((mb - before) * 10_000) / open
  return {
    idleMB: before,
    withTunnelsMB: after,
    settledMB: settled,
    tunnels: open,
    errors,
    firstError,
    kbPerTunnel: perTunnel(after),
    kbPerTunnelSettled: perTunnel(settled),
    projected10kMB: projected(after),
    projected10kSettledMB: projected(settled),
  }
}

/** Runs a micro-benchmark child (policy, leaf) and returns its JSON. @param {string[]} args */
function runMicro(args) {
  const r = spawnSync(process.execPath, [join(HERE, 'micro.mjs'), ...args], { encoding: 'utf8', maxBuffer: 1 << 24 })
  if (r.status !== 0) {
    // the figures measured so far are still reported; the run fails at the end
    note(`micro.mjs ${args.join(' ')} failed, its section is left out:\n${r.stderr}`)
    process.exitCode = 1
    return undefined
  }
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}')
}

// ---- orchestration ------------------------------------------------------------------------

/**
 * Runs `fn` for every target, `rounds` times, rotating the order each round (A B C, B C A, ...).
 * @template T @param {string} label @param {Target[]} targets @param {(t: Target) => Promise<T>} fn
 * @returns {Promise<Map<string, T[]>>}
 */
async function interleave(label, targets, fn, rounds = ROUNDS) {
  /** @type {Map<string, T[]>} */
  const out = new Map(targets.map((t) => [t.name, []]))
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(i + r) % targets.length]
      const result = await fn(t)
      out.get(t.name)?.push(result)
      note(`  ${label} round ${r + 1}/${rounds} ${t.name}: ${brief(result)}`)
    }
  }
  return out
}
/** @param {any} r */
function brief(r) {
  return Object.entries(r)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => `${k}=${v >= 100 ? Math.round(v) : v.toFixed(3)}`)
    .join(' ')
}

/** @typedef {{ metric: string, better: 'higher' | 'lower', cells: Record<string, number[]>, unit?: string, digits?: number }} Row */
/** @type {Array<{ title: string, rows: Row[], notes: string[] }>} */
const sections = []
/** @type {Record<string, unknown>} */
const raw = {}

/** @param {Map<string, any[]>} results @param {string} key */
const pick = (results, key) => Object.fromEntries([...results].map(([name, rs]) => [name, rs.map((r) => r[key])]))

/**
 * Top costs of a V8 .cpuprofile: self time per function, inclusive time per function (each
 * sample counted once per function on its stack), and inclusive time per area (node_modules
 * package, dist/ module, Node internals).
 * @param {string} file
 */
function summariseProfile(file) {
  /** @type {{ nodes: Array<{ id: number, callFrame: { functionName: string, url: string, lineNumber: number }, children?: number[] }>, samples: number[], timeDeltas: number[] }} */
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  /** @type {Map<number, number>} */
  const parent = new Map()
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const where = (/** @type {string} */ url) => {
    if (url === '') return ''
    const mod = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
    if (mod) return mod[1]
    const dist = /\/dist\/(.+)$/.exec(url)
    if (dist) return `dist/${dist[1]}`
    return url.startsWith('node:') ? url.split('/').slice(0, 2).join('/') : url
  }
  const key = (/** @type {typeof prof.nodes[number]} */ n) => `${n.callFrame.functionName || '(anonymous)'} ${where(n.callFrame.url)}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''}`
  /** @type {Map<string, number>} */ const self = new Map()
  /** @type {Map<string, number>} */ const total = new Map()
  /** @type {Map<string, number>} */ const area = new Map()
  let all = 0
  let idle = 0
  prof.samples.forEach((id, i) => {
    const dt = (prof.timeDeltas[i + 1] ?? prof.timeDeltas[i] ?? 0) / 1000 // ms
    const node = byId.get(id)
    if (!node) return
    if (node.callFrame.functionName === '(idle)') return void (idle += dt)
    all += dt
    self.set(key(node), (self.get(key(node)) ?? 0) + dt)
    const seen = new Set()
    const areas = new Set()
    for (let cur = /** @type {number | undefined} */ (id); cur !== undefined; cur = parent.get(cur)) {
      const n = /** @type {typeof prof.nodes[number]} */ (byId.get(cur))
      const k = key(n)
      if (!seen.has(k)) (seen.add(k), total.set(k, (total.get(k) ?? 0) + dt))
      const a = where(n.callFrame.url) || n.callFrame.functionName
      if (a && !areas.has(a)) (areas.add(a), area.set(a, (area.get(a) ?? 0) + dt))
    }
  })
  const top = (/** @type {Map<string, number>} */ m, /** @type {number} */ n) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `  ${((100 * v) / all).toFixed(1).padStart(5)}%  ${k}`)
  return [
    `busy ${(all / 1000).toFixed(1)} s, idle ${(idle / 1000).toFixed(1)} s (percentages are of busy time)`,
    '', 'self time, top 30:', ...top(self, 30),
    '', 'inclusive time by area (package, dist module, Node internals), top 25:', ...top(area, 25),
    '', 'inclusive time by function, top 40:', ...top(total, 40),
  ].join('\n')
}

/**
 * --profile: proxy-gate under --cpu-prof with one workload (http by default; --only tunnels or
 * --only latency for those), then the top costs.
 */
async function profile() {
  const workload = opts.only ? (['http', 'tunnels', 'latency'].find((w) => ONLY.has(w)) ?? fail('--profile works with --only http, tunnels or latency')) : 'http'
  if (workload === 'http' && !has('wrk')) fail('--profile needs wrk: apt-get update && apt-get install -y wrk')
  opts.keep = true
  profileDir = join(runDir, 'prof')
  const ports = await startOrigin()
  const pg = await startProxyGate(ports)
  const target = { name: 'proxy-gate', route: /** @type {Route} */ ({ kind: 'proxy', peer: pg }) }
  const run = (/** @type {number} */ secs) =>
    workload === 'http' ? runWrk(target, ports.http, secs) : workload === 'tunnels' ? runTunnels(target, ports.echo, secs) : runLatency(target, ports.http, secs, RATE)
  await run(1)
  const r = await run(SECONDS * 2)
  note(`profile run: ${brief(r)}`)
  await pg.stop()
  origin.send({ stop: true })
  origin.disconnect()
  const files = existsSync(profileDir) ? readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile')) : []
  if (files.length === 0) fail(`no .cpuprofile in ${profileDir}`)
  const file = join(profileDir, /** @type {string} */ (files[0]))
  const what = { http: `wrk -t1 -c${CONNS} -d${SECONDS * 2}s absolute-form`, tunnels: `new tunnels for ${SECONDS * 2}s`, latency: `${RATE} requests/s for ${SECONDS * 2}s` }[workload]
  console.log(`proxy-gate under node --cpu-prof, ${what}: ${brief(r)} (slower than without the profiler)`)
  console.log(`profile: ${file} (open it in Chrome DevTools > Performance, or VS Code)\n`)
  console.log(summariseProfile(file))
}

async function main() {
  if (opts.profile) return profile()
  const missing = []
  const wanted = new Set((opts.peers ?? '').split(',').map((s) => s.trim()).filter(Boolean))
  const peersAvailable = { squid: wanted.has('squid') && has('squid'), tinyproxy: wanted.has('tinyproxy') && has('tinyproxy') }
  for (const p of /** @type {const} */ (['squid', 'tinyproxy'])) if (wanted.has(p) && !peersAvailable[p]) missing.push(p)
  const wrkAvailable = has('wrk')
  if (!wrkAvailable) missing.push('wrk')
  if (missing.length > 0) {
    note(`bench: not installed: ${missing.join(', ')}. Those rows are left out.`)
    note(`       install them with: apt-get update && apt-get install -y ${missing.join(' ')}   (Debian/Ubuntu; none starts by itself)`)
  }
  const needNet = ['http', 'bulk', 'tunnels', 'latency', 'memory'].some((w) => ONLY.has(w))

  const fdLimit = fdHardLimit()
  const tunnelsWanted = Number(opts.tunnels)
  // a proxy holds two sockets per tunnel (client and upstream), plus a few of its own; Squid
  // also keeps 100 in reserve and stops accepting when it gets there
  const tunnels = Math.min(tunnelsWanted, Math.floor((fdLimit - 400) / 2))
  const machine = {
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    squid: peersAvailable.squid ? spawnSync('squid', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0] : 'not installed',
    tinyproxy: peersAvailable.tinyproxy ? spawnSync('tinyproxy', ['-v'], { encoding: 'utf8' }).stdout.trim() : 'not installed',
    wrk: wrkAvailable ? (spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '').trim() : 'not installed',
    fdHardLimit: fdLimit,
    proxyGate: gitDescribe(),
    missing: missing.length ? `not installed: ${missing.join(', ')} (apt-get update && apt-get install -y ${missing.join(' ')})` : '',
    loadStart: loadAverage(),
  }
  raw.machine = machine
  raw.settings = { rounds: ROUNDS, seconds: SECONDS, connections: CONNS, bulkMiB: BULK_MIB, parallel: `${PAR_STREAMS} x ${PAR_MIB} MiB`, rate: RATE, tunnels }
  note(`bench: ${machine.cores} x ${machine.cpu}, ${machine.memGiB} GiB, Node ${machine.node}; ${ROUNDS} rounds of ${SECONDS} s; run folder ${runDir}`)

  if (needNet) {
    const ports = await startOrigin()
    /** @type {Record<string, Peer>} */
    const peers = {}
    const startAll = async () => {
      peers['proxy-gate'] = await startProxyGate(ports)
      peers.floor = await startFloor()
      if (peersAvailable.squid) peers.squid = await startSquid()
      if (peersAvailable.tinyproxy) peers.tinyproxy = await startTinyproxy(tunnels + 200)
    }
    const stopAll = async () => {
      for (const p of Object.values(peers)) await p.stop()
    }
    await startAll()
    for (const p of Object.values(peers)) note(`  ${p.name} pid ${p.pid} on 127.0.0.1:${p.port}: ${p.describe()}`)
    /** @type {Target[]} */
    const targets = [{ name: 'direct', route: { kind: 'direct' } }, ...Object.values(peers).map((peer) => ({ name: peer.name, route: /** @type {Route} */ ({ kind: 'proxy', peer }) }))]
    // the floor relays CONNECT only; in the plain-HTTP workloads its column is the HTTP floor's
    const httpFloor = wrkAvailable || ONLY.has('latency') ? await startHttpFloor() : undefined
    if (httpFloor) note(`  ${httpFloor.name} pid ${httpFloor.pid} on 127.0.0.1:${httpFloor.port}: ${httpFloor.describe()}`)
    const httpTargets = targets.map((t) => (t.name === 'floor' && httpFloor ? { name: 'floor', route: /** @type {Route} */ ({ kind: 'proxy', peer: httpFloor }) } : t)).filter((t) => t.name !== 'floor' || httpFloor)

    // warm-up: JIT, upstream pools, squid's memory pools; not recorded. Tunnels for 2 s: V8 was
    // still optimising proxy-gate's tunnel path ~9,000 tunnels in (--trace-opt), the floor's few
    // functions at once, so a short warm-up measured proxy-gate partly unoptimised
    note('warm-up')
    for (const t of targets) {
      await runTunnels(t, ports.echo, QUICK ? 0.5 : 2)
      await runBulk(t, ports.bulk, 8 << 20, 1)
    }
    if (wrkAvailable) for (const t of httpTargets) await runWrk(t, ports.http, 1)

    if (ONLY.has('http') && wrkAvailable) {
      note(`http: wrk -t1 -c${CONNS} -d${SECONDS}s, absolute-form through proxies`)
      const r = await interleave('http', httpTargets, (t) => runWrk(t, ports.http, SECONDS))
      raw.http = Object.fromEntries(r)
      sections.push({
        title: `1. Plain-HTTP forwarding: wrk -t1 -c${CONNS} -d${SECONDS}s, keep-alive, 18-byte responses`,
        rows: [
          { metric: 'requests/s', better: 'higher', cells: pick(r, 'rps'), digits: 0 },
          { metric: 'latency p50 (ms)', better: 'lower', cells: pick(r, 'p50Ms'), digits: 2 },
          { metric: 'latency p99 (ms)', better: 'lower', cells: pick(r, 'p99Ms'), digits: 2 },
          { metric: 'proxy CPU per request (µs)', better: 'lower', cells: pick(r, 'cpuUsPerReq'), digits: 1 },
        ],
        notes: errorNotes(r),
      })
    } else if (ONLY.has('http')) note('http: skipped (wrk is not installed)')

    if (ONLY.has('bulk')) {
      const one = BULK_MIB * 2 ** 20
      const each = PAR_MIB * 2 ** 20
      note(`bulk: 1 tunnel x ${BULK_MIB} MiB, ${PAR_STREAMS} tunnels x ${PAR_MIB} MiB`)
      const r1 = await interleave('bulk-1', targets, (t) => runBulk(t, ports.bulk, one, 1))
      const r8 = await interleave(`bulk-${PAR_STREAMS}`, targets, (t) => runBulk(t, ports.bulk, each, PAR_STREAMS))
      raw.bulk = { one: Object.fromEntries(r1), parallel: Object.fromEntries(r8) }
      sections.push({
        title: `2. CONNECT bulk download (origin -> client), MB = 10^6 bytes`,
        rows: [
          { metric: `1 tunnel, ${BULK_MIB} MiB: MB/s`, better: 'higher', cells: pick(r1, 'mbps'), digits: 0 },
          { metric: `${PAR_STREAMS} tunnels x ${PAR_MIB} MiB: MB/s`, better: 'higher', cells: pick(r8, 'mbps'), digits: 0 },
          { metric: `proxy CPU per GB, 1 tunnel (ms)`, better: 'lower', cells: pick(r1, 'cpuMsPerGB'), digits: 0 },
          { metric: `proxy CPU per GB, ${PAR_STREAMS} tunnels (ms)`, better: 'lower', cells: pick(r8, 'cpuMsPerGB'), digits: 0 },
        ],
        notes: [],
      })
    }

    if (ONLY.has('tunnels')) {
      note(`tunnels: 50 loops of connect, CONNECT, 5-byte round trip, close, for ${SECONDS} s`)
      const r = await interleave('tunnels', targets, (t) => runTunnels(t, ports.echo, SECONDS))
      raw.tunnels = Object.fromEntries(r)
      sections.push({
        title: '3. New tunnels per second (50 concurrent loops: connect, CONNECT, 5-byte round trip, close)',
        rows: [
          { metric: 'tunnels/s', better: 'higher', cells: pick(r, 'perSecond'), digits: 0 },
          { metric: 'proxy CPU per tunnel (µs)', better: 'lower', cells: pick(r, 'cpuUsPerTunnel'), digits: 0 },
        ],
        notes: [...r].filter(([, rs]) => rs.some((x) => x.errors > 0)).map(([n, rs]) => `${n}: ${rs.map((x) => x.errors).join('/')} failed tunnels per round (first: ${rs.find((x) => x.firstError)?.firstError})`),
      })
    }

    if (ONLY.has('latency')) {
      note(`latency: ${RATE} requests/s for ${SECONDS} s over keep-alive connections`)
      const r = await interleave('latency', httpTargets, (t) => runLatency(t, ports.http, SECONDS, RATE))
      raw.latency = Object.fromEntries(r)
      const direct = r.get('direct') ?? []
      const added = (/** @type {'p50Ms' | 'p99Ms'} */ key) =>
        Object.fromEntries([...r].filter(([n]) => n !== 'direct').map(([n, rs]) => [n, rs.map((x, i) => (x[key] - (direct[i]?.[key] ?? NaN)) * 1000)]))
      sections.push({
        title: `4. Latency at a fixed ${RATE} requests/s (keep-alive, one request per connection at a time)`,
        rows: [
          { metric: 'p50 (ms)', better: 'lower', cells: pick(r, 'p50Ms'), digits: 3 },
          { metric: 'p99 (ms)', better: 'lower', cells: pick(r, 'p99Ms'), digits: 3 },
          { metric: 'added p50 vs direct (µs)', better: 'lower', cells: added('p50Ms'), digits: 0 },
          { metric: 'added p99 vs direct (µs)', better: 'lower', cells: added('p99Ms'), digits: 0 },
          { metric: 'proxy CPU per request (µs)', better: 'lower', cells: pick(r, 'cpuUsPerReq'), digits: 1 },
        ],
        notes: [...r].filter(([, rs]) => rs.some((x) => x.errors > 0)).map(([n, rs]) => `${n}: ${rs.map((x) => x.errors).join('/')} failed requests per round`),
      })
    }

    await httpFloor?.stop()
    if (ONLY.has('memory')) {
      note(`memory: ${tunnels} idle tunnels per proxy, each proxy freshly started; RSS 2 s after opening and ${SETTLE_S} s after`)
      await stopAll()
      /** @param {string} name */
      const restart = (name) => (name === 'proxy-gate' ? startProxyGate(ports) : name === 'floor' ? startFloor() : name === 'squid' ? startSquid() : startTinyproxy(tunnels + 200))
      /** @type {Map<string, any[]>} */
      const r = new Map()
      for (const name of Object.keys(peers)) {
        const peer = await restart(name)
        peers[name] = peer
        const result = await runIdleTunnels(peer, ports.echo, tunnels)
        r.set(name, [result])
        note(`  memory ${name}: ${brief(result)}${result.firstError ? ` (first error: ${result.firstError})` : ''}`)
        await peer.stop()
      }
      raw.memory = Object.fromEntries(r)
      const nTunnels = tunnels.toLocaleString('en-US')
      sections.push({
        title: `5. Memory: RSS with ${nTunnels} idle open tunnels (fresh process, one round trip per tunnel)`,
        rows: [
          { metric: 'RSS idle, after start (MB)', better: 'lower', cells: pick(r, 'idleMB'), digits: 1 },
          { metric: `RSS with ${nTunnels} tunnels, 2 s after opening (MB)`, better: 'lower', cells: pick(r, 'withTunnelsMB'), digits: 1 },
          { metric: `RSS with ${nTunnels} tunnels, idle ${SETTLE_S} s (MB)`, better: 'lower', cells: pick(r, 'settledMB'), digits: 1 },
          { metric: 'per tunnel, 2 s after opening (kB)', better: 'lower', cells: pick(r, 'kbPerTunnel'), digits: 1 },
          { metric: `per tunnel, idle ${SETTLE_S} s (kB)`, better: 'lower', cells: pick(r, 'kbPerTunnelSettled'), digits: 1 },
          ...(tunnels < 10_000
            ? [
                { metric: 'RSS projected to 10,000 tunnels, 2 s after opening (MB)', better: /** @type {const} */ ('lower'), cells: pick(r, 'projected10kMB'), digits: 1 },
                { metric: `RSS projected to 10,000 tunnels, idle ${SETTLE_S} s (MB)`, better: /** @type {const} */ ('lower'), cells: pick(r, 'projected10kSettledMB'), digits: 1 },
              ]
            : []),
        ],
        notes: [
          ...(tunnels < tunnelsWanted ? [`${nTunnels} tunnels, not ${tunnelsWanted.toLocaleString('en-US')}: the open-files hard limit here is ${fdLimit} and a proxy holds two sockets per tunnel (raise it with "ulimit -Hn" as root, or run in a container with a higher nofile limit).`] : []),
          ...[...r].filter(([, [x]]) => x.errors > 0).map(([n, [x]]) => `${n}: ${x.errors} tunnels failed to open (first: ${x.firstError})`),
        ],
      })
    } else {
      await stopAll()
    }
    if (peers['proxy-gate']?.logFile && existsSync(peers['proxy-gate'].logFile)) raw.proxyGateLogBytes = statSync(peers['proxy-gate'].logFile).size
    origin.send({ stop: true })
    origin.disconnect()
  }

  if (ONLY.has('policy')) note(`policy: ${Number(opts.rules).toLocaleString('en-US')} rules vs 1,000 (child process)`)
  const p = ONLY.has('policy') ? runMicro(['policy', '--rules', String(opts.rules)]) : undefined
  if (p) {
    raw.policy = p
    note(`  ${JSON.stringify(p)}`)
    sections.push({
      title: `6. Policy scale (lib functions in-process: parseConfig, decideTarget + decideAddresses)`,
      rows: [
        { metric: `load ${p.large.rules.toLocaleString('en-US')} rules: JSON.parse + validate + index (ms)`, better: 'lower', cells: { 'proxy-gate': [p.large.loadMs] }, digits: 0 },
        { metric: `load ${p.small.rules.toLocaleString('en-US')} rules (ms)`, better: 'lower', cells: { 'proxy-gate': [p.small.loadMs] }, digits: 1 },
        { metric: `decisions/s, ${p.small.rules.toLocaleString('en-US')} rules`, better: 'higher', cells: { 'proxy-gate': [p.small.perSecond] }, digits: 0 },
        { metric: `decisions/s, ${p.large.rules.toLocaleString('en-US')} rules`, better: 'higher', cells: { 'proxy-gate': [p.large.perSecond] }, digits: 0 },
        { metric: `decision time ${p.large.rules.toLocaleString('en-US')} / ${p.small.rules.toLocaleString('en-US')} rules (x)`, better: 'lower', cells: { 'proxy-gate': [p.slowdown] }, digits: 2 },
      ],
      notes: [`query mix: ${p.queryMix}`, `rules file of ${(p.large.fileBytes / 1e6).toFixed(1)} MB: 50% exact names, 25% wildcards, 20% IPv4 CIDRs and addresses, 5% IPv6 /48s, plus 1% deny rules`],
    })
  }

  if (ONLY.has('leaf')) note('leaf: minting leaf certificates (child process)')
  const l = ONLY.has('leaf') ? runMicro(['leaf']) : undefined
  if (l) {
    raw.leaf = l
    note(`  ${JSON.stringify(l)}`)
    sections.push({
      title: `7. Leaf certificate minting (createLeafMinter, ${l.hosts} hosts, one shared RSA-2048 leaf key, CA RSA-2048)`,
      rows: [
        { metric: 'uncached: ms per leaf (median)', better: 'lower', cells: { 'proxy-gate': [l.uncached.medianMs] }, digits: 2 },
        { metric: 'uncached: ms per leaf (p99)', better: 'lower', cells: { 'proxy-gate': [l.uncached.p99Ms] }, digits: 2 },
        { metric: 'uncached: leaves/s', better: 'higher', cells: { 'proxy-gate': [l.uncached.perSecond] }, digits: 0 },
        { metric: 'cached: lookups/s', better: 'higher', cells: { 'proxy-gate': [l.cached.perSecond] }, digits: 0 },
      ],
      notes: ['uncached = forge builds the certificate, Node signs it, tls.createSecureContext; cached = an LRU hit returning the SecureContext'],
    })
  }

  machine.loadEnd = loadAverage()
  printReport(machine)
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ sections, raw }, null, 2))
}

/** @param {Map<string, any[]>} r */
function errorNotes(r) {
  const notes = []
  for (const [name, rs] of r) {
    const e = rs.map((x) => x.errors)
    const sum = (/** @type {string} */ k) => e.reduce((a, x) => a + x[k], 0)
    const parts = ['connect', 'read', 'write', 'status', 'timeout'].filter((k) => sum(k) > 0).map((k) => `${k} ${sum(k)}`)
    if (parts.length) notes.push(`${name}: wrk errors over all rounds: ${parts.join(', ')}${name === 'tinyproxy' && sum('read') > 0 ? ' (tinyproxy closes the client connection after every response, wrk counts that as a read error)' : ''}`)
  }
  return notes
}

const COLUMNS = ['direct', 'proxy-gate', 'floor', 'squid', 'tinyproxy']
/** The ratio columns: proxy-gate's median over each of these. */
const RATIO_OF = ['direct', 'floor', 'squid']

/** @param {number} x @param {number} digits */
function fmt(x, digits) {
  if (!Number.isFinite(x)) return '–'
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}
/** @param {number[] | undefined} xs @param {number} digits */
function cell(xs, digits) {
  if (!xs || xs.length === 0) return ''
  const m = fmt(median(xs), digits)
  const finite = xs.filter((x) => Number.isFinite(x))
  if (finite.length <= 1) return m
  return `${m} (${fmt(Math.min(...finite), digits)}–${fmt(Math.max(...finite), digits)})`
}
/** @param {number[] | undefined} a @param {number[] | undefined} b */
function ratio(a, b) {
  if (!a || !b || a.length === 0 || b.length === 0) return ''
  const r = median(a) / median(b)
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : ''
}

/** The checked-out commit, "+changes" when the tree differs from it. */
function gitDescribe() {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' })
  if (head.status !== 0) return 'unknown (not a git checkout)'
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'lib'], { cwd: ROOT, encoding: 'utf8' }).stdout?.trim()
  return `${head.stdout.trim()}${dirty ? ' + uncommitted changes in lib/' : ''}`
}
/** 1-minute load average: other work on the machine shows up here. */
function loadAverage() {
  return readFileSync('/proc/loadavg', 'utf8').split(' ')[0]
}

/** @param {Record<string, unknown>} machine */
function printReport(machine) {
  const lines = []
  lines.push(`proxy-gate bench: ${machine.cores} x ${machine.cpu}, ${machine.memGiB} GiB RAM, Node ${machine.node}, Linux ${machine.kernel}`)
  lines.push(`proxy-gate ${machine.proxyGate}; load average ${machine.loadStart} at start, ${machine.loadEnd} at the end`)
  lines.push(`peers: ${machine.squid}; ${machine.tinyproxy}; ${machine.wrk}`)
  if (machine.missing) lines.push(String(machine.missing))
  lines.push(`${ROUNDS} interleaved rounds (order rotated each round); cells: median (min–max); ratios are of medians`)
  for (const s of sections) {
    const used = COLUMNS.filter((c) => s.rows.some((r) => r.cells[c]?.length))
    const withRatios = used.includes('proxy-gate') && used.length > 1
    const ratios = withRatios ? RATIO_OF.filter((c) => used.includes(c)) : []
    const header = ['metric', ...used, ...ratios.map((c) => `pg/${c}`)]
    lines.push('', `### ${s.title}`, '', `| ${header.join(' | ')} |`, `|${header.map((h, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`)
    for (const row of s.rows) {
      const cells = used.map((c) => cell(row.cells[c], row.digits ?? 1))
      const extra = ratios.map((c) => ratio(row.cells['proxy-gate'], row.cells[c]))
      lines.push(`| ${row.metric} (${row.better === 'higher' ? 'higher' : 'lower'} is better) | ${[...cells, ...extra].join(' | ')} |`)
    }
    for (const n of s.notes) lines.push('', `- ${n}`)
  }
  console.log(lines.join('\n'))
}

let cleaning = false
async function cleanup() {
  if (cleaning) return
  cleaning = true
  for (const p of [...running]) await p.stop().catch(() => undefined)
  if (origin?.connected) {
    origin.send({ stop: true })
    origin.disconnect()
  }
  if (opts.keep) note(`run folder kept: ${runDir}`)
  else rmSync(runDir, { recursive: true, force: true })
}
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.once(signal, () => {
    note(`bench: ${signal}, stopping`)
    void cleanup().then(() => process.exit(130))
  })
}

try {
  await main()
} catch (error) {
  console.error(`bench failed: ${/** @type {Error} */ (error).stack ?? error}`)
  process.exitCode = 1
} finally {
  await cleanup()
}
