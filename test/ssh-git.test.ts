// ssh and git over SSH through proxy-gate, with real OpenSSH (sshd on port 22 of a stand-in
// address, a fixture DNS name for it) and OpenBSD netcat as ssh's ProxyCommand: through the HTTP
// port (`nc -X connect -x PROXY %h %p`) and the SOCKS5 listener (`nc -X 5 -x SOCKS %h %p`), and the
// README's "SSH, git and other TCP" recipes run as written. A name rule on port 22 lets them
// through; a name or an IP literal without one never reaches port 22, and proxy-gate's log says why.
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startDns } from './helpers/dns.js'
import { NETNS_SKIP, startCanary } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'
import { REPO_FILE, REPO_TEXT, shellQuote, SSH_SKIP, startSshd, type TestSshd } from './helpers/ssh.js'

const SKIP = NETNS_SKIP || SSH_SKIP
// seven sshd starts, key generation and git clones: about 17 s alone, more beside the rest of the suite
t.setTimeout(120_000)
const SERVER = '11.22.33.44'
const OTHER = '11.22.33.45'

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

function exec(command: string, args: readonly string[], env: Readonly<Record<string, string>> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(command, args, { env: { ...process.env, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const RECIPES = README.slice(README.indexOf('## SSH, git and other TCP'), README.indexOf('## The sandbox: proxy-gate as the only way out'))

/** The README's recipe line (in "SSH, git and other TCP") that holds `has`, without its # comment. */
function recipe(has: string): string {
  const line = RECIPES.split('\n').find((l) => l.includes(has))
  if (line === undefined) throw new Error(`no recipe with ${has} in the README`)
  return line.replace(/\s+#.*$/, '')
}

/** A README recipe as it runs here: the test server for GitHub, proxy-gate's real port, the test key and pinned host key. */
function adapted(line: string, sshd: TestSshd, from: string, to: string): string {
  return line
    .replaceAll(from, to)
    .replace('git@github.com:owner/repo.git', `${sshd.user}@git.test:${sshd.repo}`)
    .replace('git@github.com', `${sshd.user}@git.test`)
    .replace(/\bssh -o /, `ssh ${sshd.sshOptions.map(shellQuote).join(' ')} -o `)
}

const decisionFor = (target: string) => (l: LogLine) => l.message === 'decision' && l.target === target

interface Setup {
  readonly sshd: TestSshd
  readonly proxy: TestProxy
  /** ssh's ProxyCommand through proxy-gate's HTTP port */
  readonly viaHttp: string
  /** ssh's ProxyCommand through its SOCKS5 listener */
  readonly viaSocks: string
  readonly socksPort: number
  /** counts connections to port 22 of the address denied.test resolves to */
  readonly canaryConnections: () => number
}

/** sshd at git.test:22, a canary at denied.test:22, proxy-gate allowing git.test:22 only, with its SOCKS5 listener. */
async function setup(t: Test): Promise<Setup> {
  const sshd = await startSshd(SERVER)
  const canary = await startCanary(OTHER, 22)
  const dns = await startDns({ 'git.test': { A: [SERVER] }, 'denied.test': { A: [OTHER] } })
  const proxy = await startProxy({ allow: ['git.test:22'], dns: { servers: [dns.server], timeoutMs: 2000 }, socks: { listen: '127.0.0.1:0' } })
  const socksPort = proxy.proxy.socksAddress()?.port
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
    await canary.close()
    await sshd.close()
  })
  return {
    sshd,
    proxy,
    viaHttp: `nc -X connect -x 127.0.0.1:${proxy.port} %h %p`,
    viaSocks: `nc -X 5 -x 127.0.0.1:${String(socksPort)} %h %p`,
    socksPort: socksPort ?? 0,
    canaryConnections: () => canary.connections(),
  }
}

t.test('ssh through the HTTP port: an allowed name on 22 logs in; a denied name or IP literal never reaches port 22', { skip: SKIP }, async (t) => {
  const { sshd, proxy, viaHttp, canaryConnections } = await setup(t)
  const ssh = sshd.sshCommand(viaHttp)
  const [program = 'ssh', ...options] = ssh
  const allowed = await exec(program, [...options, `${sshd.user}@git.test`, 'echo logged-in-over-ssh'])
  t.equal(allowed.code, 0, `ssh exits 0: ${allowed.stderr}`)
  t.equal(allowed.stdout, 'logged-in-over-ssh\n', 'the command ran on the server (whose host key the client pinned)')
  t.match(sshd.log(), new RegExp(`Accepted publickey for ${sshd.user} from `), 'sshd logged the client in with the test key')
  t.match(await logLine(proxy, decisionFor('git.test:22'), 'the allowed decision'), { method: 'CONNECT', decision: 'allow', rule: 'allow[0] git.test:22', chosen: SERVER })

  const denied = await exec(program, [...options, `${sshd.user}@denied.test`, 'true'])
  t.equal(denied.code, 255, 'ssh fails')
  t.match(denied.stderr, /nc: Proxy error: "HTTP\/1\.1 403 Forbidden"/, 'nc says the proxy refused (ssh itself only sees the connection close)')
  t.match(await logLine(proxy, decisionFor('denied.test:22'), 'the denial'), { decision: 'deny', reason: 'no-rule', suggestion: 'denied.test:22' })

  const literal = await exec(program, [...options, `${sshd.user}@${OTHER}`, 'true'])
  t.equal(literal.code, 255, 'an IP literal without an IP rule fails too')
  t.match(await logLine(proxy, decisionFor(`${OTHER}:22`), 'the IP denial'), { decision: 'deny', reason: 'no-rule' })
  t.equal(canaryConnections(), 0, 'nothing reached port 22 of the denied address')
})

t.test('git clone over SSH through the HTTP port (GIT_SSH_COMMAND), and not from a denied name', { skip: SKIP }, async (t) => {
  const { sshd, proxy, viaHttp, canaryConnections } = await setup(t)
  const env = { GIT_SSH_COMMAND: sshd.gitSshCommand(viaHttp), GIT_TERMINAL_PROMPT: '0' }
  const into = join(sshd.dir, 'clone')
  const cloned = await exec('git', ['clone', '-q', `${sshd.user}@git.test:${sshd.repo}`, into], env)
  t.equal(cloned.code, 0, `git clone exits 0: ${cloned.stderr}`)
  t.equal(readFileSync(join(into, REPO_FILE), 'utf8'), REPO_TEXT, "the server's commit, checked out")
  t.match(await logLine(proxy, decisionFor('git.test:22'), 'the allowed decision'), { decision: 'allow', rule: 'allow[0] git.test:22' })

  const refused = await exec('git', ['clone', '-q', `${sshd.user}@denied.test:${sshd.repo}`, join(sshd.dir, 'refused')], env)
  t.equal(refused.code, 128, 'git clone fails')
  t.match(refused.stderr, /Could not read from remote repository/)
  t.match(await logLine(proxy, decisionFor('denied.test:22'), 'the denial'), { decision: 'deny', reason: 'no-rule' })
  t.equal(canaryConnections(), 0, 'nothing reached port 22 of the denied address')
})

t.test("the README's ssh recipes through SOCKS5 and the HTTP port work as written", { skip: SKIP }, async (t) => {
  const { sshd, proxy, socksPort } = await setup(t)
  const recipes: [string, string, string][] = [
    ["ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p' git@github.com", '127.0.0.1:1080', `127.0.0.1:${socksPort}`],
    ["ssh -o ProxyCommand='nc -X connect -x 127.0.0.1:3128 %h %p' git@github.com", '127.0.0.1:3128', `127.0.0.1:${proxy.port}`],
  ]
  for (const [written, from, to] of recipes) {
    t.equal(recipe(written), written, 'the README has this line')
    const ran = await exec('sh', ['-c', `${adapted(written, sshd, from, to)} echo readme-recipe`])
    t.equal(ran.code, 0, `${written}: ${ran.stderr}`)
    t.equal(ran.stdout, 'readme-recipe\n')
  }
  t.same(proxy.logs().filter((l) => l.message === 'decision').map((l) => [l.listener ?? 'proxy port', l.target, l.decision]), [['socks', 'git.test:22', 'allow'], ['proxy port', 'git.test:22', 'allow']])
})

t.test('ssh through SOCKS5 (nc -X 5): an allowed name on 22 logs in; a denied name or IP literal never reaches port 22', { skip: SKIP }, async (t) => {
  const { sshd, proxy, viaSocks, canaryConnections } = await setup(t)
  const [program = 'ssh', ...options] = sshd.sshCommand(viaSocks)
  const allowed = await exec(program, [...options, `${sshd.user}@git.test`, 'echo logged-in-over-socks'])
  t.equal(allowed.code, 0, `ssh exits 0: ${allowed.stderr}`)
  t.equal(allowed.stdout, 'logged-in-over-socks\n')
  t.match(await logLine(proxy, decisionFor('git.test:22'), 'the allowed decision'), { listener: 'socks', decision: 'allow', rule: 'allow[0] git.test:22', chosen: SERVER })

  const denied = await exec(program, [...options, `${sshd.user}@denied.test`, 'true'])
  t.equal(denied.code, 255, 'ssh fails')
  t.match(denied.stderr, /Connection not allowed by ruleset/, 'nc reads reply 0x02')
  t.match(await logLine(proxy, decisionFor('denied.test:22'), 'the denial'), { listener: 'socks', decision: 'deny', reason: 'no-rule', suggestion: 'denied.test:22' })

  const literal = await exec(program, [...options, `${sshd.user}@${OTHER}`, 'true'])
  t.equal(literal.code, 255, 'an IP literal without an IP rule fails too')
  t.match(await logLine(proxy, decisionFor(`${OTHER}:22`), 'the IP denial'), { listener: 'socks', decision: 'deny', reason: 'no-rule' })
  t.equal(canaryConnections(), 0, 'nothing reached port 22 of the denied address')
})

t.test("git clone over SSH through SOCKS5 with the README's GIT_SSH_COMMAND and ~/.ssh/config block, as written", { skip: SKIP }, async (t) => {
  const { sshd, proxy, socksPort, canaryConnections } = await setup(t)
  const socks = `127.0.0.1:${socksPort}`
  const line = recipe('GIT_SSH_COMMAND=')
  t.equal(line, `GIT_SSH_COMMAND="ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:1080 %h %p'" git clone git@github.com:owner/repo.git`)
  const into = join(sshd.dir, 'clone')
  const cloned = await exec('sh', ['-c', `${adapted(line, sshd, '127.0.0.1:1080', socks)} ${into}`], { GIT_TERMINAL_PROMPT: '0' })
  t.equal(cloned.code, 0, `git clone exits 0: ${cloned.stderr}`)
  t.equal(readFileSync(join(into, REPO_FILE), 'utf8'), REPO_TEXT, "the server's commit, checked out")
  t.match(await logLine(proxy, decisionFor('git.test:22'), 'the allowed decision'), { listener: 'socks', decision: 'allow' })

  const block = /```\n(Host github\.com[^`]*)```/.exec(RECIPES)?.[1]
  t.ok(block, 'the README has the ~/.ssh/config block')
  const config = join(sshd.dir, 'ssh_config')
  writeFileSync(config, (block ?? '').replace(/^Host .*$/m, 'Host git.test denied.test').replaceAll('127.0.0.1:1080', socks))
  const options = sshd.sshOptions.filter((o, i, all) => o !== '-F' && all[i - 1] !== '-F')
  const env = { GIT_SSH_COMMAND: ['ssh', '-F', config, ...options].map(shellQuote).join(' '), GIT_TERMINAL_PROMPT: '0' }
  const again = await exec('git', ['clone', '-q', `${sshd.user}@git.test:${sshd.repo}`, join(sshd.dir, 'again')], env)
  t.equal(again.code, 0, `git clone with the config block exits 0: ${again.stderr}`)
  t.equal(readFileSync(join(sshd.dir, 'again', REPO_FILE), 'utf8'), REPO_TEXT)

  const refused = await exec('git', ['clone', '-q', `${sshd.user}@denied.test:${sshd.repo}`, join(sshd.dir, 'refused')], env)
  t.equal(refused.code, 128, 'git clone of a denied name fails')
  t.match(await logLine(proxy, decisionFor('denied.test:22'), 'the denial'), { listener: 'socks', decision: 'deny', reason: 'no-rule' })
  t.equal(canaryConnections(), 0, 'nothing reached port 22 of the denied address')
})

t.test('ssh to a TLS port (as ssh.github.com:443) is refused as not-tls (ConnectTimeout ends the wait), and goes through with tls.allowNonTls', { skip: SKIP }, async (t) => {
  const TLS_PORT = 2443 // a TLS port of these rules only: 443 on the stand-in address belongs to other tests
  const sshd = await startSshd(SERVER, [TLS_PORT])
  const dns = await startDns({ 'ssh.git.test': { A: [SERVER] } })
  const rules = { allow: [`ssh.git.test:${TLS_PORT}`], dns: { servers: [dns.server], timeoutMs: 2000 }, tls: { ports: [443, TLS_PORT] }, socks: { listen: '127.0.0.1:0' } }
  const proxy = await startProxy(rules)
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
    await sshd.close()
  })
  const [program = 'ssh', ...options] = sshd.sshCommand(`nc -X 5 -x 127.0.0.1:${String(proxy.proxy.socksAddress()?.port)} %h %p`)
  // proxy-gate closes the tunnel once it sees ssh's banner, but nc does not pass that close on while ssh's side is open
  const login = ['-o', 'ConnectTimeout=2', '-p', String(TLS_PORT), `${sshd.user}@ssh.git.test`, 'echo over-a-tls-port']
  const refused = await exec(program, [...options, ...login])
  t.equal(refused.code, 255, 'ssh fails')
  t.match(refused.stderr, /Connection timed out during banner exchange/, 'when ConnectTimeout runs out')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.reason === 'not-tls', 'the not-tls line'), { listener: 'socks', target: `ssh.git.test:${TLS_PORT}`, decision: 'deny' })
  t.notMatch(sshd.log(), /Accepted publickey/, 'the server never saw a login')

  proxy.reload({ ...rules, tls: { ...rules.tls, allowNonTls: true } })
  const allowed = await exec(program, [...options, ...login])
  t.equal(allowed.code, 0, allowed.stderr)
  t.equal(allowed.stdout, 'over-a-tls-port\n')
})

t.test('a reload that denies an open ssh session closes it; ServerAliveInterval makes ssh notice', { skip: SKIP }, async (t) => {
  const { sshd, proxy, viaSocks } = await setup(t)
  const [program = 'ssh', ...options] = sshd.sshCommand(viaSocks)
  const child = spawn(program, [...options, '-o', 'ServerAliveInterval=1', `${sshd.user}@git.test`, 'echo in; exec sleep 60'])
  t.teardown(() => child.kill())
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = once(child, 'exit') as Promise<[number | null]>
  await once(child.stdout, 'data')
  t.same(proxy.reload({ allow: [], dns: { servers: ['127.0.0.1:9'] }, socks: { listen: '127.0.0.1:0' } }), { closed: 1, kept: 0 }, 'the tunnel is closed')
  t.match(await logLine(proxy, (l) => l.message === 'revoked', 'the revoked line'), { kind: 'tunnel', target: 'git.test:22', reason: 'no-rule' })
  const [code] = await exited
  t.equal(code, 255, `ssh ends at its next keepalive, long before the remote command would: ${stderr.trim()}`)
})
