// Small pieces every command shares: how problems are printed and what counts as loopback.
import { classifyIp, parseIp } from '../policy/ip.js'
import { formatRuleErrors, type RuleError } from '../policy/rules.js'

export function printErrors(file: string, errors: readonly RuleError[]): void {
  console.error(`${file}: ${errors.length} problem${errors.length === 1 ? '' : 's'}`)
  console.error(formatRuleErrors(errors).replace(/^/gm, '  '))
}

/** Prints a problem and returns the exit status (2 unless said: a usage problem). */
export function fail(message: string, code = 2): number {
  console.error(`proxy-gate: ${message}`)
  return code
}

/** Prints a usage problem; exit status 2. */
export function usageError(message: string): number {
  return fail(message, 2)
}

export function isLoopback(host: string): boolean {
  const ip = parseIp(host)
  return ip !== undefined && classifyIp(ip)?.kind === 'loopback'
}
