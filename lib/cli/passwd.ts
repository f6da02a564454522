// `proxy-gate passwd USER`: reads a password and writes its salted hash into rules.json's
// auth.users (every other key kept, a backup beside the file); a running proxy reloads it.
import { hashPassword } from '../proxy/auth.js'
import type { RulesPath } from '../rules/file.js'
import { applyWrite, backupPath, planWrite, readJsonFile } from '../wiring/settings-file.js'

/** One line from stdin; on a terminal the typed characters are not echoed. */
function readPassword(prompt: string): Promise<string> {
  const stdin = process.stdin
  return new Promise((resolve, reject) => {
    let text = ''
    const tty = stdin.isTTY
    if (tty) {
      process.stderr.write(prompt)
      stdin.setRawMode(true)
    }
    const finish = (): void => {
      stdin.off('data', onData)
      if (tty) {
        stdin.setRawMode(false)
        process.stderr.write('\n')
      }
      stdin.pause()
      resolve(text)
    }
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\u0003') return reject(new Error('cancelled'))
        if (ch === '\n' || ch === '\r') return finish()
        if (ch === '\u007f') text = text.slice(0, -1)
        else text += ch
      }
    }
    stdin.on('data', onData)
    stdin.once('end', finish)
  })
}

export async function passwdCommand(rules: RulesPath, user: string | undefined): Promise<number> {
  if (user === undefined || !/^[A-Za-z0-9_.@-]{1,64}$/.test(user)) {
    console.error('proxy-gate: passwd takes a USER of 1-64 letters, digits, ".", "_", "@" or "-"')
    return 2
  }
  if (rules.packaged) {
    console.error(`proxy-gate: no ./rules.json here, and passwd does not edit the rules that ship with proxy-gate (${rules.file}): run "proxy-gate init" to write an editable ./rules.json, then passwd again (or pass --rules FILE)`)
    return 1
  }
  const rulesFile = rules.file
  const current = readJsonFile(rulesFile)
  if (!current.ok) {
    console.error(`proxy-gate: ${current.error}`)
    return 1
  }
  const password = await readPassword(`password for ${user}: `)
  if (password.length < 8) {
    console.error('proxy-gate: use a password of at least 8 characters')
    return 1
  }
  const plan = planWrite(current.value, { auth: { users: { [user]: await hashPassword(password) } } })
  applyWrite(rulesFile, plan, 'latest')
  console.log(`set the password of ${user} in ${rulesFile} (backup: ${backupPath(rulesFile)}); a running proxy-gate reloads it`)
  return 0
}
