// The honest test of secrets: a real `git clone` over HTTPS, through proxy-gate (dist/cli.js), with
// the placeholder as the password. The origin is git http-backend (CGI) behind a small Node TLS
// server that accepts only the real token in Basic credentials.
import { execFile, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { createCa, writeCa } from '../lib/certs/ca.js'
import { runCli, startCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { selfSigned } from './helpers/net.js'

const run = promisify(execFile)
const BACKEND = '/usr/lib/git-core/git-http-backend'
const GIT = spawnSync('git', ['--version']).status === 0
const TOKEN = `ghp_${randomBytes(18).toString('hex')}`

/** One CGI request to git http-backend: the request body in, its headers and body out. */
function cgi(root: string, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'https://git.bound.test')
  const child = spawn(BACKEND, [], {
    env: {
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.slice(1),
      REQUEST_METHOD: req.method ?? 'GET',
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      HTTP_CONTENT_ENCODING: req.headers['content-encoding'] ?? '',
      GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
      REMOTE_USER: 'x-access-token',
    },
  })
  req.pipe(child.stdin)
  let head: Buffer = Buffer.alloc(0)
  let started = false
  child.stdout.on('data', (chunk: Buffer) => {
    if (started) return void res.write(chunk)
    head = Buffer.concat([head, chunk])
    const end = head.indexOf('\r\n\r\n')
    if (end < 0) return
    started = true
    const lines = head.subarray(0, end).toString('latin1').split('\r\n')
    const status = Number(/^Status: (\d+)/m.exec(lines.join('\n'))?.[1] ?? 200)
    const headers = Object.fromEntries(lines.filter((l) => !l.startsWith('Status:')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]))
    res.writeHead(status, headers)
    res.write(head.subarray(end + 4))
  })
  child.stdout.on('end', () => res.end())
}

t.test('git clone over HTTPS with the placeholder as the password: the origin sees only the token', { skip: GIT && existsSync(BACKEND) ? false : 'needs git and git http-backend' }, async (t) => {
  const dir = tempDir('secrets-git')
  const root = join(dir, 'srv')
  mkdirSync(root)
  const git = (args: string[], cwd = dir) => run('git', ['-c', 'init.defaultBranch=main', '-c', 'user.name=t', '-c', 'user.email=t@t.test', ...args], { cwd, env: { ...process.env, HOME: dir, GIT_TERMINAL_PROMPT: '0', GIT_SSL_CAINFO: join(dir, 'ca.crt') } })
  await git(['init', '-q', 'work'])
  writeFileSync(join(dir, 'work', 'README'), 'secrets stay out\n')
  await git(['add', 'README'], join(dir, 'work'))
  await git(['commit', '-q', '-m', 'first'], join(dir, 'work'))
  await git(['clone', '-q', '--bare', join(dir, 'work'), join(root, 'repo.git')])

  const seen: string[] = []
  const tls = selfSigned(['git.bound.test'])
  const server = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    const authorization = req.headers.authorization ?? ''
    seen.push(authorization)
    if (authorization !== `Basic ${Buffer.from(`x-access-token:${TOKEN}`).toString('base64')}`) {
      return void res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"' }).end('token required\n')
    }
    cgi(root, req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const dns = await startDns({ 'git.bound.test': { A: ['127.0.0.1'] } })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    await dns.close()
  })

  const ca = await createCa()
  const written = writeCa(dir, ca)
  if (!written.ok) throw new Error(written.error)
  writeFileSync(join(dir, 'origin.pem'), tls.cert)
  const rules = writeJson(dir, 'rules.json', {
    listen: '127.0.0.1:0',
    allow: [`git.bound.test:${port}`, `127.0.0.1:${port}`],
    dns: { servers: [dns.server] },
    tls: { ports: [port], upstreamCaFiles: ['origin.pem'] },
    secrets: { GITHUB_TOKEN: { from: 'env:PG_TEST_TOKEN', hosts: [`git.bound.test:${port}`] } },
  })
  const env = { PG_TEST_TOKEN: TOKEN }
  const printed = await runCli(['secrets', 'env', '--rules', rules, '--dir', dir], { env })
  const placeholder = /^GITHUB_TOKEN=(\S+)$/m.exec(printed.stdout)?.[1] ?? ''
  t.match(placeholder, /^ghp_/)
  const proxy = await startCli(['start', '--rules', rules, '--dir', dir, '--log-format', 'json', '--log-level', 'debug', '--admin-listen', 'off'], { env })
  t.teardown(() => proxy.stop())

  const url = `https://x-access-token:${placeholder}@git.bound.test:${port}/repo.git`
  await git(['-c', `http.proxy=http://127.0.0.1:${proxy.port}`, 'clone', '-q', url, 'clone'])
  const { stdout } = await git(['log', '--format=%s'], join(dir, 'clone'))
  t.equal(stdout.trim(), 'first', 'cloned through proxy-gate')
  t.ok(seen.some((a) => a.startsWith('Basic ')), 'the origin was sent Basic credentials')
  t.notOk(seen.join('\n').includes(placeholder.slice(4)), 'never the placeholder')
  t.notOk(JSON.stringify(proxy.lines).includes(TOKEN) || proxy.stderr().includes(TOKEN), 'the token is in nothing proxy-gate printed')

})
