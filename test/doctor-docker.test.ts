// ci: floor line only: it drives a real container engine, whose confinement is the same under any Node
// `proxy-gate doctor`'s end-to-end probe with a real Docker engine in the suite's loopback-only
// namespace: with ~/.docker/config.json proxies pointing at proxy-gate (written by `docker --target
// cli --write`), the CLI gives the probe container HTTP_PROXY, its request reaches proxy-gate and the
// admin API confirms the nonce: exit 0. Without the proxies the container has no HTTP_PROXY: a
// problem, exit 1. Pointing at a port where nothing listens: the file names both addresses and the
// probe fails. An image that is not here is skipped, never pulled.
// This engine has its own bridge and leaves iptables alone, so it can run beside sandbox.test's.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runCli, startCli } from './helpers/cli.js'
import { engineMissing, importBusyboxImage, startBridgedEngine } from './helpers/docker.js'
import { tempDir, writeJson } from './helpers/files.js'
import { stablePort } from './helpers/haproxy.js'
import { closedPort } from './helpers/net.js'

const BRIDGE = 'pgdoctor0'
const BRIDGE_IP = '10.252.0.1'
const IMAGE = 'local/busybox:doctor'

interface Report {
  readonly ok: boolean
  readonly checks: { name: string; status: string; detail: string; fix?: string }[]
}

function missing(): string | false {
  return engineMissing() || (existsSync('/usr/bin/busybox') ? false : 'needs /usr/bin/busybox (apt-get install busybox-static)')
}


t.test('doctor: a container proves its request reached proxy-gate, or says why not', { skip: missing() }, async (t) => {
  const engine = await startBridgedEngine(t, BRIDGE, BRIDGE_IP)
  importBusyboxImage(engine, IMAGE)

  const home = tempDir('doctor-docker')
  const port = await stablePort()
  const rules = writeJson(home, 'rules.json', { listen: `${BRIDGE_IP}:${port}`, allow: [], bypass: ['localhost', '127.0.0.1', '*.docker.internal'] })
  const tokenFile = join(home, 'admin-token')
  const adminPort = await stablePort()
  const proxy = await startCli(['start', '--rules', rules, '--insecure-open', '--log-format', 'json', '--admin-listen', `127.0.0.1:${adminPort}`, '--admin-token-file', tokenFile])
  t.teardown(() => proxy.stop())
  const env = { HOME: home, DOCKER_HOST: String(engine.env.DOCKER_HOST), DOCKER_CLI_HINTS: 'false' }
  const files = ['--file', `admin=${join(home, 'admin-settings.json')}`, '--file', `daemon=${join(home, 'daemon.json')}`]
  const doctor = async (extra: string[] = []): Promise<{ code: number | null; report: Report }> => {
    const r = await runCli(['doctor', '--rules', rules, '--json', '--image', IMAGE, '--admin-listen', `127.0.0.1:${adminPort}`, '--admin-token-file', tokenFile, ...files, ...extra], { env })
    return { code: r.code, report: JSON.parse(r.stdout) as Report }
  }
  const check = (report: Report, name: string) => report.checks.find((c) => c.name === name)

  await t.test('wired through config.json: the probe reaches proxy-gate, exit 0', async (t) => {
    const wired = await runCli(['docker', '--target', 'cli', '--rules', rules, '--advertise', `${BRIDGE_IP}:${port}`, '--write'], { env })
    t.equal(wired.code, 0, wired.stderr)
    const { code, report } = await doctor()
    t.equal(code, 0, JSON.stringify(report, null, 2))
    t.equal(check(report, 'docker cli')?.status, 'ok')
    t.equal(check(report, 'docker info')?.status, 'not configured', 'this dockerd has no proxy of its own')
    const probe = check(report, 'container probe')
    t.equal(probe?.status, 'ok')
    t.match(probe?.detail, /a container's request reached this proxy-gate \(from 10\.252\.0\.\d+:\d+\)/)
    const logged = await proxy.waitFor((l) => l.message === 'probe')
    t.match(logged.client, /^10\.252\.0\.\d+:\d+$/)
  })

  await t.test('an image that is not here: skipped, not pulled', async (t) => {
    const { code, report } = await doctor(['--image', 'local/absent:none'])
    t.equal(code, 0)
    t.same(check(report, 'container probe'), { name: 'container probe', status: 'not configured', detail: 'skipped: no image local/absent:none here (doctor never pulls)', fix: 'docker pull local/absent:none, or pass --image with an image that has sh and nc' })
  })

  await t.test('config.json pointing at a port where nothing listens: both addresses named, the probe fails, exit 1', async (t) => {
    const closed = await closedPort()
    writeJson(join(home, '.docker'), 'config.json', { proxies: { default: { httpProxy: `http://${BRIDGE_IP}:${closed}`, noProxy: 'localhost,127.0.0.1,.docker.internal' } } })
    const { code, report } = await doctor()
    t.equal(code, 1)
    t.match(check(report, 'docker cli')?.detail, `proxies.default.httpProxy is http://${BRIDGE_IP}:${closed}, not this proxy-gate (${BRIDGE_IP}:${port})`)
    const probe = check(report, 'container probe')
    t.equal(probe?.status, 'problem')
    t.match(probe?.detail, "a container's request through its HTTP_PROXY did not reach proxy-gate")
  })

  await t.test('not wired: the container has no HTTP_PROXY, a problem, exit 1', async (t) => {
    writeJson(join(home, '.docker'), 'config.json', {})
    const { code, report } = await doctor()
    t.equal(code, 1)
    t.equal(check(report, 'docker cli')?.status, 'not configured')
    const probe = check(report, 'container probe')
    t.equal(probe?.status, 'problem')
    t.match(probe?.detail, `a container (${IMAGE}) started by this Docker CLI has no HTTP_PROXY`)
    t.equal(probe?.fix, `proxy-gate docker --target cli --rules ${rules} --write`)
  })
})
