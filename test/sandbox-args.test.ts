// lib/wiring/sandbox-args.ts: the `docker run` arguments `sandbox run` refuses because they undo
// the confinement, in every spelling, and only before the image: what follows the image is the
// container's command. Through the command line: refused with the reason (exit 2, nothing run),
// or passed on with a warning under --allow-escape.
import t from 'tap'
import { escapes } from '../lib/wiring/sandbox-args.js'
import { sandboxPlan, type SandboxPlan } from '../lib/wiring/sandbox.js'
import { runCli } from './helpers/cli.js'

function plan(): SandboxPlan {
  const planned = sandboxPlan({ name: 'box', subnet: '10.250.0.0/24', image: 'i', rulesDir: '/r', rulesFile: 'rules.json', user: undefined, engine: 'docker', engineVersion: '20.10.24+dfsg1' })
  if (!planned.ok) throw new Error(planned.error)
  return planned.value
}

const refused = (args: string[]): string[] => escapes(plan(), args).map((e) => e.arg)

t.test('every spelling of another network is refused; the sandbox network itself is fine', async (t) => {
  for (const args of [['--network', 'host'], ['--network=host'], ['--net', 'bridge'], ['--net=container:db'], ['--network', 'none'], ['--network', 'name=other,alias=x']]) {
    t.same(refused([...args, 'alpine']), [args.join(' ')], args.join(' '))
  }
  t.same(refused(['--network', 'box', '--net=box', '--network', 'name=box,alias=web', 'alpine']), [])
  t.same(refused(['--network', '--privileged', 'alpine']), ['--network', '--privileged'], 'a missing value does not swallow the next option')
})

t.test('privileges, capabilities, DNS, host entries, the user namespace, IPv6 and the engine socket', async (t) => {
  const cases: [string[], string[]][] = [
    [['--privileged'], ['--privileged']],
    [['--privileged=false'], []],
    [['--cap-add', 'NET_ADMIN'], ['--cap-add NET_ADMIN']],
    [['--cap-add=cap_net_raw'], ['--cap-add=cap_net_raw']],
    [['--cap-add', 'SYS_TIME,ALL'], ['--cap-add SYS_TIME,ALL']],
    [['--cap-add', 'SYS_PTRACE'], []],
    [['--dns', '8.8.8.8'], ['--dns 8.8.8.8']],
    [['--dns=10.250.0.2'], []],
    [['--dns-search', 'corp'], []],
    [['--add-host', 'x:host-gateway'], ['--add-host x:host-gateway']],
    [['--add-host=x=1.2.3.4'], ['--add-host=x=1.2.3.4']],
    [['--add-host', 'gw:10.250.0.1'], ['--add-host gw:10.250.0.1']],
    [['--add-host', 'v6:[::1]'], ['--add-host v6:[::1]']],
    [['--add-host', 'db:10.250.0.7'], []],
    [['--userns', 'host'], ['--userns host']],
    [['--userns=keep-id'], []],
    [['--sysctl', 'net.ipv6.conf.all.disable_ipv6=0'], ['--sysctl net.ipv6.conf.all.disable_ipv6=0']],
    [['--sysctl=net.ipv6.conf.eth0.disable_ipv6=0'], ['--sysctl=net.ipv6.conf.eth0.disable_ipv6=0']],
    [['--sysctl', 'net.ipv4.ip_unprivileged_port_start=0'], []],
    [['-v', '/var/run/docker.sock:/var/run/docker.sock'], ['-v /var/run/docker.sock:/var/run/docker.sock']],
    [['--mount', 'type=bind,src=/run/podman/podman.sock,dst=/s'], ['--mount type=bind,src=/run/podman/podman.sock,dst=/s']],
    [['--use-api-socket'], ['--use-api-socket']],
    [['-e', 'ALL_PROXY=', '--env=HTTPS_PROXY=http://elsewhere:3128'], []],
  ]
  // the proxy variables only say where to go: without them (or with others) the network still leads only to proxy-gate
  for (const [args, expected] of cases) t.same(refused([...args, 'alpine', 'sh']), expected, args.join(' '))
  t.match(escapes(plan(), ['--cap-add', 'NET_ADMIN', 'x'])[0]?.reason, /routes/, 'each refusal says why')
})

t.test('option values are skipped and the image ends the options: the command after it is the container\'s', async (t) => {
  t.same(refused(['-it', '--rm', '-e', 'A=--privileged', '--name', 'x', 'alpine', 'sh', '-c', 'docker run --network host x', '--privileged']), [])
  t.same(refused(['-e', 'A=1', '-p8080:80', '-dit', 'alpine', '--network', 'host']), [], 'short options with attached values, flags bundled')
  t.same(refused(['--', '--network', 'host']), [], '"--" ends the options: what follows is the image and its command')
  t.same(refused(['-eX=1', '-v', '/data:/data', '--privileged', 'alpine']), ['--privileged'], 'options after value-taking short options are still read')
  t.same(refused(['--rm', '--init', '--read-only', '--privileged', 'alpine']), ['--privileged'], 'flags take no value')
})

t.test('sandbox run: refused with the reason, nothing run; --allow-escape passes them on with a warning', async (t) => {
  const env = { PATH: '/nonexistent', DOCKER_HOST: 'unix:///nonexistent.sock' }
  const refusedRun = await runCli(['sandbox', 'run', '--name', 'box', '--', '--network=host', '--cap-add', 'NET_RAW', 'alpine', 'sh'], { env })
  t.equal(refusedRun.code, 2)
  t.match(refusedRun.stderr, /refused: --network=host: workloads join only the sandbox network "box"/)
  t.match(refusedRun.stderr, /refused: --cap-add NET_RAW/)
  t.match(refusedRun.stderr, /--allow-escape passes such arguments on/)
  t.notMatch(refusedRun.stderr, /cannot run docker/, 'the engine was never started')
  const allowed = await runCli(['sandbox', 'run', '--name', 'box', '--allow-escape', '--', '--network=host', 'alpine', 'sh'], { env })
  t.match(allowed.stderr, /WARNING: passing on --network=host/)
  t.match(allowed.stderr, /cannot run docker/, 'then docker run is started (here: no docker on PATH)')
})
