// `proxy-gate learn` (run in report mode, or read decision logs, and write a suggested rules
// file) and `proxy-gate suggest` (what to add to allow what was denied). The proxy itself is
// `start`'s: the CLI hands it in, so this module never starts one of its own.
import { open } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { parseConfig } from '../rules/config.js'
import { createLearner, decisionFromLogLine, learnedRulesFile, type Learned, type Learner } from '../observe/learn.js'
import { formatRuleErrors } from '../policy/rules.js'
import type { ProxyEvent } from '../proxy/runtime.js'
import { schemaReference, type RulesPath } from '../rules/file.js'
import { fail } from './common.js'
import { readJsonFile, writeJsonAtomic } from '../wiring/settings-file.js'

/** What `learn` asks of `start`: see every event, and stop by itself after a while. */
export interface StartHooks {
  readonly observe?: (event: ProxyEvent) => void
  readonly durationMs?: number
}

export interface LearnArgs {
  readonly rules: RulesPath
  readonly out: string | undefined
  readonly from: string | undefined
  readonly collapse: boolean
  readonly force: boolean
  readonly duration: string | undefined
  readonly mode: string | undefined
  readonly listen: string | undefined
}

function times(n: number, what: string, many = `${what}s`): string {
  return `${n} ${n === 1 ? what : many}`
}

/** Feeds every decision line of a JSON log ("-": stdin) to the learner; other lines are skipped. */
async function readLog(path: string, learner: Learner): Promise<string | undefined> {
  try {
    const lines = path === '-' ? createInterface({ input: process.stdin, crlfDelay: Infinity }) : (await open(path)).readLines()
    for await (const line of lines) {
      const found = decisionFromLogLine(line)
      if (found) learner.add(found.record, found.at)
    }
    return undefined
  } catch (error) {
    return `cannot read ${path}: ${(error as Error).message}`
  }
}

export async function learnCommand(args: LearnArgs, start: (hooks: StartHooks) => Promise<number>): Promise<number> {
  const rules = args.rules.file
  const out = resolve(args.out ?? 'learned-rules.json')
  if (out === rules && args.rules.packaged) return fail(`--out is the rules file that ships with proxy-gate (${rules}): choose another --out`)
  if (out === rules && !args.force) return fail(`--out is the rules file ${rules}: choose another --out, or pass --force to replace it`)
  if (args.mode !== undefined && args.mode !== 'report') return fail('learn always runs the proxy in report mode (drop --mode)')
  const seconds = args.duration === undefined ? undefined : Number(args.duration)
  if (seconds !== undefined && !(seconds > 0 && Number.isFinite(seconds))) return fail('--duration must be a number of seconds greater than 0')
  if (args.from !== undefined && (seconds !== undefined || args.listen !== undefined)) return fail('--duration and --listen are for running the proxy, not for --from')
  const base = readJsonFile(rules)
  if (!base.ok) return fail(base.error, 1)
  const current = base.value.value ? parseConfig(base.value.value) : undefined
  if (current && !current.ok) return fail(`${rules} has problems: see "proxy-gate validate --rules ${rules}"`, 1)
  // the packaged "$schema" is relative to the package, not to where the learned file goes
  const seed = base.value.value && args.rules.packaged ? { ...base.value.value, $schema: schemaReference(dirname(out)) } : base.value.value

  const learner = createLearner()
  if (args.from !== undefined) {
    const problem = await readLog(args.from, learner)
    if (problem) return fail(problem, 1)
  } else {
    const observe = (event: ProxyEvent): void => {
      if (event.type === 'decision') learner.add(event, Date.now())
    }
    const code = await start({ observe, ...(seconds === undefined ? {} : { durationMs: seconds * 1000 }) })
    if (code !== 0) return code
  }

  const learned = learner.result({ collapse: args.collapse })
  const file = learnedRulesFile(seed ?? {}, learned)
  const valid = parseConfig(file)
  if (!valid.ok) return fail(`the learned rules do not validate, nothing written:\n${formatRuleErrors(valid.errors)}`, 1)
  // mode 0600: a rules file, which holds the password hashes of "auth" when the rules had them
  writeJsonAtomic(out, file, 0o600)
  printSummary(out, learned)
  return 0
}

/** How many learned entries the summary lists (the file has them all). */
const LISTED = 20

/** What was written and what a person must look at: on stderr, as stdout carries the proxy's log. */
function printSummary(out: string, learned: Learned): void {
  const say = (line: string): void => console.error(line)
  const n = learned.allow.length
  say(`proxy-gate learn: ${times(learned.decisions, 'decision')} seen; wrote ${out} with ${times(n, 'new "allow" entry', 'new "allow" entries')}`)
  for (const entry of learned.allow.slice(0, LISTED)) say(`  + ${entry.host}:${entry.ports.join(',')}  (${entry.note})`)
  if (n > LISTED) say(`  … and ${n - LISTED} more in the file`)
  if (learned.special.length > 0) {
    say(`warning: ${times(learned.special.length, 'private or special-purpose destination was', 'private or special-purpose destinations were')} left out of "allow".`)
    say('Add these entries only if the destination is meant to be reachable from the clients:')
    for (const s of learned.special) {
      say(`  ${s.target}: ${s.why}`)
      for (const entry of s.entries) say(`    ${JSON.stringify(entry)}`)
    }
  }
  for (const hit of learned.denyRules) say(`note: ${hit.target} matched deny rule ${hit.rule} (seen ${times(hit.count, 'time')}); it stays denied`)
  if (learned.dropped > 0) say(`warning: not learned: ${times(learned.dropped, 'decision')} about further targets (the limit is ${learned.limit} targets)`)
  if (learned.decisions === 0) say('note: no decisions were seen (--from needs JSON logs: proxy-gate start --log-format json)')
  say(`review ${out}, then enforce it: proxy-gate start --rules ${out}`)
}

export async function suggestCommand(args: { readonly from: string | undefined; readonly json: boolean }): Promise<number> {
  if (args.from === undefined) return fail('suggest needs --from LOG (a JSON log of proxy-gate start, "-" for stdin)')
  const learner = createLearner()
  const problem = await readLog(args.from, learner)
  if (problem) return fail(problem, 1)
  const suggestions = learner.suggestions()
  if (suggestions.length === 0) console.error('proxy-gate suggest: nothing in the log was denied (or would have been)')
  for (const s of suggestions) {
    if (args.json) console.log(JSON.stringify(s))
    else if (s.need === 'deny-rule') console.log(`${String(s.count).padStart(7)}  (no entry helps: ${s.why})`)
    else console.log(`${String(s.count).padStart(7)}  ${s.add.map((e) => JSON.stringify(e)).join(' ')}${s.need === 'special' ? `  # warning: ${s.why}` : ''}`)
  }
  return 0
}
