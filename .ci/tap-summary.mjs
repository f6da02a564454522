// Echoes tap's output and adds the closing lines CI reads: "N passed, N failed, N skipped".
//   node tap-summary.mjs LABEL COUNTS.json < tap output     one run: echo, summary line, counts saved
//   node tap-summary.mjs --total COUNTS.json...             the sum of runs: the last line CI reads
// In CI (the CI variable set, and not "false" or "0") every test must run: a skipped (or todo)
// test is listed with its reason and the exit status is 1, with the counts left as they are.
import { readFileSync, writeFileSync } from 'node:fs'

const line = (c) => `${c.pass} passed, ${c.fail} failed, ${c.skip} skipped`
const inCi = !['', 'false', '0'].includes(process.env.CI ?? '')

/** Prints each skipped test; true when CI must fail for them (or for a count tap gave without them). */
function reportSkipped(skipped, count) {
  if (skipped.length === 0 && count === 0) return false
  const verdict = inCi ? 'CI runs every test, so this run fails' : 'outside CI this is allowed'
  console.log(`# ${Math.max(skipped.length, count)} skipped: ${verdict}`)
  for (const s of skipped) console.log(`#   ${s.name}: ${s.directive}${s.reason ? ` ${s.reason}` : ''}`)
  return inCi
}

/**
 * The `ok` lines with a SKIP or TODO directive, at any nesting level, each named by the path of
 * subtests it sits in ("test/x.test.ts > outer > inner"). tap indents a subtest 4 spaces deeper
 * than its parent and opens it with "# Subtest: name"; a skipped subtest has no such line, only
 * its "ok N - name # SKIP reason" line (names and reasons escape "#" as "\#").
 */
function skippedTests(tap) {
  const open = []
  const skipped = []
  for (const text of tap.split('\n')) {
    const subtest = /^( *)# Subtest: (.*)$/.exec(text)
    if (subtest) {
      const depth = subtest[1].length / 4
      open.length = depth
      open[depth] = subtest[2]
      continue
    }
    const ok = /^( *)(?:not )?ok \d+(?: - )?(.*?) # (SKIP|TODO)\b ?(.*)$/i.exec(text)
    if (!ok) continue
    const depth = ok[1].length / 4
    const unescape = (s) => s.replace(/\\#/g, '#').trim()
    skipped.push({ name: [...open.slice(0, depth), unescape(ok[2])].join(' > '), directive: ok[3].toUpperCase(), reason: unescape(ok[4]) })
  }
  return skipped
}

if (process.argv[2] === '--total') {
  const runs = process.argv.slice(3).map((f) => JSON.parse(readFileSync(f, 'utf8')))
  const sum = { pass: 0, fail: 0, skip: 0 }
  for (const run of runs) for (const k of Object.keys(sum)) sum[k] += run[k]
  for (const run of runs) console.log(`# ${run.label}: ${line(run)}`)
  if (runs.length === 0) sum.fail = 1
  const failsCi = reportSkipped(runs.flatMap((run) => (run.skipped ?? []).map((s) => ({ ...s, name: `${run.label}: ${s.name}` }))), sum.skip)
  console.log(line(sum))
  if (failsCi) process.exitCode = 1
} else {
  const [label = 'tests', out] = process.argv.slice(2)
  let buf = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (d) => {
    buf += d
    process.stdout.write(d)
  })
  process.stdin.on('end', () => {
    const m = [...buf.matchAll(/^# \{ total: (\d+)(.*)\}$/gm)].pop()
    const get = (k) => +(m?.[2].match(new RegExp(`${k}: (\\d+)`))?.[1] ?? 0)
    const counts = m ? { label, pass: get('pass'), fail: get('fail'), skip: get('skip') + get('todo') } : { label, pass: 0, fail: 1, skip: 0 }
    const skipped = skippedTests(buf)
    const failsCi = reportSkipped(skipped, counts.skip)
    console.log(`# ${label}: ${line(counts)}`)
    if (out) writeFileSync(out, JSON.stringify({ ...counts, skipped }))
    if (failsCi) process.exitCode = 1
  })
}
