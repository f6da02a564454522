// `proxy-gate passwd USER`: reads a password and writes its salted hash into rules.json's
// auth.users (every other key kept, a backup beside the file, both mode 0600); a running proxy
// reloads it. The file must exist and load with the user in it, or nothing is written.
import { statSync } from 'node:fs'
import { formatRuleErrors } from '../policy/rules.js'
import type { Result } from '../policy/target.js'
import { hashPassword } from '../proxy/auth.js'
import { formatScryptHash, USER } from '../rules/auth.js'
import { parseConfig } from '../rules/config.js'
import type { RulesPath } from '../rules/file.js'
import { applyWrite, backupPath, planWrite, readJsonFile, type WritePlan } from '../wiring/settings-file.js'

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

/** A stand-in hash, to see whether the file would load with the user in it before a password is asked for. */
const PLACEHOLDER = formatScryptHash({ N: 16_384, r: 8, p: 1, salt: Buffer.alloc(16), key: Buffer.alloc(32) })

/** The rules file with `hash` for `user`, or why it is not written. */
function planFor(rulesFile: string, user: string, hash: string): Result<WritePlan> {
  const current = readJsonFile(rulesFile)
  if (!current.ok) return current
  if (!current.value.value) return { ok: false, error: `there is no rules file at ${rulesFile}: check the path, or write one first with "proxy-gate init --rules ${rulesFile}"` }
  const plan = planWrite(current.value, { auth: { users: { [user]: hash } } })
  const valid = parseConfig(plan.after)
  if (!valid.ok) return { ok: false, error: `${rulesFile} would not load, so it was left as it is; fix it first (proxy-gate validate --rules ${rulesFile}):\n${formatRuleErrors(valid.errors).replace(/^/gm, '  ')}` }
  return { ok: true, value: plan }
}

export async function passwdCommand(rules: RulesPath, user: string | undefined): Promise<number> {
  if (user === undefined || !USER.test(user)) {
    console.error('proxy-gate: passwd takes a USER of 1-64 letters, digits, ".", "_", "@" or "-"')
    return 2
  }
  if (rules.packaged) {
    console.error(`proxy-gate: no ./rules.json here, and passwd does not edit the rules that ship with proxy-gate (${rules.file}): run "proxy-gate init" to write an editable ./rules.json, then passwd again (or pass --rules FILE)`)
    return 1
  }
  const rulesFile = rules.file
  const checked = planFor(rulesFile, user, PLACEHOLDER)
  if (!checked.ok) {
    console.error(`proxy-gate: ${checked.error}`)
    return 1
  }
  const password = await readPassword(`password for ${user}: `)
  if (password.length < 8) {
    console.error('proxy-gate: use a password of at least 8 characters')
    return 1
  }
  // read again: the file may have changed while the password was typed
  const plan = planFor(rulesFile, user, await hashPassword(password))
  if (!plan.ok) {
    console.error(`proxy-gate: ${plan.error}`)
    return 1
  }
  const mode = statSync(rulesFile).mode & 0o777
  // the file holds password hashes: only its owner reads it, and so for the backup
  applyWrite(rulesFile, plan.value, 'latest', 0o600)
  if ((mode & 0o077) !== 0) console.error(`proxy-gate: warning: ${rulesFile} could be read by other users (mode ${mode.toString(8).padStart(4, '0')}); it holds password hashes, so it is now 0600`)
  console.log(`set the password of ${user} in ${rulesFile} (backup: ${backupPath(rulesFile)}); a running proxy-gate reloads it`)
  return 0
}
