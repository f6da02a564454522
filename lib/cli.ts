#!/usr/bin/env node
// Command line: start the proxy, check a target against the rules, validate a rules file.
import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { parseListen, type Config } from './config.js'
import { DEFAULT_POLICY } from './clients.js'
import { admit, gateFor } from './gate.js'
import { formatIp, classifyIp, parseIp } from './ip.js'
import { defaultCaDir, loadCa, type LoadedCa } from './ca.js'
import { startAdmin, createWatchers } from './cli-admin.js'
import { caCertToServe, caCommand } from './cli-ca.js'
import { passwdCommand } from './cli-passwd.js'
import { learnCommand, suggestCommand, type StartHooks } from './cli-learn.js'
import { advertisedAddress, dockerCommand, openBypass, systemProxyCommand, type WiringArgs } from './cli-wiring.js'
import { generatePac } from './pac.js'
import { createLogger, LOG_LEVELS, type LogLevel } from './log.js'
import { describePattern, formatRuleErrors, rulesWithRequestLimits, type Mode, type RuleError } from './policy.js'
import { createLookup } from './resolve.js'
import { loadRulesFile, watchRulesFile, type Overrides } from './rules-file.js'
import { createProxy, selfAddresses } from './server.js'
import { VERSION } from './version.js'
import { formatTarget, parseAbsoluteUrl, parseAuthority, type Result, type Target } from './target.js'

const MIN_NODE = [20, 19, 2]

const HELP: Record<string, string> = {
  main: `proxy-gate ${VERSION}: an egress allowlist proxy for containers

usage: proxy-gate <command> [options]

commands:
  start      run the proxy with the rules in rules.json
  check      say whether a target is allowed, and why
  validate   check a rules file and list every problem
  pac        print the PAC file that points clients at proxy-gate
  passwd     set a proxy user's password (stored as a salted hash in rules.json)
  docker     print or write Docker Desktop / Docker CLI / dockerd proxy settings
  system-proxy  print (or apply) the commands that set this OS's proxy
  ca         create (init) or describe (show) the local certificate authority
  learn      run in report mode (or read logs) and write a suggested rules file
  suggest    print the entries that would allow what a log shows denied

Run "proxy-gate <command> --help" for a command's options. "proxy-gate --version" prints the version.`,
  start: `usage: proxy-gate start [--rules FILE] [--listen HOST:PORT] [--mode enforce|report] [--log-level L] [--log-format json|pretty] [--insecure-open]

Runs the proxy. It reloads the rules when the file changes or on SIGHUP (a bad file is
reported and the old rules stay), and shuts down gracefully on SIGINT/SIGTERM.

  --rules FILE         rules file (default: ./rules.json)
  --listen HOST:PORT   listener address, overrides "listen" (default 127.0.0.1:3128)
  --mode MODE          enforce (deny what the rules do not allow) or report (allow, log wouldDeny)
  --log-level L        error, warn, info (default), debug or silent
  --log-format F       json (default when stdout is not a terminal) or pretty
  --insecure-open      allow listening on a non-loopback address (anyone who can reach it can use the proxy)
  --advertise H:P      the proxy address clients should use, written into the PAC file (default: the listener)
  --dir DIR            the local CA folder whose ca.crt is served at /ca.crt (default: certs/ in the proxy-gate folder)`,
  check: `usage: proxy-gate check TARGET [--rules FILE] [--source IP] [--user NAME]

TARGET is host:port (as in CONNECT) or a URL (http://host/..., https://host/...). --source and
--user decide it as for that client (the policy chosen by "clients" in the rules).
Prints allow or deny, the rule, and for names the resolved addresses and the address guard's
verdict. Exit status: 0 allowed, 1 denied, 2 error.`,
  pac: `usage: proxy-gate pac [--rules FILE] [--advertise HOST:PORT] [--flavor standard|docker]

Prints the PAC file that "proxy-gate start" serves at /proxy.pac: hosts in "bypass" go DIRECT,
everything else to proxy-gate (never a DIRECT fallback). With --flavor docker, hosts that no allow
rule can match are refused by Docker Desktop itself (PROXY reject.docker.internal:1).

  --advertise HOST:PORT   the proxy address written into the file (default: "listen" from the rules)`,
  docker: `usage: proxy-gate docker --target T [--pac] [--write [--file PATH] [--dry-run] | --revert] [--os macos|windows|linux] [--advertise HOST:PORT] [--rules FILE]

Targets:
  settings-store  Docker Desktop 4.35+ user settings (host and container proxy keys)
  settings        Docker Desktop 4.34 and older user settings
  admin           admin-settings.json: locked proxy and containersProxy (Docker Business)
  cli             ~/.docker/config.json proxies.default (environment of new containers and builds)
  daemon          daemon.json proxies (dockerd on Linux; Docker Desktop ignores it)

Without --write it prints the JSON to merge and says where it goes and what to restart.
--write merges into the file (every other key kept, a backup beside it, atomic, no BOM);
--dry-run shows the change; --revert puts back the values from the backup. --pac also sets
the PAC URL (http://ADVERTISE/proxy.pac). The address defaults to "listen" from the rules, and
to host.docker.internal:PORT for the cli target (127.0.0.1 inside a container is the container).`,
  'system-proxy': `usage: proxy-gate system-proxy [--os macos|windows|gnome] [--pac | --manual] [--revert] [--apply] [--advertise HOST:PORT] [--rules FILE]

Prints the commands that point this OS's proxy settings at proxy-gate: the PAC URL (--pac, the
default) or a manual proxy with the bypass list (--manual); --revert turns them off again.
--apply runs them after printing, and only on the OS they are for.`,
  ca: `usage: proxy-gate ca init [--force] [--dir DIR]
       proxy-gate ca show [--dir DIR]

The local certificate authority, used only for rules that ask for TLS interception.
"init" creates DIR/ca.crt (the certificate clients trust) and DIR/ca.key (mode 0600, keep it
private); it refuses to replace an existing CA without --force. "show" prints the subject, the
SHA-256 fingerprint and the expiry, and exits 1 when there is no usable CA.
"proxy-gate start" serves ca.crt at http://LISTEN/ca.crt.

  --dir DIR   the CA folder (default: certs/ in the proxy-gate folder)
  --force     replace an existing CA (clients that trust the old one must trust the new ca.crt)`,
  learn: `usage: proxy-gate learn [--rules FILE] [--out FILE] [--collapse] [--from LOG] [--listen HOST:PORT] [--duration SECONDS] [--force]

Runs the proxy in report mode (as "start --mode report": what the rules would deny passes and is
logged, the address guard still holds) until SIGINT/SIGTERM or --duration, then writes a suggested
rules file: the rules file with one "allow" entry per host:port its rules did not allow, each with a
note saying how often and when it was seen. Private and special-purpose destinations are left out
and listed with a warning; targets refused by a deny rule stay denied. Review the file, then run
"proxy-gate start --rules learned-rules.json".

  --out FILE          where to write (default: ./learned-rules.json); never the rules file without --force
  --collapse          write *.example.com instead of two or more names seen under example.com
  --from LOG          learn from JSON decision logs ("start --log-format json"; "-" for stdin) instead of running
  --duration SECONDS  stop after this long
  --listen, --log-level, --log-format, --dir as for "start"`,
  suggest: `usage: proxy-gate suggest --from LOG [--json]

Reads JSON decision logs ("-" for stdin; other lines are ignored) and prints, for what was denied (or
in report mode would have been), the entries to add to "allow", with how many requests needed each.
Private and special-purpose destinations come with a warning; a deny rule's refusals are listed as such.

  --json   one JSON object per line instead of the list`,
  passwd: `usage: proxy-gate passwd USER [--rules FILE]

Reads a password (not echoed on a terminal; one line from stdin otherwise) and writes its salted
scrypt hash to "auth.users" in the rules file, keeping every other key and a backup beside it.
With "auth" in the rules, clients must send proxy credentials (curl --proxy-user USER:PASSWORD).`,
  validate: `usage: proxy-gate validate [--rules FILE]

Checks a rules file and prints every problem with its place and why. Exit status 0 when valid, 1 when not.`,
}

const OPTIONS = {
  rules: { type: 'string', default: 'rules.json' },
  listen: { type: 'string' },
  mode: { type: 'string' },
  'log-level': { type: 'string', default: 'info' },
  'log-format': { type: 'string' },
  'insecure-open': { type: 'boolean', default: false },
  'admin-listen': { type: 'string' },
  'admin-token-file': { type: 'string' },
  advertise: { type: 'string' },
  flavor: { type: 'string', default: 'standard' },
  target: { type: 'string' },
  pac: { type: 'boolean', default: false },
  manual: { type: 'boolean', default: false },
  write: { type: 'boolean', default: false },
  file: { type: 'string' },
  'dry-run': { type: 'boolean', default: false },
  revert: { type: 'boolean', default: false },
  apply: { type: 'boolean', default: false },
  os: { type: 'string' },
  source: { type: 'string' },
  user: { type: 'string' },
  dir: { type: 'string' },
  force: { type: 'boolean', default: false },
  out: { type: 'string' },
  from: { type: 'string' },
  collapse: { type: 'boolean', default: false },
  duration: { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', short: 'v', default: false },
} satisfies ParseArgsConfig['options']

type Values = { [K in keyof typeof OPTIONS]: (typeof OPTIONS)[K] extends { type: 'boolean' } ? boolean : string | undefined }

function printErrors(file: string, errors: readonly RuleError[]): void {
  console.error(`${file}: ${errors.length} problem${errors.length === 1 ? '' : 's'}`)
  console.error(formatRuleErrors(errors).replace(/^/gm, '  '))
}

function nodeTooOld(): boolean {
  const have = process.versions.node.split('.').map(Number)
  for (let i = 0; i < 3; i++) if ((have[i] ?? 0) !== MIN_NODE[i]) return (have[i] ?? 0) < (MIN_NODE[i] ?? 0)
  return false
}

function isLoopback(host: string): boolean {
  const ip = parseIp(host)
  return ip !== undefined && classifyIp(ip)?.kind === 'loopback'
}

function overridesFrom(values: Values): Result<Overrides> {
  const overrides: { listen?: Config['listen']; mode?: Mode } = {}
  if (values.listen !== undefined) {
    const listen = parseListen(values.listen)
    if (!listen.ok) return { ok: false, error: `--listen: ${listen.error}` }
    overrides.listen = listen.value
  }
  if (values.mode !== undefined) {
    if (values.mode !== 'enforce' && values.mode !== 'report') return { ok: false, error: '--mode must be enforce or report' }
    overrides.mode = values.mode
  }
  return { ok: true, value: overrides }
}

/** Rules that limit methods or paths open TLS tunnels, which takes the local CA. */
function needsCa(config: Config, ca: LoadedCa): string | undefined {
  const rules = rulesWithRequestLimits(config.policy)
  if (rules.length === 0 || ca.ok) return undefined
  const which = rules.map((r) => `allow[${r.index}]`).join(', ')
  return `${which} limit${rules.length === 1 ? 's' : ''} methods or paths, which needs the local CA to open TLS tunnels: ${ca.error}${ca.missing ? '' : ' (see "proxy-gate ca show")'}`
}

/** tls.upstreamCaFiles, read relative to the rules file. */
function readUpstreamCa(rulesFile: string, config: Config): Result<string[]> {
  const pems: string[] = []
  for (const name of config.tls.upstreamCaFiles) {
    const path = resolve(dirname(rulesFile), name)
    try {
      pems.push(readFileSync(path, 'utf8'))
    } catch (error) {
      return { ok: false, error: `tls.upstreamCaFiles: cannot read ${path}: ${(error as Error).message}` }
    }
  }
  return { ok: true, value: pems }
}

/** Exposure rules for the listener: open listeners need consent, report mode stays local. */
function listenProblem(config: Config, insecureOpen: boolean): string | undefined {
  if (isLoopback(config.listen.host)) return undefined
  if (config.mode === 'report') return `report mode lets everything through, so it only runs on a loopback listener (not ${config.listen.host})`
  if (!insecureOpen && !config.auth) return `listening on ${config.listen.host} lets anyone who can reach it use the proxy; add "auth" (proxy-gate passwd USER) or pass --insecure-open`
  return undefined
}

async function start(values: Values, hooks: StartHooks = {}): Promise<number> {
  if (nodeTooOld()) {
    console.error(`proxy-gate needs Node.js ${MIN_NODE.join('.')} or newer (this is ${process.versions.node}): older 20.x releases have a request-smuggling flaw`)
    return 2
  }
  const level = values['log-level'] as LogLevel
  if (!LOG_LEVELS.includes(level)) return usageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`)
  const format = values['log-format'] ?? (process.stdout.isTTY ? 'pretty' : 'json')
  if (format !== 'json' && format !== 'pretty') return usageError('--log-format must be json or pretty')
  const overrides = overridesFrom(values)
  if (!overrides.ok) return usageError(overrides.error)
  const file = resolve(values.rules ?? 'rules.json')
  const loaded = loadRulesFile(file, overrides.value)
  if (!loaded.ok) {
    printErrors(file, loaded.errors)
    console.error('proxy-gate did not start: fix the rules file (see "proxy-gate validate")')
    return 1
  }
  const advertise = values.advertise === undefined ? { ok: true as const, value: undefined } : advertisedAddress(loaded.value, values.advertise)
  if (!advertise.ok) return usageError(advertise.error)
  const problem = listenProblem(loaded.value, values['insecure-open'])
  if (problem) {
    console.error(`proxy-gate did not start: ${problem}`)
    return 1
  }
  const log = createLogger({ level, format })
  process.on('uncaughtException', (error) => log.error('uncaught exception', { error: error.stack }))
  process.on('unhandledRejection', (error) => log.error('unhandled rejection', { error: error instanceof Error ? error.stack : String(error) }))
  const caCertPem = caCertToServe(values.dir, (message, meta) => log.warn(message, meta))
  const ca = loadCa(resolve(values.dir ?? defaultCaDir()))
  const caMissing = needsCa(loaded.value, ca)
  if (caMissing) {
    console.error(`proxy-gate did not start: ${caMissing}`)
    return 1
  }
  const upstreamCa = readUpstreamCa(file, loaded.value)
  if (!upstreamCa.ok) {
    console.error(`proxy-gate did not start: ${upstreamCa.error}`)
    return 1
  }
  const watchers = createWatchers()
  const proxy = createProxy({
    config: loaded.value,
    log,
    observe: (event) => {
      watchers.observe(event)
      hooks.observe?.(event)
    },
    upstreamCa: upstreamCa.value,
    ...(advertise.value ? { advertise: advertise.value } : {}),
    ...(caCertPem ? { caCertPem } : {}),
    ...(ca.ok ? { ca: ca.value } : {}),
  })
  let address
  try {
    address = await proxy.listen()
  } catch (error) {
    console.error(`proxy-gate did not start: cannot listen on ${loaded.value.listen.host}:${loaded.value.listen.port}: ${(error as Error).message}`)
    return 1
  }
  const { policy } = loaded.value
  let mode = loaded.value.mode
  if (!isLoopback(address.address)) log.warn('listening on a non-loopback address: anyone who can reach it can use this proxy', { address: address.address })
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  if (!advertise.value && parseIp(address.address)?.value === 0n) log.warn('listening on every interface: pass --advertise HOST:PORT so the PAC file names an address clients can reach')
  const pacUrl = `${advertise.value ? `http://${advertise.value}` : url}/proxy.pac`
  log.info('listening', { url, pac: pacUrl, rules: file, allow: policy.allow.length, deny: policy.deny.length, mode })
  log.info('wire it up', {
    dockerDesktop: 'npx proxy-gate docker --target settings-store --write   (then restart Docker Desktop)',
    dockerDesktopAdmin: 'npx proxy-gate docker --target admin --write   (Docker Business, locked for every user)',
    containerEnv: 'npx proxy-gate docker --target cli --write',
    systemProxy: `npx proxy-gate system-proxy --pac   (PAC URL ${pacUrl})`,
  })
  const open = openBypass(loaded.value.bypass)
  if (open.length > 0) log.warn('bypass lets clients wired by proxy-gate reach these hosts directly, unchecked by the rules', { bypass: open.map(describePattern) })

  const reload = (trigger: string): { ok: boolean; errors?: string[] } => {
    const next = loadRulesFile(file, overrides.value)
    const caNeeded = next.ok ? needsCa(next.value, ca) : undefined
    if (!next.ok || caNeeded) {
      const errors = next.ok ? [caNeeded ?? ''] : formatRuleErrors(next.errors).split('\n')
      log.error('reload failed: keeping the previous rules', { rules: file, trigger, errors })
      proxy.noteReload({ ok: false, trigger, errors })
      return { ok: false, errors }
    }
    const listen = next.value.listen
    if (listen.host !== loaded.value.listen.host || listen.port !== loaded.value.listen.port) log.warn('"listen" changed: restart proxy-gate to apply it')
    const outcome = proxy.reload(next.value)
    mode = next.value.mode
    log.info('reloaded', { rules: file, trigger, allow: next.value.policy.allow.length, deny: next.value.policy.deny.length, ...outcome })
    proxy.noteReload({ ok: true, trigger })
    return { ok: true }
  }
  watchers.watch(proxy)
  const admin = await startAdmin({
    listen: values['admin-listen'] ?? '127.0.0.1:3129',
    insecureOpen: values['insecure-open'],
    tokenFile: resolve(values['admin-token-file'] ?? resolve(values.dir ?? defaultCaDir(), 'admin-token')),
    rulesFile: file,
    proxy,
    watchers,
    mode: () => mode,
    reload: () => reload('admin'),
    log,
  })
  if (!admin.ok) {
    console.error(`proxy-gate did not start: ${admin.error}`)
    await proxy.shutdown()
    return 1
  }
  const watcher = watchRulesFile(file, () => reload('file changed'))
  process.on('SIGHUP', () => reload('SIGHUP'))
  await new Promise<void>((done) => {
    const stop = (signal: string): void => {
      clearTimeout(timer)
      log.info('shutting down', { signal, open: proxy.open.size })
      watcher.close()
      void Promise.all([proxy.shutdown(), admin.value?.close()]).then(() => done())
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
    const timer = hooks.durationMs === undefined ? undefined : setTimeout(() => stop('duration elapsed'), hooks.durationMs)
  })
  log.info('stopped')
  return 0
}

function parseCheckTarget(text: string): Result<Target> {
  const https = /^https:\/\/([^/?#]*)/i.exec(text)
  if (https) {
    if ((https[1] ?? '').includes('@')) return { ok: false, error: 'URL contains userinfo ("@")' }
    return parseAuthority(https[1] ?? '', 443)
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    const url = parseAbsoluteUrl(text)
    return url.ok ? { ok: true, value: url.value.target } : url
  }
  return parseAuthority(text)
}

async function check(values: Values, positional: string[]): Promise<number> {
  const [text] = positional
  if (text === undefined || positional.length > 1) return usageError('check takes one TARGET (host:port or URL)')
  const target = parseCheckTarget(text)
  if (!target.ok) {
    console.error(`bad target: ${target.error}`)
    return 2
  }
  const file = resolve(values.rules ?? 'rules.json')
  const loaded = loadRulesFile(file)
  if (!loaded.ok) {
    printErrors(file, loaded.errors)
    return 2
  }
  const config = loaded.value
  const source = values.source === undefined ? undefined : parseIp(values.source)
  if (values.source !== undefined && !source) return usageError('--source must be an IP address')
  const ctx = { mode: config.mode, self: selfAddresses({ address: config.listen.host, port: config.listen.port }), tls: config.tls }
  const base = { policy: config.policy, policyName: DEFAULT_POLICY, policies: config.policies, ctx, lookup: createLookup(config.dns) }
  const gate = gateFor(base, { source, user: values.user })
  const admission = await admit(gate, target.value)
  console.log(`target:   ${formatTarget(target.value)}`)
  console.log(`policy:   ${gate.policyName}`)
  if (admission.kind === 'failed') {
    console.log(`error:    ${admission.reply.details}`)
    return 2
  }
  const { decision, resolved } = admission
  if (resolved) console.log(`resolved: ${resolved.map(formatIp).join(', ')}`)
  if (resolved || target.value.host.kind === 'ip') {
    const guard = decision.reason === 'address-prohibited' || decision.reason === 'self-connection' ? `refused (${decision.detail})` : 'every address passed'
    console.log(`guard:    ${decision.reason === 'deny-rule' || decision.reason === 'no-rule' ? 'not reached' : guard}`)
  }
  console.log(`decision: ${decision.verdict}${decision.wouldDeny ? ' (report mode: enforce would deny)' : ''}`)
  console.log(`rule:     ${decision.rule ? `${decision.rule.list}[${decision.rule.index}] ${decision.rule.text}` : '(none)'}`)
  console.log(`why:      ${decision.detail}`)
  if (decision.verdict === 'deny' && decision.suggestion) console.log(`fix:      add to "allow" in rules.json: ${decision.suggestion}`)
  return decision.verdict === 'allow' ? 0 : 1
}

function pac(values: Values): number {
  const flavor = values.flavor
  if (flavor !== 'standard' && flavor !== 'docker') return usageError('--flavor must be standard or docker')
  const config = loadOrReport(values)
  if (!config) return 1
  const advertise = advertisedAddress(config, values.advertise)
  if (!advertise.ok) return usageError(advertise.error)
  process.stdout.write(generatePac({ advertise: advertise.value, bypass: config.bypass, policy: config.policy, flavor, version: VERSION }))
  return 0
}

function loadOrReport(values: Values): Config | undefined {
  const file = resolve(values.rules ?? 'rules.json')
  const loaded = loadRulesFile(file)
  if (loaded.ok) return loaded.value
  printErrors(file, loaded.errors)
  return undefined
}

function wiringArgs(values: Values): WiringArgs {
  return {
    target: values.target,
    pac: values.pac,
    manual: values.manual,
    write: values.write,
    file: values.file,
    dryRun: values['dry-run'],
    revert: values.revert,
    apply: values.apply,
    os: values.os,
    advertise: values.advertise,
  }
}

function validate(values: Values): number {
  const file = resolve(values.rules ?? 'rules.json')
  const loaded = loadRulesFile(file)
  if (!loaded.ok) {
    printErrors(file, loaded.errors)
    return 1
  }
  const { policy, bypass } = loaded.value
  console.log(`${file}: ok (${policy.allow.length} allow, ${policy.deny.length} deny, ${bypass.length} bypass)`)
  return 0
}

function usageError(message: string): number {
  console.error(`proxy-gate: ${message}`)
  return 2
}

export async function main(argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true })
  } catch (error) {
    return usageError(`${(error as Error).message} (see --help)`)
  }
  const values = parsed.values as Values
  const [command, ...rest] = parsed.positionals
  if (values.version) {
    console.log(VERSION)
    return 0
  }
  if (values.help || command === undefined || command === 'help') {
    console.log(HELP[command === undefined || command === 'help' ? 'main' : command] ?? HELP.main)
    return command === undefined && !values.help ? 2 : 0
  }
  if (command === 'start' && rest.length === 0) return start(values)
  if (command === 'check') return check(values, rest)
  if (command === 'validate' && rest.length === 0) return validate(values)
  if (command === 'pac' && rest.length === 0) return pac(values)
  if (command === 'passwd' && rest.length <= 1) return passwdCommand(resolve(values.rules ?? 'rules.json'), rest[0])
  if (command === 'learn' && rest.length === 0) {
    const { rules = 'rules.json', out, from, collapse, force, duration, mode, listen } = values
    return learnCommand({ rules, out, from, collapse, force, duration, mode, listen }, (hooks) => start({ ...values, mode: 'report' }, hooks))
  }
  if (command === 'suggest' && rest.length === 0) return suggestCommand({ from: values.from, json: values.json })
  if (command === 'ca') return caCommand(rest, { dir: values.dir, force: values.force })
  if ((command === 'docker' || command === 'system-proxy') && rest.length === 0) {
    const config = loadOrReport(values)
    if (!config) return 1
    return command === 'docker' ? dockerCommand(config, wiringArgs(values)) : systemProxyCommand(config, wiringArgs(values))
  }
  return usageError(`unknown command or extra arguments: ${parsed.positionals.join(' ')} (see --help)`)
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 2
  },
)
