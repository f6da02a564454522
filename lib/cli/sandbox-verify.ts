// `proxy-gate sandbox verify` (and the check `sandbox up` makes before it reports success): reads
// the sandbox's networks and proxy-gate container from the engine, runs the proxy-gate image once
// more as a short-lived probe on the sandbox network only (read-only, no capabilities, removed
// afterwards), and judges what it found (lib/wiring/sandbox-verify.ts).
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { loadRulesFile } from '../rules/file.js'
import { containerFacts, networkFacts, type ContainerFacts, type NetworkFacts } from '../wiring/sandbox-facts.js'
import { runArgs, type SandboxPlan } from '../wiring/sandbox.js'
import { expectFromRules, formatLines, judge, probeNames, probeSpec, type ProbeReport, type VerifyLine } from '../wiring/sandbox-verify.js'

export interface VerifyRequest {
  /** the engine's CLI: docker or podman */
  readonly engine: string
  readonly plan: SandboxPlan
  readonly probeAddresses: readonly string[]
  /** the rules to expect DNS answers from when the container's own file cannot be read here */
  readonly rulesFile: string
}

export interface VerifyOutcome {
  /** 0 every probe passed, 1 a path is open, 2 could not run */
  readonly code: 0 | 1 | 2
  readonly lines: readonly VerifyLine[]
  readonly error?: string
}

const PROBE_RUN_TIMEOUT_MS = 60_000

interface Captured {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

function capture(engine: string, args: readonly string[], timeoutMs = 20_000): Promise<Captured> {
  return new Promise((done) => {
    const child = spawn(engine, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let [stdout, stderr] = ['', '']
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', (error) => {
      clearTimeout(timer)
      done({ code: 127, stdout, stderr: `cannot run ${engine}: ${error.message}` })
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
}

async function inspect(engine: string, args: readonly string[]): Promise<unknown> {
  const r = await capture(engine, args)
  if (r.code !== 0) return undefined
  try {
    return JSON.parse(r.stdout) as unknown
  } catch {
    return undefined
  }
}

interface Sandbox {
  readonly network: NetworkFacts
  readonly egress: NetworkFacts
  readonly proxy: ContainerFacts
}

async function readSandbox(engine: string, plan: SandboxPlan): Promise<Sandbox | string> {
  const [network, egress, proxy] = await Promise.all([
    inspect(engine, ['network', 'inspect', plan.network]).then(networkFacts),
    inspect(engine, ['network', 'inspect', plan.egress]).then(networkFacts),
    inspect(engine, ['inspect', '--type', 'container', plan.container]).then(containerFacts),
  ])
  const missing = `run "proxy-gate sandbox up --name ${plan.name}" first`
  if (typeof network === 'string') return `no sandbox network "${plan.network}" (${network}): ${missing}`
  if (typeof egress === 'string') return `no egress network "${plan.egress}" (${egress}): ${missing}`
  if (typeof proxy === 'string' || !proxy.running) return `the proxy-gate container "${plan.container}" is not running: ${missing}`
  return { network, egress, proxy }
}

function isReport(value: unknown): value is ProbeReport {
  const v = value as Partial<ProbeReport> | null
  return typeof v === 'object' && v !== null && typeof v.local === 'object' && Array.isArray(v.tcp) && Array.isArray(v.dns)
}

/** The probe container: on the sandbox network only, as `sandbox run` starts a workload, and locked down. */
function probeArgs(plan: SandboxPlan, image: string, spec: string): string[] {
  const locked = ['--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--pull', 'never', '--label', `proxy-gate.sandbox=${plan.name}`]
  return runArgs(plan, [...locked, image, 'sandbox', 'probe', spec])
}

function probeFailure(run: Captured): string {
  const said = (run.stderr || run.stdout).trim()
  if (said.includes('unknown sandbox command: probe')) return 'the proxy-gate image predates "sandbox verify": run "proxy-gate sandbox build", then "sandbox up" again'
  return `the probe container did not run (exit ${run.code ?? 'signal'}): ${said.slice(-600)}`
}

function failed(error: string): VerifyOutcome {
  return { code: 2, lines: [], error }
}

export async function verifySandbox(request: VerifyRequest): Promise<VerifyOutcome> {
  const { engine, plan } = request
  const sandbox = await readSandbox(engine, plan)
  if (typeof sandbox === 'string') return failed(sandbox)
  const proxy = sandbox.proxy.addresses.get(plan.network)?.[0] ?? plan.address
  const rulesFile = sandbox.proxy.rulesFile !== undefined && existsSync(sandbox.proxy.rulesFile) ? sandbox.proxy.rulesFile : request.rulesFile
  const loaded = loadRulesFile(rulesFile)
  if (!loaded.ok) return failed(`cannot read the rules ${rulesFile} to know what proxy-gate's DNS answers: ${loaded.errors.map((e) => e.message).join('; ')}`)
  const ctx = { mode: loaded.value.mode, self: [], tls: loaded.value.tls }
  const proxyOther = [...sandbox.proxy.addresses].filter(([name]) => name !== plan.network).flatMap(([, a]) => a)
  const names = probeNames(loaded.value.policies, ctx, randomBytes(4).toString('hex'))
  const spec = probeSpec({ proxy, network: sandbox.network, egress: sandbox.egress, proxyOther, probeAddresses: request.probeAddresses, names })
  const run = await capture(engine, probeArgs({ ...plan, address: proxy }, sandbox.proxy.image ?? plan.image, JSON.stringify(spec)), PROBE_RUN_TIMEOUT_MS)
  let report: unknown
  try {
    report = JSON.parse(run.stdout.trim().split('\n').pop() ?? '')
  } catch {
    report = undefined
  }
  if (run.code !== 0 || !isReport(report)) return failed(probeFailure(run))
  const lines = judge(spec, report, expectFromRules(loaded.value.policies, ctx))
  return { code: lines.every((l) => l.pass) ? 0 : 1, lines }
}

/** The lines, then a summary naming every open path; or one JSON document. */
export function printOutcome(outcome: VerifyOutcome, json: boolean): void {
  const open = outcome.lines.flatMap((l) => (l.open === undefined ? [] : [l.open]))
  if (json) {
    process.stdout.write(`${JSON.stringify({ ok: outcome.code === 0, code: outcome.code, error: outcome.error, open, probes: outcome.lines }, null, 2)}\n`)
    return
  }
  if (outcome.error !== undefined) {
    console.error(`proxy-gate sandbox verify: could not verify: ${outcome.error}`)
    return
  }
  for (const line of formatLines(outcome.lines)) console.log(line)
  if (open.length === 0) console.log(`verified: ${outcome.lines.length} probes, no way out but proxy-gate`)
  else console.log(`NOT CONFINED: ${open.length} open path${open.length === 1 ? '' : 's'}: ${open.join('; ')}`)
}
