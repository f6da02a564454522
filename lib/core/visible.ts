// Text for a terminal: control characters (C0, DEL and C1) written as `\u00XX`, so that what a
// client or a file put into a host name, a header or a rule cannot move the cursor, recolour the
// screen, retitle the window or forge a line. C1 matters as much as C0: U+009B is CSI, which many
// terminals take as ESC [.
import { format } from 'node:util'

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g
// eslint-disable-next-line no-control-regex
const CONTROL_BUT_LINES = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/g

function escape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
}

/** One line: every control character escaped, line breaks and tabs too (and U+2028/U+2029, which some viewers break on). */
export function visible(text: string): string {
  return text.replace(CONTROL, escape)
}

/** Lines: as visible, but "\n" and tabs stay (a carriage return does not: it overwrites the line). */
function visibleLines(text: string): string {
  return text.replace(CONTROL_BUT_LINES, escape)
}

const HAS_C1 = /[\u0080-\u009f]/
const C1 = /[\u0080-\u009f]/g

/** JSON text with C1 controls as `\u00XX` escapes (the same value): JSON.stringify leaves them raw, and `docker logs` shows JSON on a terminal. */
export function jsonWithoutC1(json: string): string {
  return HAS_C1.test(json) ? json.replace(C1, escape) : json
}

/**
 * console.log, info, warn and error print through visibleLines from now on: one place for every
 * line a command prints (a rule, a path, a target or a log value echoed back), whichever command
 * and whoever adds the next message. Arguments are formatted as console does, without colour.
 */
export function escapeConsole(target: Console = console): void {
  for (const method of ['log', 'info', 'warn', 'error'] as const) {
    const print = target[method].bind(target)
    target[method] = (...args: unknown[]) => print(visibleLines(format(...args)))
  }
}
