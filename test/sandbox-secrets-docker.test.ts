// ci: floor line only: it drives a real container engine, whose confinement is the same under any Node
// Secrets through the sandbox with a real Docker engine in the suite's loopback-only namespace: a
// workload started by `sandbox run` holds only the placeholder, trusts proxy-gate's CA through the
// bundle `run` mounts (NODE_EXTRA_CA_CERTS, no change to its image), and completes a request to a
// TLS origin that answers 200 only to the real value; proxy-gate's container got that value from
// the environment `sandbox up` ran in, by name. The value is in no engine argument, not in the
// workload's environment, and not in anything the workload could print.
// This engine has its own bridge and leaves iptables alone, so it can run beside sandbox.test's
// (the isolation itself is sandbox.test's subject; here `up --no-verify`).
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { chmodSync, chownSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { createCa, writeCa } from '../lib/certs/ca.js'
import { CLI_PATH } from './helpers/cli.js'
import { engineMissing, importNodeImage, startBridgedEngine, type Engine } from './helpers/docker.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { startHttpsUpstream } from './helpers/net.js'

const ORIGIN = '11.22.33.46' // a stand-in public address; sandbox.test uses its port 53, this test 8443
const PORT = 8443
const BRIDGE = 'pgsecrets0'
const BRIDGE_IP = '10.254.0.1'
const NAME = 'pgsec'
const SUBNET = '10.253.0.0/24'
const BASE = 'local/node-base:secrets'
const IMAGE = 'proxy-gate:sandbox-secrets'
const VALUE = `ghp_${randomBytes(18).toString('hex')}`

/** The workload: CONNECT through HTTP_PROXY, TLS verified against the CAs Node was given, the placeholder as a bearer token. */
const WORKLOAD = String.raw`
const http = require('http'), tls = require('tls')
const proxy = new URL(process.env.HTTP_PROXY)
const host = 'api.bound.test', port = ${PORT}
const req = http.request({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: host + ':' + port, timeout: 5000 })
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log('RESULT CONNECT ' + res.statusCode); return }
  const t = tls.connect({ socket, servername: host }, () => {
    t.write('GET /user HTTP/1.1\r\nHost: ' + host + ':' + port + '\r\nAuthorization: Bearer ' + process.env.GH_TOKEN + '\r\nConnection: close\r\n\r\n')
  })
  let b = ''
  t.on('data', (d) => (b += d)); t.on('end', () => console.log('RESULT ' + b.split('\r\n')[0] + ' ' + b.split('\r\n\r\n')[1]))
  t.on('error', (e) => console.log('RESULT tls ' + e.code))
})
req.on('error', (e) => console.log('RESULT error ' + e.code)); req.end()
console.log('ENV ' + JSON.stringify(process.env))
`

async function cli(engine: Engine, args: readonly string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...engine.env, ...env } })
  const chunks: Buffer[] = []
  child.stdout.on('data', (c: Buffer) => chunks.push(c))
  child.stderr.on('data', (c: Buffer) => chunks.push(c))
  const [code] = (await once(child, 'close')) as [number | null]
  return { code, out: Buffer.concat(chunks).toString('utf8') }
}


// building the image and starting containers takes longer than tap's 60 s per file on two cores
t.setTimeout(240_000)

t.test('a sandboxed workload holding only the placeholder makes an authenticated request', { skip: engineMissing() }, async (t) => {
  const engine = await startBridgedEngine(t, BRIDGE, BRIDGE_IP)
  const origin = await startHttpsUpstream(ORIGIN, ['api.bound.test'], (req, res) => {
    res.statusCode = req.headers.authorization === `Bearer ${VALUE}` ? 200 : 401
    res.end(res.statusCode === 200 ? 'authenticated' : 'who are you')
  }, PORT)
  const dns = await startDns({ 'api.bound.test': { A: [ORIGIN] } }, { host: ORIGIN, port: 0 })
  t.teardown(() => Promise.all([origin.close(), dns.close()]))

  const dir = tempDir('sandbox-secrets-docker')
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const rulesDir = join(dir, 'rules')
  mkdirSync(rulesDir)
  chmodSync(dir, 0o755)
  chmodSync(rulesDir, 0o755)
  writeFileSync(join(rulesDir, 'origin.pem'), origin.tls.cert, { mode: 0o644 })
  const rules = writeJson(rulesDir, 'rules.json', {
    allow: [`api.bound.test:${PORT}`],
    dns: { servers: [dns.server] },
    tls: { ports: [443, PORT], upstreamCaFiles: ['origin.pem'] },
    secrets: { GH_TOKEN: { from: 'env:PG_SANDBOX_GH', hosts: [`api.bound.test:${PORT}`] } },
  })
  chmodSync(rules, 0o644)
  const certs = join(dir, 'certs')
  const written = writeCa(certs, await createCa())
  if (!written.ok) throw new Error(written.error)
  // the rules are root's: proxy-gate runs as the image's user, who must read the CA and the key (made first)
  const key = await cli(engine, ['secrets', 'env', '--rules', rules, '--dir', certs])
  t.equal(key.code, 0, key.out)
  for (const f of [certs, ...readdirSync(certs).map((f) => join(certs, f))]) chownSync(f, 1000, 1000)

  importNodeImage(engine, BASE)
  const built = await cli(engine, ['sandbox', 'build', '--base', BASE, '--tag', IMAGE])
  t.equal(built.code, 0, `sandbox build: ${built.out.slice(-500)}`)
  const common = ['--name', NAME, '--rules', rules, '--dir', certs]
  const up = await cli(engine, ['sandbox', 'up', ...common, '--image', IMAGE, '--subnet', SUBNET, '--no-verify'], { PG_SANDBOX_GH: VALUE })
  t.equal(up.code, 0, `sandbox up: ${up.out.slice(-800)}`)
  t.teardown(() => cli(engine, ['sandbox', 'down', '--name', NAME]))

  const run = await cli(engine, ['sandbox', 'run', ...common, '--', BASE, 'node', '-e', WORKLOAD])
  t.equal(run.code, 0, `the workload ran: ${run.out.slice(-500)}`)
  t.match(run.out, /^RESULT HTTP\/1\.1 200 OK authenticated$/m, 'the origin got the value: the workload trusted the opened tunnel and sent its placeholder')
  const env = JSON.parse(/^ENV (.*)$/m.exec(run.out)?.[1] ?? '{}') as Record<string, string>
  t.match(env.GH_TOKEN, /^[A-Za-z0-9_-]{43}$/, 'the workload holds the placeholder (without the prefix: run did not have the value)')
  t.equal(env.NODE_EXTRA_CA_CERTS, '/etc/proxy-gate-ca/ca-bundle.pem')
  t.notOk(run.out.includes(VALUE), 'the value is nowhere in the workload or its output')
  t.notOk(JSON.stringify(origin.requests).includes(env.GH_TOKEN ?? 'none'), 'the placeholder never reached the origin')

  const without = await cli(engine, ['sandbox', 'run', ...common, '--no-secrets', '--', BASE, 'node', '-e', WORKLOAD])
  t.match(without.out, /^RESULT HTTP\/1\.1 401 Unauthorized who are you$/m, '--no-secrets: no placeholder, no value put in')

  const logs = engine.docker(['logs', `${NAME}-proxy`])
  const log = logs.stdout + logs.stderr
  t.match(log, /"secret":"GH_TOKEN"/, 'the decision names the secret')
  t.notOk(log.includes(VALUE), "proxy-gate's log holds no value")
  const proxyArgs = engine.docker(['inspect', '-f', '{{json .Args}}', `${NAME}-proxy`]).stdout
  t.notOk(proxyArgs.includes(VALUE), "no value in proxy-gate's command line")
})
