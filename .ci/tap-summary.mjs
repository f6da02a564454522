// Echoes tap's output and adds the closing line CI reads: "N passed, N failed, N skipped".
let buf = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (d) => {
  buf += d
  process.stdout.write(d)
})
process.stdin.on('end', () => {
  const m = [...buf.matchAll(/^# \{ total: (\d+)(.*)\}$/gm)].pop()
  if (!m) {
    console.log('0 passed, 1 failed, 0 skipped')
    return
  }
  const get = (k) => +(m[2].match(new RegExp(`${k}: (\\d+)`))?.[1] ?? 0)
  console.log(`${get('pass')} passed, ${get('fail')} failed, ${get('skip') + get('todo')} skipped`)
})
