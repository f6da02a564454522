// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/wiring/sandbox-compose.ts: the Compose file `sandbox compose` prints is valid under the
// Compose Specification's own JSON schema (test/compose-spec/, vendored with its licence), its
// workload gets exactly what `sandbox run` gives one, and each engine keeps its own construction.
import { readFileSync } from 'node:fs'
import Ajv from 'ajv'
import t, { type Test } from 'tap'
import { parse } from 'yaml'
import { composeFile } from '../lib/wiring/sandbox-compose.js'
import { runArgs, sandboxPlan, type SandboxPlan } from '../lib/wiring/sandbox.js'
import type { EngineKind } from '../lib/wiring/engine.js'
import { CERTS_MOUNT, WORKLOAD_BUNDLE } from '../lib/wiring/sandbox-secrets.js'

const schema = JSON.parse(readFileSync(new URL('./compose-spec/compose-spec.json', import.meta.url), 'utf8')) as object
// the schema names draft-07 by an address Ajv 6 does not hold: its meta-schema check is skipped, not its rules
const validate = new Ajv({ allErrors: true, validateSchema: false }).compile(schema)

function plan(engine: EngineKind, user: { user?: string } = { user: '1000:1000' }): SandboxPlan {
  const planned = sandboxPlan({ name: 'box', subnet: '10.250.0.0/24', image: 'proxy-gate:1', rulesDir: '/srv/rules', rulesFile: 'rules.json', user: user.user, engine, engineVersion: undefined })
  if (!planned.ok) throw new Error(planned.error)
  return planned.value
}

type Doc = Record<string, Record<string, Record<string, unknown>>>

/** What `sandbox run` gives a workload, read back from its arguments. */
function runSettings(p: SandboxPlan): { env: Record<string, string>; sysctls: Record<string, string>; capDrop: string[]; dns: string[]; network: string } {
  const args = runArgs(p, [])
  const env: Record<string, string> = {}
  const sysctls: Record<string, string> = {}
  const settings = { env, sysctls, capDrop: [] as string[], dns: [] as string[], network: '' }
  for (let i = 0; i < args.length; i++) {
    const [flag, value = ''] = [args[i], args[i + 1]]
    const [k = '', ...v] = value.split('=')
    if (flag === '-e') env[k] = v.join('=')
    else if (flag === '--sysctl') sysctls[k] = v.join('=')
    else if (flag === '--cap-drop') settings.capDrop.push(value)
    else if (flag === '--dns') settings.dns.push(value)
    else if (flag === '--network') settings.network = value
  }
  return settings
}

function valid(t: Test, text: string): Doc {
  const doc = parse(text) as Doc
  t.ok(validate(doc), `valid under the Compose Specification: ${JSON.stringify(validate.errors)}`)
  return doc
}

t.test('the schema check catches what Compose would refuse', async (t) => {
  t.notOk(validate({ services: { workload: { image: 'alpine', networks: 'sandbox' } } }), 'networks must be a list or a mapping')
  t.notOk(validate({ services: { workload: { image: 'alpine', dnss: ['10.250.0.2'] } } }), 'an unknown service key')
  t.notOk(validate({ services: { workload: { image: 'alpine', sysctls: { net: { ipv6: 1 } } } } }), 'a sysctl is a string or a number')
  t.notOk(validate({ networks: { sandbox: { ipam: { config: '10.250.0.0/24' } } } }), 'ipam.config is a list')
})

t.test('Docker: proxy-gate and both networks, the internal one without a host address; the workload gets what run gives it', async (t) => {
  const p = plan('docker')
  const doc = valid(t, composeFile(p))
  const proxy = doc.services?.['proxy-gate'] ?? {}
  t.same(proxy.networks, { sandbox: { ipv4_address: '10.250.0.2' }, egress: {} })
  t.same(proxy.cap_drop, ['ALL'])
  t.equal(proxy.read_only, true)
  t.equal(proxy.user, '1000:1000')
  t.match(proxy.command, ['start', '--rules', '/etc/proxy-gate/rules.json'])
  t.same(doc.networks?.sandbox, { name: 'box', driver: 'bridge', internal: true, enable_ipv6: false, driver_opts: { 'com.docker.network.bridge.inhibit_ipv4': 'true' }, ipam: { config: [{ subnet: '10.250.0.0/24', aux_addresses: { DefaultGatewayIPv4: '10.250.0.254' } }] } })
  t.same(doc.networks?.egress, { name: 'box-egress' })
  const run = runSettings(p)
  const workload = doc.services?.workload ?? {}
  t.same(workload.environment, run.env, 'the same variables as run, upper and lower case')
  t.ok('http_proxy' in run.env && 'no_proxy' in run.env, 'run sets the lowercase spellings')
  t.same([run.env.ALL_PROXY, run.env.all_proxy], ['socks5h://10.250.0.2:1080', 'socks5h://10.250.0.2:1080'], 'SOCKS5 for the rest of TCP (ssh, git over SSH, databases)')
  t.same(workload.dns, run.dns)
  t.same(workload.networks, ['sandbox'])
  t.same(workload.cap_drop, run.capDrop)
  t.same(run.capDrop, ['NET_RAW'], 'no raw frames to the bridge')
  t.notOk('sysctls' in workload, 'Docker gives such containers no IPv6 by itself')
  t.notOk('user' in (valid(t, composeFile(plan('docker', {}))).services?.['proxy-gate'] ?? {}), 'a root-owned rules file: the image user')
})

t.test('Podman: the network is the one sandbox up made (external), the workload gets what run gives it there', async (t) => {
  const p = plan('podman')
  const text = composeFile(p)
  const doc = valid(t, text)
  t.same(doc.networks, { sandbox: { name: 'box', external: true } }, 'Compose makes no network on Podman')
  t.same(Object.keys(doc.services ?? {}), ['workload'], 'proxy-gate runs from sandbox up')
  const run = runSettings(p)
  const workload = doc.services?.workload ?? {}
  t.same(workload.environment, run.env)
  t.equal(run.env.ALL_PROXY, 'socks5h://10.250.0.2:1080', 'the SOCKS5 listener of the proxy-gate that sandbox up started')
  t.same(workload.dns, run.dns)
  t.same(workload.sysctls, Object.entries(run.sysctls).map(([k, v]) => `${k}=${v}`))
  t.same(run.sysctls, { 'net.ipv6.conf.eth0.disable_ipv6': '1' })
  t.same(workload.cap_drop, run.capDrop)
  t.same(run.capDrop, ['NET_RAW'])
  t.notMatch(text, /inhibit_ipv4/)
  t.match(text, /sandbox up --engine podman --name box/, 'the file says where its network comes from')
})

t.test('with the CA and secrets: still valid, variables by name for proxy-gate, placeholders and the bundle for the workload, as run gives them', async (t) => {
  const p = plan('docker')
  const secrets = {
    proxyGate: { caDir: '/home/u/certs', envNames: ['GH_VALUE'], files: [{ host: '/home/u/npm', container: '/etc/npm' }] },
    workload: { placeholders: [['GH_TOKEN', 'ghp_placeholder']] as const, bundle: '/home/u/certs/ca-bundle.pem' },
  }
  const doc = valid(t, composeFile(p, secrets))
  const proxy = doc.services?.['proxy-gate'] ?? {}
  t.same(proxy.environment, ['GH_VALUE'])
  t.same(proxy.volumes, ['/srv/rules:/etc/proxy-gate:ro', `/home/u/certs:${CERTS_MOUNT}:ro`, '/home/u/npm:/etc/npm:ro'])
  const workload = doc.services?.workload ?? {}
  const args = runArgs(p, [], secrets.workload)
  const env = Object.fromEntries(args.flatMap((a, i) => (args[i - 1] === '-e' ? [[a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]] : [])))
  t.same(workload.environment, env, 'the same variables as run')
  t.equal(env.GH_TOKEN, 'ghp_placeholder')
  t.equal(env.SSL_CERT_FILE, WORKLOAD_BUNDLE)
  t.same(workload.volumes, [`/home/u/certs/ca-bundle.pem:${WORKLOAD_BUNDLE}:ro`])
  t.ok(args.includes(`/home/u/certs/ca-bundle.pem:${WORKLOAD_BUNDLE}:ro`))
  const podman = valid(t, composeFile(plan('podman'), secrets))
  t.same(podman.services?.workload?.volumes, workload.volumes, 'on Podman too')
})
