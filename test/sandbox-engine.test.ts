// lib/wiring/engine.ts and lib/cli/engine.ts: the sandbox asks its CLI which engine it drives
// (`version`), so a `docker` that is really Podman gets Podman's construction, a Docker CLI on
// Podman's Docker API is refused with the reason, and an engine that is not there is said to be.
// The CLIs here are stand-in scripts that answer `version` as the real ones do and log the rest.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { identifyEngine } from '../lib/wiring/engine.js'
import { runCli } from './helpers/cli.js'

// what Debian's podman 4.3.1, a Docker CLI 28.2 with a Debian 20.10.24 engine and the same CLI on
// `podman system service` print, shortened (Podman's API also lists a component named "Engine")
const PODMAN = { Client: { APIVersion: '4.3.1', Version: '4.3.1', GoVersion: 'go1.19.8', GitCommit: '', BuiltTime: 'Thu Jan  1 00:00:00 1970', Built: 0, OsArch: 'linux/amd64', Os: 'linux' } }
const DOCKER_CLIENT = { Version: '28.2.2', ApiVersion: '1.41', DefaultAPIVersion: '1.50', GitCommit: 'e6534b4', GoVersion: 'go1.24.3', Os: 'linux', Arch: 'amd64', Context: 'default' }
const DOCKER = { Client: DOCKER_CLIENT, Server: { Platform: { Name: '' }, Components: [{ Name: 'Engine', Version: '20.10.24+dfsg1' }, { Name: 'containerd', Version: '1.6.20~ds1' }], Version: '20.10.24+dfsg1', ApiVersion: '1.41' } }
const DOCKER_ON_PODMAN = { Client: DOCKER_CLIENT, Server: { Platform: { Name: 'linux/amd64/debian-12' }, Components: [{ Name: 'Podman Engine', Version: '4.3.1' }, { Name: 'Conmon', Version: 'conmon version 2.1.6' }, { Name: 'Engine', Version: '4.3.1' }], Version: '4.3.1', ApiVersion: '1.41' } }

t.test('the version output names the engine', async (t) => {
  const podman = { ok: true, value: { kind: 'podman', version: '4.3.1', name: 'Podman 4.3.1' } }
  t.same(identifyEngine('podman', JSON.stringify(PODMAN)), podman)
  t.same(identifyEngine('docker', JSON.stringify(PODMAN)), podman, 'a docker that is Podman')
  t.same(identifyEngine('podman', JSON.stringify({ ...PODMAN, Server: { ...PODMAN.Client, Version: '5.0.0' } })), { ok: true, value: { kind: 'podman', version: '5.0.0', name: 'Podman 5.0.0' } }, 'podman --remote: the server')
  t.same(identifyEngine('docker', JSON.stringify(DOCKER)), { ok: true, value: { kind: 'docker', version: '20.10.24+dfsg1', name: 'Docker Engine 20.10.24+dfsg1' } })
  const onPodman = identifyEngine('docker', JSON.stringify(DOCKER_ON_PODMAN))
  t.notOk(onPodman.ok)
  t.match(onPodman.ok ? '' : onPodman.error, /Podman 4\.3\.1 through its Docker-compatible API.*gateway.*--engine podman/)
  const noServer = identifyEngine('docker', JSON.stringify({ Client: DOCKER_CLIENT, Server: null }))
  t.match(noServer.ok ? '' : noServer.error, /docker cannot reach its engine/)
  const garbage = identifyEngine('docker', 'Usage: docker [OPTIONS]')
  t.match(garbage.ok ? '' : garbage.error, /did not describe an engine: Usage/)
})

/** A temporary folder, removed when the test ends. */
function folder(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'pg-engine-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A folder with a stand-in CLI named `name` that prints `version` and logs every call. */
function standIn(t: Test, name: string, version: object, inspect = ''): { path: string; calls: () => string[][] } {
  const dir = folder(t)
  const log = join(dir, 'calls')
  writeFileSync(join(dir, 'version.json'), JSON.stringify(version))
  writeFileSync(join(dir, 'inspect.json'), inspect)
  const script = `#!/bin/sh
printf '%s\\037' "$@" >> '${log}'; echo >> '${log}'
case "$1 $2" in
  "version --format") cat '${dir}/version.json' ;;
  "network inspect") [ -s '${dir}/inspect.json' ] || exit 1; [ "$3" = -f ] && echo '10.250.0.0/24 ' || cat '${dir}/inspect.json' ;;
  "container inspect") exit 1 ;;
esac
exit 0
`
  writeFileSync(join(dir, name), script)
  chmodSync(join(dir, name), 0o755)
  const calls = (): string[][] => readFileSync(log, 'utf8').split('\n').filter(Boolean).map((line) => line.split('\x1f').slice(0, -1))
  return { path: `${dir}:/usr/bin:/bin`, calls }
}

t.test('a docker that is really Podman gets Podman\'s construction, in run and in the Compose file', async (t) => {
  const cli = standIn(t, 'docker', PODMAN)
  const compose = await runCli(['sandbox', 'compose', '--name', 'box'], { env: { PATH: cli.path } })
  t.equal(compose.code, 0, compose.stderr)
  t.match(compose.stdout, /external: true/)
  const run = await runCli(['sandbox', 'run', '--name', 'box', '--', 'alpine', 'true'], { env: { PATH: cli.path } })
  t.equal(run.code, 0, run.stderr)
  const runCall = cli.calls().find((c) => c[0] === 'run')
  t.match(runCall?.join(' '), /^run --rm --network box --dns 10\.250\.0\.2 --sysctl net\.ipv6\.conf\.eth0\.disable_ipv6=1 --cap-drop NET_RAW .* alpine true$/)
  t.ok(cli.calls().some((c) => c.join(' ') === 'network inspect -f {{range .Subnets}}{{.Subnet}} {{end}} box'), "Podman's inspect template for the subnet")
})

t.test('a Docker CLI on Podman\'s Docker API is refused with the reason; a missing engine is named', async (t) => {
  const cli = standIn(t, 'docker', DOCKER_ON_PODMAN)
  const up = await runCli(['sandbox', 'up', '--name', 'box'], { env: { PATH: cli.path } })
  t.equal(up.code, 1)
  t.match(up.stderr, /Docker-compatible API/)
  t.notOk(cli.calls().some((c) => c[0] === 'run' || c[1] === 'create'), 'nothing was created')
  const none = await runCli(['sandbox', 'run', '--engine', 'podman', '--', 'alpine'], { env: { PATH: '/nonexistent' } })
  t.equal(none.code, 1)
  t.match(none.stderr, /cannot run podman/)
  const compose = await runCli(['sandbox', 'compose', '--engine', 'podman'], { env: { PATH: '/nonexistent' } })
  t.equal(compose.code, 0, 'compose prints the file --engine names when no engine answers')
  t.match(compose.stderr, /printing the podman file as --engine says/)
  t.match(compose.stdout, /external: true/)
})

t.test('up does not put proxy-gate on an existing Podman network that leaks, and run does not start a workload there', async (t) => {
  const leaky = [{ name: 'box', internal: true, dns_enabled: true, subnets: [{ subnet: '10.250.0.0/24', gateway: '10.250.0.1' }] }]
  const cli = standIn(t, 'podman', PODMAN, JSON.stringify(leaky))
  const rules = join(folder(t), 'rules.json')
  writeFileSync(rules, JSON.stringify({ allow: ['example.com'] }))
  const up = await runCli(['sandbox', 'up', '--engine', 'podman', '--name', 'box', '--rules', rules], { env: { PATH: cli.path } })
  t.equal(up.code, 1)
  t.match(up.stderr, /network box exists but is not the airtight kind that up makes: Podman's DNS is on .*gateway 10\.250\.0\.1.*sandbox down --name box/)
  const run = await runCli(['sandbox', 'run', '--engine', 'podman', '--name', 'box', '--', 'alpine'], { env: { PATH: cli.path } })
  t.equal(run.code, 1)
  t.match(run.stderr, /sandbox run: network box exists but is not the airtight kind/)
  t.notOk(cli.calls().some((c) => c[0] === 'run' || c[1] === 'create'), 'no container and no network made')
})
