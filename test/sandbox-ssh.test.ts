// ci: floor line only: it drives a real container engine, whose confinement is the same under any Node
// git over SSH from a sandbox workload, end to end with a real Docker engine, real OpenSSH and git:
// `sandbox up` with a rule for git.test:22, then a workload started by `sandbox run` (an image with
// ssh, git and OpenBSD nc copied from this machine) clones a repository from sshd with only the
// ALL_PROXY that `run` set: GIT_SSH_COMMAND's ProxyCommand is `nc -X 5 -x ${ALL_PROXY#socks5h://}`.
// A denied name on port 22 fails, proxy-gate's log shows the SOCKS denial and sshd never sees it;
// dialling sshd's address directly from the workload fails (no route out but proxy-gate).
//
// The engine runs in a network namespace of its own (a child of the suite's, joined to it by a veth
// pair whose suite end holds sshd and the fixture DNS server), so that its bridges and iptables rules
// never meet those of sandbox.test.ts's engine, which runs in the suite's namespace at the same time.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CLI_PATH } from './helpers/cli.js'
import { engineCli, engineMissing, importBinariesImage, importNodeImage, startEngine, type Engine } from './helpers/docker.js'
import { startDns } from './helpers/dns.js'
import { REPO_FILE, REPO_TEXT, SSH_SKIP, startSshd } from './helpers/ssh.js'

const NAME = 'pgssh'
const SUBNET = '10.248.0.0/24'
const BASE = 'local/node-base:ssh'
const IMAGE = 'proxy-gate:sandbox-ssh'
const TOOLS = 'local/ssh-tools:test'
/**
 * The veth pair: the suite's end (sshd, DNS) and the engine's namespace's end. Stand-in public
 * addresses: proxy-gate's address guard refuses private ones (and nothing here leaves the machine).
 */
const HOST_END = { dev: 'pgssh0', address: '11.22.34.1' }
const ENGINE_END = { dev: 'pgssh1', address: '11.22.34.2' }

const missing = (): string | false => engineMissing() || SSH_SKIP

function run(command: string, args: readonly string[]): void {
  const r = spawnSync(command, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${r.stderr}`)
}

/** A process that holds a new network namespace: loopback up, a veth pair to this one. */
async function childNamespace(): Promise<{ path: string; close(): Promise<void> }> {
  const args = ['--net', 'sh', '-c', 'echo ready; exec sleep 100000']
  // through setpriv where it is there: the holder dies with the test process even when tap kills it
  const holder: ChildProcess = existsSync('/usr/bin/setpriv') ? spawn('/usr/bin/setpriv', ['--pdeathsig', 'KILL', 'unshare', ...args]) : spawn('unshare', args)
  await once(holder.stdout ?? holder, 'data')
  const pid = String(holder.pid)
  const path = `/proc/${pid}/ns/net`
  const inside = (ipArgs: string): void => run('nsenter', [`--net=${path}`, 'ip', ...ipArgs.split(' ')])
  run('ip', ['link', 'add', HOST_END.dev, 'type', 'veth', 'peer', 'name', ENGINE_END.dev, 'netns', pid])
  run('ip', ['addr', 'add', `${HOST_END.address}/30`, 'dev', HOST_END.dev])
  run('ip', ['link', 'set', HOST_END.dev, 'up'])
  inside('link set lo up')
  inside(`addr add ${ENGINE_END.address}/30 dev ${ENGINE_END.dev}`)
  inside(`link set ${ENGINE_END.dev} up`)
  return {
    path,
    close: async () => {
      const exited = once(holder, 'exit')
      holder.kill('SIGKILL')
      await exited // the namespace goes with its last process, and the veth pair with it
    },
  }
}

/** The proxy-gate command line with the engine's DOCKER_HOST, to its end. */
const cli = (engine: Engine, args: readonly string[]): ReturnType<typeof engineCli> => engineCli(CLI_PATH, engine, args)

/** The binaries the workload image gets, where this machine has them. */
function binary(name: string): string {
  return spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim()
}

/**
 * Runs in the workload (dash): `git clone` over SSH through proxy-gate's SOCKS5 listener,
 * with the address taken from ALL_PROXY and nothing else; then a denied name, then sshd directly.
 * Each step prints a line "@step value" for the test to read.
 */
const WORKLOAD = String.raw`
echo "@all_proxy $ALL_PROXY"
export GIT_SSH_COMMAND='ssh -F /dev/null -i /ssh/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=/ssh/known_hosts -o StrictHostKeyChecking=yes -o ProxyCommand="nc -X 5 -x ${'$'}{ALL_PROXY#socks5h://} %h %p"'
git clone -q "$ALLOWED_URL" /tmp/clone 2>/tmp/clone.err
echo "@clone $?"
cat /tmp/clone.err
echo "@file $(cat /tmp/clone/${REPO_FILE})"
git clone -q "$DENIED_URL" /tmp/denied 2>/tmp/denied.err
echo "@denied $?"
echo "@denied_said $(tr '\r\n' '  ' </tmp/denied.err)"
nc -z -v -w 5 "$SSHD" 22 2>/tmp/direct.err
echo "@direct $?"
echo "@direct_said $(cat /tmp/direct.err)"
`

/** The value of the workload's "@step value" line. */
function step(out: string, name: string): string | undefined {
  return new RegExp(`^@${name} (.*)$`, 'm').exec(out)?.[1]
}

// two images built and imported, dockerd started, sandbox up (with its verification) and a workload: about a minute on two cores
t.setTimeout(240_000)

t.test('sandbox: git clone over SSH from a workload with only the ALL_PROXY that run set', { skip: missing() }, async (t) => {
  const namespace = await childNamespace()
  t.teardown(() => namespace.close())
  const engine = await startEngine([], namespace.path)
  t.teardown(() => engine.stop())
  const sshd = await startSshd(HOST_END.address)
  t.teardown(() => sshd.close())
  // denied.test names sshd too: only the rules stand between it and a login
  const dns = await startDns({ 'git.test': { A: [HOST_END.address] }, 'denied.test': { A: [HOST_END.address] } }, { host: HOST_END.address, port: 0 })
  t.teardown(() => dns.close())

  importNodeImage(engine, BASE)
  const built = await cli(engine, ['sandbox', 'build', '--base', BASE, '--tag', IMAGE])
  t.equal(built.code, 0, `sandbox build: ${built.out.slice(-500)}`)
  importBinariesImage(engine, TOOLS, ['sh', 'cat', 'tr', 'ssh', 'git', 'nc'].map(binary), {
    '/ssh/client_key': { text: readFileSync(join(sshd.dir, 'client_key'), 'utf8'), mode: 0o600 },
    '/ssh/known_hosts': { text: readFileSync(join(sshd.dir, 'known_hosts'), 'utf8'), mode: 0o644 },
  })

  const rulesDir = mkdtempSync(join(tmpdir(), 'pg-sandbox-ssh-rules-'))
  t.teardown(() => rmSync(rulesDir, { recursive: true, force: true }))
  chmodSync(rulesDir, 0o755)
  writeFileSync(join(rulesDir, 'rules.json'), JSON.stringify({ allow: ['git.test:22'], dns: { servers: [dns.server] } }), { mode: 0o644 })
  const up = await cli(engine, ['sandbox', 'up', '--name', NAME, '--rules', join(rulesDir, 'rules.json'), '--image', IMAGE, '--subnet', SUBNET, '--probe-address', HOST_END.address])
  t.equal(up.code, 0, `sandbox up: ${up.out.slice(-800)}`)
  t.match(up.out, /verified: \d+ probes, no way out but proxy-gate\n[^]*SOCKS5 socks5h:\/\/10\.248\.0\.2:1080/, 'up verified the network (sshd\'s address among the probes) and names the SOCKS5 listener')
  t.teardown(() => cli(engine, ['sandbox', 'down', '--name', NAME]))
  const connections = (): number => sshd.log().match(/Connection from /g)?.length ?? 0
  t.equal(connections(), 0, "verify's probes never reached sshd")

  const env = { ALLOWED_URL: `${sshd.user}@git.test:${sshd.repo}`, DENIED_URL: `${sshd.user}@denied.test:${sshd.repo}`, SSHD: HOST_END.address }
  const workload = await cli(engine, ['sandbox', 'run', '--name', NAME, '--', ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]), TOOLS, 'sh', '-c', WORKLOAD])
  const out = workload.out
  t.equal(workload.code, 0, `the workload ran: ${out.slice(-800)}`)
  t.equal(step(out, 'all_proxy'), 'socks5h://10.248.0.2:1080', 'sandbox run set ALL_PROXY to the SOCKS5 listener')
  t.equal(step(out, 'clone'), '0', `git clone over SSH exits 0: ${out}`)
  t.equal(step(out, 'file'), REPO_TEXT.trim(), "the server's commit arrived, checked out")
  t.equal(step(out, 'denied'), '128', 'git clone from a denied name fails')
  t.match(step(out, 'denied_said'), /Connection not allowed by ruleset[^]*Could not read from remote repository/, 'nc read reply 0x02')
  t.equal(step(out, 'direct'), '1', 'sshd is out of reach without proxy-gate')
  t.match(step(out, 'direct_said'), /port 22 \(tcp\) failed: No route to host$/, "the workload's only route is to proxy-gate's network")
  t.match(sshd.log(), new RegExp(`Accepted publickey for ${sshd.user} from ${ENGINE_END.address.replaceAll('.', '\\.')} `), 'sshd logged in the clone, from the engine\'s namespace (through proxy-gate\'s egress network)')
  t.equal(connections(), 1, 'sshd saw one connection: the allowed clone; neither the denied name nor the direct dial reached it')

  const logs = engine.docker(['logs', `${NAME}-proxy`])
  const log = (logs.stdout + logs.stderr).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
  const decision = (target: string) => log.find((l) => l.message === 'decision' && l.target === target)
  t.match(decision('git.test:22'), { listener: 'socks', decision: 'allow', rule: 'allow[0] git.test:22' }, 'the clone went through the SOCKS5 listener by name')
  t.match(decision('denied.test:22'), { listener: 'socks', decision: 'deny', reason: 'no-rule', suggestion: 'denied.test:22' }, "and the denial is in proxy-gate's log, with the rule to add")
  t.equal(dns.queries('denied.test'), 0, 'proxy-gate never resolved the denied name')
})
