// proxy-gate start with its dashboard, for the tests of Allow: a site on loopback that fixture
// names resolve to, plain HTTP requests through the proxy, the most-denied rows, and POST /allow.
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import type { Test } from 'tap'
import { runCli, startCli, type RunningCli } from './cli.js'
import { startDns } from './dns.js'
import { tempDir, writeJson } from './files.js'
import { rawExchange, startHttpUpstream, statusOf, type Upstream } from './net.js'

export const CHROMIUM = '/usr/bin/chromium'
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

export interface Answer {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: string
}

export function send(port: number, method: string, path: string, headers: Record<string, string>, body = ''): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { Host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let text = ''
      res.on('data', (d: Buffer) => (text += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** A row of the most denied, as /api/state gives it. */
export interface DeniedRow {
  readonly id: string
  readonly target: string
  readonly policy: string
  readonly suggestion?: string
}

export interface Gate {
  readonly cli: RunningCli
  readonly admin: number
  readonly token: string
  readonly rulesFile: string
  readonly site: Upstream
  /** METHOD http://NAME:SITE_PORT/PATH through the proxy, the path sent as it is: the status */
  fetchThrough(name: string, method?: string, path?: string): Promise<number | undefined>
  /** the most-denied row for this target */
  row(target: string): Promise<DeniedRow>
}

/**
 * proxy-gate start on `rules` (written to a file, or none: the packaged rules), with a site on
 * loopback that names resolve to; `ca`: with a local CA, which rules with methods or paths need.
 */
export async function startGate(t: Test, rules: (sitePort: number, dns: string) => Record<string, unknown>, options: { packaged?: boolean; ca?: boolean } = {}): Promise<Gate> {
  const site = await startHttpUpstream()
  const dns = await startDns({ 'allowme.test': { A: ['127.0.0.1'] }, 'second.test': { A: ['127.0.0.1'] } })
  t.teardown(() => Promise.all([site.close(), dns.close()]))
  const dir = tempDir('allow')
  const rulesFile = writeJson(dir, 'rules.json', rules(site.port, dns.server))
  const tokenFile = join(dir, 'admin-token')
  const certs = join(dir, 'certs')
  if (options.ca) {
    const init = await runCli(['ca', 'init', '--dir', certs])
    if (init.code !== 0) throw new Error(`proxy-gate ca init failed: ${init.stderr}`)
  }
  const where = options.packaged ? [] : ['--rules', rulesFile]
  const cli = await startCli(['start', ...where, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile, '--dir', certs, '--log-format', 'json'], { cwd: options.packaged ? tempDir('empty') : dir })
  // registered after the site's: tap runs teardowns last first, so the proxy stops before the site closes
  t.teardown(() => cli.stop())
  const adminLine = await cli.waitFor((l) => l.message === 'admin listening')
  const admin = Number(/:(\d+)\/$/.exec(String(adminLine.url))?.[1])
  const fetchThrough = async (name: string, method = 'GET', path = '/') =>
    statusOf((await rawExchange(cli.port, `${method} http://${name}:${site.port}${path} HTTP/1.1\r\nHost: ${name}:${site.port}\r\nConnection: close\r\n\r\n`)).text)
  const row = async (target: string): Promise<DeniedRow> => {
    const state = JSON.parse((await send(admin, 'GET', '/api/state', {})).body) as { denied: DeniedRow[] }
    const found = state.denied.find((d) => d.target === target)
    if (!found) throw new Error(`${target} is not among the most denied`)
    return found
  }
  return { cli, admin, token: readFileSync(tokenFile, 'utf8').trim(), rulesFile, site, fetchThrough, row }
}

export const defaultRules = (port: number, dns: string) => ({
  $schema: './rules.schema.json',
  mode: 'enforce',
  allow: [`127.0.0.1:${port}`],
  deny: ['gist.github.com:*'],
  dns: { servers: [dns], timeoutMs: 2000 },
})

/** POST /allow as the dashboard sends it: the row's id and the rule it shows (`suggestion`), with the token. */
export function allowPost(gate: Gate, ask: { readonly id: string; readonly suggestion?: string | undefined }, headers: Record<string, string> = {}): Promise<Answer> {
  const base = { Authorization: `Bearer ${gate.token}`, 'Content-Type': 'application/json', Origin: `http://127.0.0.1:${gate.admin}` }
  return send(gate.admin, 'POST', '/allow', { ...base, ...headers }, JSON.stringify({ id: ask.id, suggestion: ask.suggestion }))
}

export const message = (a: Answer) => (JSON.parse(a.body) as { message: string }).message
