#!/usr/bin/env node
// Command line: parses flags, prints help, and hands each command to its module (check, validate, pac here).
// first: a SIGHUP from the first moment of `start` is a reload, not the end of the process
import './cli/hangup.js'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { printErrors, usageError } from './cli/common.js'
import { advertisedAddress, type WiringArgs } from './cli/wiring.js'
import { DEFAULT_POLICY } from './policy/clients.js'
import { configWarnings, type Config } from './rules/config.js'
import { formatRuleErrors, rulesWithRequestLimits } from './policy/rules.js'
import { admit, gateFor } from './net/gate.js'
import { formatIp, parseIp, type Ip } from './policy/ip.js'
import { generatePac } from './wiring/pac.js'
import { createResolve, type AnswerSource } from './net/resolve.js'
import { loadRulesFile, packagedNotice, rulesPath } from './rules/file.js'
import { selfAddresses } from './net/self.js'
import { formatTarget, parseAbsoluteUrl, parseAuthority, type Result, type Target } from './policy/target.js'
import { VERSION } from './core/version.js'
import { escapeConsole } from './core/visible.js'


const HELP: Record<string, string> = {
  main: `proxy-gate ${VERSION}: an egress allowlist proxy for containers

usage: proxy-gate <command> [options]

commands:
  start      run the proxy with the rules in rules.json
  init       write a starter rules.json (a copy of the shipped rules) to edit
  check      say whether a target is allowed, and why
  validate   check a rules file and list every problem
  pac        print the PAC file that points clients at proxy-gate
  passwd     set a proxy user's password (stored as a salted hash in rules.json)
  docker     print or write Docker Desktop / Docker CLI / dockerd proxy settings
  system-proxy  print (or apply) the commands that set this OS's proxy
  ca         create (init) or describe (show) the local certificate authority
  learn      run in report mode (or read logs) and write a suggested rules file
  suggest    print the entries that would allow what a log shows denied
  sandbox    a container network whose only way out is proxy-gate (build, up, run, verify, down, compose)
  service    start proxy-gate at login (install, uninstall, status): launchd, systemd --user, Task Scheduler
  doctor     check that Docker goes through proxy-gate, and say how to fix what does not
  secrets    print the placeholders the workload holds instead of the secrets' values (env)

Run "proxy-gate <command> --help" for a command's options. "proxy-gate --version" prints the version.`,
  start: `usage: proxy-gate start [--rules FILE] [--listen HOST:PORT] [--mode enforce|report] [--log-level L] [--log-format json|pretty] [--insecure-open] [--socks HOST:PORT]

Runs the proxy. It reloads the rules when the file changes or on SIGHUP (a bad file is
reported and the old rules stay), and shuts down gracefully on SIGINT/SIGTERM.

  --rules FILE         rules file (default: ./rules.json, else the read-only rules that ship with
                       proxy-gate, which are not watched: "proxy-gate init" writes an editable copy)
  --listen HOST:PORT   listener address, overrides "listen" (default 127.0.0.1:3128)
  --mode MODE          enforce (deny what the rules do not allow) or report (allow, log wouldDeny)
  --log-level L        error, warn, info (default), debug or silent
  --log-format F       json (default when stdout is not a terminal) or pretty: a line per decision,
                       in colour on a terminal unless NO_COLOR is set (FORCE_COLOR forces it)
  --insecure-open      allow listening on a non-loopback address (anyone who can reach it can use the proxy)
  --advertise H:P      the proxy address clients should use, written into the PAC file (default: the listener)
  --dir DIR            the local CA folder whose ca.crt is served at /ca.crt (default: as for "ca")
  --sandbox ADDRESS    serve a sandbox network from ADDRESS: DNS on 53, transparent HTTP on 80 and TLS on 443
                       (as the "sandbox" section of rules.json with only "address"; see proxy-gate sandbox)
  --socks HOST:PORT    a SOCKS5 listener too (ssh, git over ssh, databases), decided by the same rules;
                       overrides "socks" (off by default; 127.0.0.1:1080 is the usual address)`,
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

  --dir DIR   the CA folder, which also keeps the admin token (default: certs/ in the proxy-gate
              folder of a clone; for an installed package, which npm replaces on upgrade,
              $XDG_CONFIG_HOME/proxy-gate/certs or ~/.config/proxy-gate/certs, on Windows
              %APPDATA%\\proxy-gate\\certs)
  --force     replace an existing CA (clients that trust the old one must trust the new ca.crt)`,
  secrets: `usage: proxy-gate secrets env [--rules FILE] [--dir DIR]

Prints NAME=PLACEHOLDER for each secret in the rules' "secrets" (for docker run --env-file, Compose,
CI). The workload holds the placeholder; proxy-gate puts the value in its place in requests to the
secret's hosts, and refuses the placeholder anywhere else. Never prints a value, and needs none: a
placeholder is derived from DIR/secrets-key (made on first use, mode 0600, beside the admin token)
and the secret's name, so it stays the same across restarts. When the value can be read here, the
placeholder keeps its prefix (ghp_, sk-, ...), which some clients check for.

  --dir DIR   the local CA folder, which keeps the key (default: as for "ca")`,
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
scrypt hash to "auth.users" in the rules file, keeping every other key and a backup beside it
(both mode 0600). The rules file must exist and load; nothing is written otherwise.
With "auth" in the rules, clients must send proxy credentials (curl --proxy-user USER:PASSWORD).`,
  init: `usage: proxy-gate init [--force] [--rules FILE]

Writes a starter rules file (default: ./rules.json): a copy of the rules that ship with proxy-gate,
each entry with a "note" saying what it allows, and "$schema" pointing at the packaged
rules.schema.json so editors check and complete it; mode 0600, as passwd keeps password hashes in
it. It never replaces an existing file without --force. Edit it, run "proxy-gate validate", then "proxy-gate start" (which picks ./rules.json).`,
  service: `usage: proxy-gate service install|uninstall|status [--rules FILE] [--dir DIR] [--dry-run] [--os macos|linux|windows] [--force]

Runs "proxy-gate start" at login through the OS's service manager, restarted when it fails, with
absolute paths to this node, this proxy-gate, the rules file (default as for "start") and the CA
folder (--dir, default as for "ca"), in the current folder. Install it for good first (npm install -g
proxy-gate, or a clone): npx's cache is not a stable place, so install refuses it.
  macOS    ~/Library/LaunchAgents/io.github.proxy-gate.plist (launchctl bootstrap gui/UID), log in
           ~/Library/Logs/proxy-gate/proxy-gate.log
  Linux    ~/.config/systemd/user/proxy-gate.service (systemctl --user enable --now), log in the journal
  Windows  a Task Scheduler task "proxy-gate" at logon (schtasks /Create /XML), its file and log in
           %USERPROFILE%\\AppData\\Local\\proxy-gate

  install     writes the file and loads it; re-running it is harmless; a different existing file is
              replaced only with --force
  --dry-run   prints the file on stdout, and where it goes and the commands it would run on stderr
  uninstall   stops it and removes the file
  status      installed or not, running or not, and where the log is (exit 0 only when both)`,
  validate: `usage: proxy-gate validate [--rules FILE] [--dir DIR]

Checks a rules file and prints every problem with its place and why. Exit status 0 when valid, 1 when not.
Rules that limit methods or paths need the local CA (in --dir DIR, default as for "ca"): without
it, a warning says so, since "start" would refuse them. An IP range that holds a cloud metadata
address (169.254.0.0/16 holds 169.254.169.254) gets a warning too: only a rule naming that exact
address allows it.`,
}

const OPTIONS = {
  rules: { type: 'string' },
  listen: { type: 'string' },
  mode: { type: 'string' },
  'log-level': { type: 'string', default: 'info' },
  'log-format': { type: 'string' },
  'insecure-open': { type: 'boolean', default: false },
  'admin-listen': { type: 'string' },
  sandbox: { type: 'string' },
  socks: { type: 'string' },
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
  const config = loadOrReport(values)
  if (!config) return 2
  const source = values.source === undefined ? undefined : parseIp(values.source)
  if (values.source !== undefined && !source) return usageError('--source must be an IP address')
  const ctx = { mode: config.mode, self: selfAddresses({ address: config.listen.host, port: config.listen.port }), tls: config.tls }
  const resolve = createResolve(config.dns)
  let from: AnswerSource | undefined
  const lookup = async (name: string): Promise<Ip[]> => {
    const resolution = await resolve(name)
    from = resolution.from
    return resolution.addresses
  }
  const base = { policy: config.policy, policyName: DEFAULT_POLICY, policies: config.policies, ctx, lookup, generation: 0 }
  const gate = gateFor(base, { source, user: values.user })
  const admission = await admit(gate, target.value)
  console.log(`target:   ${formatTarget(target.value)}`)
  console.log(`policy:   ${gate.policyName}`)
  if (admission.kind === 'failed') {
    console.log(`error:    ${admission.reply.details}`)
    return 2
  }
  const { decision, resolved } = admission
  if (resolved) console.log(`resolved: ${resolved.map(formatIp).join(', ')} (from ${from?.kind === 'hosts' ? from.path : 'DNS'})`)
  if (resolved || target.value.host.kind === 'ip') {
    const guard = decision.reason === 'address-prohibited' || decision.reason === 'self-connection' ? `refused (${decision.detail})` : 'every address passed'
    console.log(`guard:    ${decision.reason === 'deny-rule' || decision.reason === 'no-rule' ? 'not reached' : guard}`)
  }
  console.log(`decision: ${decision.verdict}${decision.wouldDeny ? ' (report mode: enforce would deny)' : ''}`)
  console.log(`rule:     ${decision.rule ? `${decision.rule.list}[${decision.rule.index}] ${decision.rule.text}` : '(none)'}`)
  console.log(`why:      ${decision.detail}`)
  if (decision.verdict === 'deny' && decision.suggestion) console.log(`fix:      add to "allow" in rules.json: ${decision.suggestion}`)
  if (decision.verdict === 'allow' && config.upstream) console.log(`route:    ${(await import('./net/upstream.js')).describeRoute(config, target.value)}`)
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
  const rules = rulesPath(values.rules)
  const notice = packagedNotice(rules)
  if (notice) console.error(notice)
  const loaded = loadRulesFile(rules.file)
  if (loaded.ok) return loaded.value
  printErrors(rules.file, loaded.errors)
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

async function validate(values: Values): Promise<number> {
  const config = loadOrReport(values)
  if (!config) return 1
  const { policy, bypass } = config
  console.log(`${rulesPath(values.rules).file}: ok (${policy.allow.length} allow, ${policy.deny.length} deny, ${bypass.length} bypass)`)
  const { upstream, upstreamBypass } = config
  if (upstream) console.log(`upstream: ${upstream.display} (${upstreamBypass.length} upstreamBypass)`)
  const warnings = configWarnings(config)
  if (warnings.length > 0) for (const line of formatRuleErrors(warnings).split('\n')) console.log(`warning: ${line}`)
  // rules that limit methods or paths can never match without the local CA, nor secrets be put in: "start" refuses them
  if (rulesWithRequestLimits(policy).length > 0 || config.secrets.length > 0) {
    const [{ caDir, needsCa }, { loadCa }] = await Promise.all([import('./cli/ca.js'), import('./certs/ca.js')])
    const problem = needsCa(config, loadCa(caDir(values.dir)))
    if (problem) console.log(`warning: ${problem}; "proxy-gate start" refuses these rules until "proxy-gate ca init" has made it`)
  }
  if (config.secrets.length > 0) {
    const { readSecretValue } = await import('./secrets/values.js')
    // read here only to say whether start can: the value itself is never shown
    for (const spec of config.secrets) {
      const value = readSecretValue(spec, rulesPath(values.rules).file, process.env)
      if (!value.ok) console.log(`warning: ${value.error}; "proxy-gate start" refuses to run without it`)
    }
  }
  return 0
}


// Each command's module is imported when that command runs: `check` or `--version` need not load
// the proxy, its HTTP client and its logger (about 0.3 s of CPU at every start).
export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'sandbox') return (await import('./cli/sandbox.js')).sandboxCommand(argv.slice(1))
  if (argv[0] === 'doctor') return (await import('./cli/doctor.js')).doctorCommand(argv.slice(1))
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
  if (command === 'start' && rest.length === 0) return (await import('./cli/start.js')).startCommand(values)
  if (command === 'init' && rest.length === 0) return (await import('./cli/init.js')).initCommand({ rules: values.rules, force: values.force })
  if (command === 'check') return check(values, rest)
  if (command === 'validate' && rest.length === 0) return validate(values)
  if (command === 'pac' && rest.length === 0) return pac(values)
  if (command === 'passwd' && rest.length <= 1) return (await import('./cli/passwd.js')).passwdCommand(rulesPath(values.rules), rest[0])
  if (command === 'learn' && rest.length === 0) {
    const { out, from, collapse, force, duration, mode, listen } = values
    const rules = rulesPath(values.rules)
    const { learnCommand } = await import('./cli/learn.js')
    return learnCommand({ rules, out, from, collapse, force, duration, mode, listen }, async (hooks) => (await import('./cli/start.js')).startCommand({ ...values, mode: 'report' }, hooks))
  }
  if (command === 'suggest' && rest.length === 0) return (await import('./cli/learn.js')).suggestCommand({ from: values.from, json: values.json })
  if (command === 'service') {
    const { rules, dir, os, force } = values
    return (await import('./cli/service.js')).serviceCommand(rest, { rules, dir, os, force, dryRun: values['dry-run'] })
  }
  if (command === 'secrets') return (await import('./cli/secrets.js')).secretsCommand(rest, { rules: values.rules, dir: values.dir })
  if (command === 'ca') return (await import('./cli/ca.js')).caCommand(rest, { dir: values.dir, force: values.force })
  if ((command === 'docker' || command === 'system-proxy') && rest.length === 0) {
    const config = loadOrReport(values)
    if (!config) return 1
    const wiring = await import('./cli/wiring.js')
    return command === 'docker' ? wiring.dockerCommand(config, wiringArgs(values)) : wiring.systemProxyCommand(config, wiringArgs(values))
  }
  return usageError(`unknown command or extra arguments: ${parsed.positionals.join(' ')} (see --help)`)
}

escapeConsole()
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    console.error(error)
    process.exitCode = 2
  },
)
