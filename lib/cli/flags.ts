// The command line's flags: how each is parsed, and which commands take it. The parser refuses a
// flag its command does not list; test/cli-help.test.ts holds each command's help and the README to
// these lists, so a flag added here is documented or that test fails.
import type { ParseArgsConfig } from 'node:util'

export const OPTIONS = {
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
  method: { type: 'string' },
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

export type Flag = keyof typeof OPTIONS

export type Values = { [K in Flag]: (typeof OPTIONS)[K] extends { type: 'boolean' } ? boolean : string | undefined }

/** The flags each command takes (--help and --version go with every one). */
export const COMMAND_FLAGS: Readonly<Record<string, readonly Flag[]>> = {
  start: ['rules', 'listen', 'mode', 'log-level', 'log-format', 'insecure-open', 'advertise', 'dir', 'admin-listen', 'admin-token-file', 'sandbox', 'socks'],
  init: ['force', 'rules'],
  check: ['method', 'rules', 'source', 'user'],
  validate: ['rules', 'dir'],
  pac: ['rules', 'advertise', 'flavor'],
  passwd: ['rules'],
  docker: ['target', 'pac', 'write', 'file', 'dry-run', 'revert', 'os', 'advertise', 'rules'],
  'system-proxy': ['os', 'pac', 'manual', 'revert', 'apply', 'advertise', 'rules'],
  ca: ['force', 'dir'],
  learn: ['rules', 'out', 'collapse', 'from', 'listen', 'duration', 'force', 'mode', 'log-level', 'log-format', 'dir', 'admin-listen', 'admin-token-file'],
  suggest: ['from', 'json'],
  service: ['rules', 'dir', 'dry-run', 'os', 'force'],
  secrets: ['rules', 'dir'],
}

const EVERY_COMMAND = new Set<string>(['help', 'version'])
const LISTED = new Set<string>(Object.values(COMMAND_FLAGS).flat())

/**
 * The first flag given that `command` does not take, if any. A flag no command lists yet is let
 * through (the help test names it), so that a flag is never refused by an out-of-date table.
 */
export function foreignFlag(command: string, given: readonly string[]): string | undefined {
  const takes = COMMAND_FLAGS[command]
  if (!takes) return undefined
  return given.find((flag) => !EVERY_COMMAND.has(flag) && LISTED.has(flag) && !takes.includes(flag as Flag))
}
