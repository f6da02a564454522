// Suggested rules built from what a client sent: they must allow that request and nothing more.
// A path glob decodes percent-escapes and then reads every "*" as a wildcard (an escaped "%2A"
// too), so a path holding "*" cannot be written as a glob that matches it alone: no suggestion.
// Everything else the grammar would read differently ("%", "?", "#", white space) is escaped.
import { parseRule } from './rules.js'
import { normalisePath } from './target.js'

/** The glob that matches the decoded path `path` alone, or undefined when there is none. */
function literalPathGlob(path: string): string | undefined {
  if (path.includes('*')) return undefined
  const glob = path.replace(/[%?#\s]/gu, (c) => encodeURIComponent(c))
  const decoded = normalisePath(glob)
  return decoded.ok && decoded.value === path ? glob : undefined
}

/**
 * The allow entry (JSON text) for one request on a host name, or undefined when no rule can
 * allow exactly it: the parsed rule is checked to name this method and this path, literally.
 */
export function requestSuggestion(host: string, port: number, method: string, path: string): string | undefined {
  const glob = literalPathGlob(path)
  if (glob === undefined) return undefined
  const entry = { host, ports: [port], methods: [method], paths: [glob] }
  const rule = parseRule(entry, 'allow', 0)
  if (!rule.ok || rule.value.pattern.kind !== 'exact' || rule.value.methods?.join() !== method || rule.value.paths?.[0]?.regex.test(path) !== true) return undefined
  return JSON.stringify(entry)
}
