// Echoes tap's output and adds the closing lines CI reads: "N passed, N failed, N skipped".
//   node tap-summary.mjs LABEL COUNTS.json < tap output     one run: echo, summary line, counts saved
//   node tap-summary.mjs --total COUNTS.json...             the sum of runs: the last line CI reads
import { readFileSync, writeFileSync } from 'node:fs'

const line = (c) => `${c.pass} passed, ${c.fail} failed, ${c.skip} skipped`

if (process.argv[2] === '--total') {
  const runs = process.argv.slice(3).map((f) => JSON.parse(readFileSync(f, 'utf8')))
  const sum = { pass: 0, fail: 0, skip: 0 }
  for (const run of runs) for (const k of Object.keys(sum)) sum[k] += run[k]
  for (const run of runs) console.log(`# ${run.label}: ${line(run)}`)
  if (runs.length === 0) sum.fail = 1
  console.log(line(sum))
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
    console.log(`# ${label}: ${line(counts)}`)
    if (out) writeFileSync(out, JSON.stringify(counts))
  })
}
