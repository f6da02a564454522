// The range of every number in rules.json, checked at load. rules.schema.json states the same
// minimum and maximum for each; test/bounds.test.ts holds the two to agree and finds any number
// the schema leaves unbounded.
import { entryText, type RuleError } from '../policy/rules.js'

/** The longest a Node.js timer can wait: setTimeout fires after 1 ms for anything longer. */
export const MAX_TIMER_MS = 2_147_483_647

export interface Bound {
  readonly min: number
  readonly max: number
}

/** `value` when it is a whole number within `bound`; else an error naming the key, the value and the range, and `fallback`. */
export function wholeNumberWithin(errors: RuleError[], path: string, value: unknown, fallback: number, bound: Bound): number {
  if (value === undefined) return fallback
  if (typeof value === 'number' && Number.isInteger(value) && value >= bound.min && value <= bound.max) return value
  const unit = path.endsWith('Ms') ? ' (milliseconds)' : ''
  errors.push({ path, entry: entryText(value), message: `must be a whole number from ${bound.min} to ${bound.max}${unit}` })
  return fallback
}
