// doctor's verdicts as pure functions: the admin-settings.json and PAC forms, the bypass in each
// target's spelling, the CA (needed, missing, near expiry), `docker info` (Docker Desktop's own
// proxy, another one), /readyz saying 503, a probe answered by a proxy-gate that is not this one; the
// activity's bounded probe memory, and the probe route answered before the proxy login.
import t from 'tap'
import { caCheck, dockerInfoCheck, formatChecks, loginServiceCheck, probeCheck, runningCheck } from '../lib/wiring/doctor-checks.js'
import { dockerFileCheck, type HereAddress } from '../lib/wiring/doctor-docker.js'
import { createActivity } from '../lib/observe/activity.js'
import { hashPassword } from '../lib/proxy/auth.js'
import { startProxy } from './helpers/proxy.js'
import { rawExchange, statusOf } from './helpers/net.js'

const HERE: HereAddress = { display: '127.0.0.1:3128', hosts: ['127.0.0.1', 'localhost', '::1', 'host.docker.internal'], port: 3128 }
const FLAGS = { rules: '', advertise: '' }
const EXCLUDE = ['localhost', '127.0.0.1', '*.docker.internal']

function admin(proxy: Record<string, unknown>, containersProxy: Record<string, unknown>) {
  return dockerFileCheck('admin', '/a.json', { kind: 'json', value: { configurationFileVersion: 2, proxy, containersProxy } as never }, HERE, FLAGS)
}

t.test('admin-settings.json: manual, PAC URL or proxies here, the exclude array', async (t) => {
  const pac = { locked: true, mode: 'manual', http: '', https: '', exclude: EXCLUDE, pac: 'http://localhost:3128/proxy.pac?flavor=docker' }
  t.equal(admin(pac, pac).status, 'ok')
  const other = admin({ ...pac, pac: 'http://127.0.0.1:3128/other.pac' }, pac)
  t.equal(other.status, 'problem')
  t.match(other.detail, 'proxy.pac is http://127.0.0.1:3128/other.pac, not this proxy-gate (http://127.0.0.1:3128/proxy.pac)')
  const noK8s = admin(pac, { ...pac, exclude: ['localhost', '127.0.0.1', 'host.docker.internal'] })
  t.match(noK8s.detail, 'containersProxy.exclude does not keep kubernetes.docker.internal, *.docker.internal direct')
  const k8s = admin(pac, { ...pac, exclude: ['localhost', '127.0.0.0/8', 'host.docker.internal', 'gateway.docker.internal', 'kubernetes.docker.internal'] })
  t.match(k8s.detail, 'containersProxy.exclude does not keep *.docker.internal direct', 'named hosts are not the wildcard')
  const ips = admin(pac, { ...pac, exclude: ['localhost', '127.0.0.0/8', '*.docker.internal'] })
  t.equal(ips.status, 'ok', 'a CIDR holding 127.0.0.1 keeps it direct')
})

t.test('config.json and daemon.json: NO_PROXY spelling, a bare domain covers its subdomains', async (t) => {
  const cli = (noProxy: string) => dockerFileCheck('cli', '/c.json', { kind: 'json', value: { proxies: { default: { httpProxy: 'host.docker.internal:3128', noProxy } } } }, HERE, FLAGS)
  t.equal(cli('localhost,127.0.0.1,docker.internal').status, 'ok')
  t.match(cli('localhost,127.0.0.1').detail, 'noProxy does not keep kubernetes.docker.internal, .docker.internal direct')
  t.match(cli('localhost,127.0.0.1,kubernetes.docker.internal').detail, 'noProxy does not keep .docker.internal direct')
  t.equal(cli('*').status, 'ok')
  const daemon = dockerFileCheck('daemon', '/d.json', { kind: 'json', value: { proxies: { 'http-proxy': 'https://127.0.0.1', 'no-proxy': 'localhost,127.0.0.1,.docker.internal' } } }, HERE, FLAGS)
  t.match(daemon.detail, 'proxies.http-proxy is https://127.0.0.1, not this proxy-gate (127.0.0.1:3128)', 'https without a port is 443')
  const unreadable = dockerFileCheck('daemon', '/d.json', { kind: 'unreadable', error: 'cannot read /d.json: EACCES' }, HERE, { rules: ' --rules r.json', advertise: '' })
  t.same(unreadable, { name: 'docker daemon', status: 'problem', detail: 'cannot read /d.json: EACCES', fix: 'fix the file by hand (or restore /d.json.proxy-gate-backup), then: proxy-gate docker --target daemon --rules r.json --write' })
})

t.test('the local CA: needed and missing, near expiry, fine', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(caCheck({ needed: true, ok: false, error: 'no CA in /c' }, now, ' --dir /c').fix, 'proxy-gate ca init --dir /c')
  const soon = caCheck({ needed: true, ok: true, notAfter: new Date(now + 10 * 86_400_000), cert: '/c/ca.crt' }, now, '')
  t.equal(soon.status, 'problem')
  t.match(soon.detail, '/c/ca.crt expires in 10 days')
  t.equal(caCheck({ needed: true, ok: true, notAfter: new Date(now + 400 * 86_400_000), cert: '/c/ca.crt' }, now, '').detail, '/c/ca.crt valid until 2027-02-05')
})

t.test('docker info: Docker Desktop, this proxy-gate, another proxy; /readyz 503; the login service', async (t) => {
  const info = (http: string) => dockerInfoCheck({ kind: 'info', http, https: http, noProxy: 'hubproxy.docker.internal' }, HERE)
  t.equal(info('http.docker.internal:3128').status, 'ok')
  t.equal(info('http://127.0.0.1:3128').status, 'ok')
  const other = info('http://proxy.corp:8080')
  t.equal(other.status, 'problem')
  t.match(other.detail, 'dockerd uses http://proxy.corp:8080, http://proxy.corp:8080, not this proxy-gate (127.0.0.1:3128)')
  t.equal(runningCheck({ kind: 'not ready', status: 503 }, '127.0.0.1:3128', 'proxy-gate start').status, 'problem')
  t.same([true, false].map((installed) => loginServiceCheck(installed).status), ['ok', 'not configured'])
  t.equal(loginServiceCheck(false).fix, 'proxy-gate service install')
})

t.test('the probe: answered by another proxy-gate is a problem; the text form', async (t) => {
  const other = probeCheck({ kind: 'answered', confirmed: { ok: false, why: 'did not see it' } }, 'busybox', HERE, 'proxy-gate docker --target cli --write')
  t.equal(other.status, 'problem')
  t.match(other.detail, "this one's admin API cannot confirm it: did not see it")
  t.equal(formatChecks([other, loginServiceCheck(true)]), [
    "PROBLEM  container probe  a proxy-gate answered the container, but this one's admin API cannot confirm it: did not see it",
    '                          fix: pass doctor the --admin-listen and --admin-token-file (or --dir) that "proxy-gate start" uses',
    'ok       login service    proxy-gate starts at login',
  ].join('\n'))
})

t.test('activity keeps the last 64 probes: older nonces are forgotten, memory stays bounded', async (t) => {
  const activity = createActivity()
  const nonce = (i: number) => i.toString(16).padStart(32, '0')
  for (let i = 0; i < 65; i++) activity.observe({ type: 'probe', nonce: nonce(i), client: `10.0.0.1:${1000 + i}` })
  t.equal(activity.probe(nonce(0)), undefined, 'the first of 65 is gone')
  t.match(activity.probe(nonce(1)), { nonce: nonce(1), client: '10.0.0.1:1001' })
  t.match(activity.probe(nonce(64)), { nonce: nonce(64), client: '10.0.0.1:1064' })
})

t.test('probe route: answered without the proxy login that other requests need, and only in that shape', async (t) => {
  const proxy = await startProxy({ allow: ['*.invalid:80'], auth: { users: { alice: await hashPassword('a long password') } } })
  t.teardown(() => proxy.close())
  const nonce = 'a'.repeat(32)
  const send = (path: string) => rawExchange(proxy.port, `GET http://proxy-gate.invalid${path} HTTP/1.1\r\nHost: proxy-gate.invalid\r\nConnection: close\r\n\r\n`)
  const probe = await send(`/doctor/${nonce}`)
  t.equal(statusOf(probe.text), 200)
  t.match(probe.text, `proxy-gate answered probe ${nonce}`)
  t.equal(statusOf((await send('/doctor/other')).text), 407, 'anything else needs the login first')
})
