// Every flag the parser takes is in its command's --help and in the README's list of commands:
// the flags come from the parser's own tables (lib/cli/flags.ts, lib/cli/sandbox.ts), so a flag
// added later is covered without touching this test.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { COMMAND_FLAGS, OPTIONS } from '../lib/cli/flags.js'
import { SANDBOX_OPTIONS } from '../lib/cli/sandbox.js'
import { parseConfig } from '../lib/rules/config.js'
import { runCli } from './helpers/cli.js'
import { rulesFile } from './helpers/files.js'

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8')

/** The README's usage block under "## Commands", one text per command (its first line and those indented under it). */
function readmeUsage(): Map<string, string> {
  const section = README.slice(README.indexOf('## Commands'))
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
  const usage = new Map<string, string>()
  let current = ''
  for (const line of block.split('\n')) {
    const command = /^proxy-gate ([a-z-]+)/.exec(line)?.[1]
    if (command !== undefined) current = command
    if (command !== undefined || /^\s/.test(line)) usage.set(current, `${usage.get(current) ?? ''}\n${line}`)
  }
  return usage
}

const mentions = (text: string, flag: string): boolean => new RegExp(`--${flag}(?![a-z-])`).test(text)

t.test('every flag belongs to a command', async (t) => {
  const listed = new Set(Object.values(COMMAND_FLAGS).flat())
  for (const flag of Object.keys(OPTIONS)) {
    if (flag === 'help' || flag === 'version') continue
    t.ok(listed.has(flag as never), `--${flag} is in COMMAND_FLAGS (lib/cli/flags.ts) for the commands that take it`)
  }
})

t.test("each command's flags are in its --help and in the README", async (t) => {
  const usage = readmeUsage()
  for (const [command, flags] of Object.entries(COMMAND_FLAGS)) {
    const help = await runCli([command, '--help'])
    t.match(help.stdout, `usage: proxy-gate ${command}`, `${command} --help is its own`)
    const readme = usage.get(command) ?? ''
    t.not(readme, '', `the README lists ${command} under Commands`)
    for (const flag of flags) {
      t.ok(mentions(help.stdout, flag), `${command} --help names --${flag}`)
      t.ok(mentions(readme, flag), `the README's ${command} line names --${flag}`)
    }
  }
  const sandboxHelp = (await runCli(['sandbox', '--help'])).stdout
  for (const flag of Object.keys(SANDBOX_OPTIONS)) {
    if (flag === 'help') continue
    t.ok(mentions(sandboxHelp, flag), `sandbox --help names --${flag}`)
    t.ok(mentions(usage.get('sandbox') ?? '', flag), `the README's sandbox lines name --${flag}`)
  }
})

t.test('a flag of another command is refused, not ignored', async (t) => {
  const res = await runCli(['check', 'example.com:443', '--write'])
  t.equal(res.code, 2)
  t.match(res.stderr, /check does not take --write \(see proxy-gate check --help\)/)
})

t.test("the README's whole rules documents load, and what it says of passwords and ports holds", async (t) => {
  const documents = [...README.matchAll(/```json\n([\s\S]*?)```/g)].flatMap((m) => {
    try {
      const value = JSON.parse(m[1] ?? '') as unknown
      return typeof value === 'object' && value !== null && 'allow' in value ? [value] : []
    } catch {
      return []
    }
  })
  t.ok(documents.some((d) => 'auth' in d), 'the auth example is among them')
  for (const document of documents) {
    const loaded = parseConfig(document)
    t.ok(loaded.ok, `loads: ${JSON.stringify(document).slice(0, 80)}${loaded.ok ? '' : ` (${loaded.errors.map((e) => e.message).join('; ')})`}`)
  }
  const short = await runCli(['passwd', 'alice', '--rules', rulesFile({ allow: [] })], { input: '1234567\n' })
  t.equal(short.code, 1, short.stderr)
  t.match(short.stderr, /at least 8 characters/)
  t.match(README, /passwd USER` reads a password \(at least 8\s+characters/, 'the README says so')
  t.match((await runCli(['passwd', '--help'])).stdout, /at least 8 characters/, 'and so does passwd --help')
  const troubleshooting = README.slice(README.indexOf('## Troubleshooting'))
  t.notMatch(troubleshooting, /--listen [^\s`]*:3129/, 'a busy port is not moved to the admin port')
})
