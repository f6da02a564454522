#!/usr/bin/env node
// Command line: parses flags, prints help, and hands each command to its module (check, validate, pac here).
// first: a SIGHUP from the first moment of `start` is a reload, not the end of the process
import './cli/hangup.js'
import { parseArgs } from 'node:util'
import { foreignFlag, OPTIONS, type Values } from './cli/flags.js'
import { printErrors, usageError } from './cli/common.js'
import { advertisedAddress, type WiringArgs } from './cli/wiring.js'
import { configWarnings, type Config } from './rules/config.js'
import { formatRuleErrors, rulesWithRequestLimits } from './policy/rules.js'
import { generatePac } from './wiring/pac.js'
import { loadRulesFile, packagedNotice, rulesPath } from './rules/file.js'
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
  start: `usage: proxy-gate start [--rules FILE] [--listen HOST:PORT] [--mode enforce|report] [--log-level L] [--log-format json|pretty] [--insecure-open]
                        [--advertise H:P] [--dir DIR] [--admin-listen HOST:PORT|off] [--admin-token-file FILE] [--sandbox ADDRESS] [--socks HOST:PORT]

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
  --admin-listen A     the dashboard, /metrics, /healthz and /readyz (default 127.0.0.1:3129; "off" for none;
                       a non-loopback address needs --insecure-open)
  --admin-token-file F the dashboard's token, created mode 0600 on first use (default: admin-token in --dir);
                       refused when others can read it
  --socks HOST:PORT    a SOCKS5 listener too (ssh, git over ssh, databases), decided by the same rules;
                       overrides "socks" (off by default; 127.0.0.1:1080 is the usual address)`,
  check: `usage: proxy-gate check TARGET [--method METHOD] [--rules FILE] [--source IP] [--user NAME]

Decides TARGET as the proxy would, with the same rules, DNS and address guard. TARGET is host:port
(a tunnel, as in CONNECT) or a URL (http://host/path, https://host/path: one request, whose method
and path count where rules limit them). Internationalised names are accepted as rules accept them.
Prints allow or deny, the rule, and for names the resolved addresses and the address guard's
verdict. Exit status: 0 allowed, 1 denied, 2 error (a DNS failure is one: the proxy answers 502).

  --method METHOD   the request's method, for a URL (default: GET)
  --source IP       decide it as for a client at this address (the policy "clients" chooses)
  --user NAME       decide it as for this proxy user`,
  pac: `usage: proxy-gate pac [--rules FILE] [--advertise HOST:PORT] [--flavor standard|docker]

Prints the PAC file that "proxy-gate start" serves at /proxy.pac: hosts in "bypass" go DIRECT,
everything else to proxy-gate (never a DIRECT fallback). With --flavor docker, hosts that no allow
rule can match are refused by Docker Desktop itself (PROXY reject.docker.internal:1).

  --advertise HOST:PORT   the proxy address written into the file (default: "listen" from the rules)`,
  docker: `usage: proxy-gate docker --target T [--pac] [--write [--file PATH] [--dry-run] | --revert [--dry-run]] [--os macos|windows|linux] [--advertise HOST:PORT] [--rules FILE]

Targets:
  settings-store  Docker Desktop 4.35+ user settings (host and container proxy keys)
  settings        Docker Desktop 4.34 and older user settings
  admin           admin-settings.json: locked proxy and containersProxy (Docker Business)
  cli             ~/.docker/config.json proxies.default (environment of new containers and builds)
  daemon          daemon.json proxies (dockerd on Linux; Docker Desktop ignores it)

Without --write it prints the JSON to merge and says where it goes and what to restart.
--write merges into the file (every other key kept, a backup beside it, atomic, no BOM);
--dry-run (with --write or --revert) shows the change and writes nothing; --revert puts back the
values from the backup, and removes the file if proxy-gate created it. --pac also sets
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
                        [--log-level L] [--log-format F] [--dir DIR] [--admin-listen HOST:PORT|off] [--admin-token-file FILE] [--mode report]

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
  --listen, --log-level, --log-format, --dir, --admin-listen, --admin-token-file as for "start"
  --mode report       the only mode learn runs in (any other is refused)`,
  suggest: `usage: proxy-gate suggest --from LOG [--json]

Reads JSON decision logs ("-" for stdin; other lines are ignored) and prints, for what was denied (or
in report mode would have been), the entries to add to "allow", with how many requests needed each.
Private and special-purpose destinations come with a warning; a deny rule's refusals are listed as such.

  --json   one JSON object per line instead of the list`,
  passwd: `usage: proxy-gate passwd USER [--rules FILE]

Reads a password of at least 8 characters (not echoed on a terminal; one line from stdin otherwise) and writes its salted
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
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true, tokens: true })
  } catch (error) {
    return usageError(`${(error as Error).message} (see --help)`)
  }
  const values = parsed.values as Values
  const [command, ...rest] = parsed.positionals
  const foreign = command === undefined ? undefined : foreignFlag(command, parsed.tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])))
  if (foreign !== undefined) return usageError(`${command} does not take --${foreign} (see proxy-gate ${command} --help)`)
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
  if (command === 'check') {
    const config = loadOrReport(values)
    return config ? (await import('./cli/check.js')).checkCommand(config, values, rest) : 2
  }
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
