// Host rules that load but are not what they look like: a name that mixes scripts or reads as
// another name (a Cyrillic "а" in "аpple.com"; punycode that decodes to either), and a wildcard
// directly on a public suffix ("*.com", "*.co.uk", "*.github.io"), which allows names that anyone
// can register. Warnings, not errors: such a rule can be meant.
import { domainToUnicode } from 'node:url'
import { tldts } from '../core/lazy.js'
import type { HostPattern, RuleError } from '../policy/rules.js'

/**
 * The scripts told apart: those of the look-alikes that matter (Latin, Greek, Cyrillic, Armenian,
 * Cherokee…) and the major others. Letters of the rest count as one script, "another script".
 */
const SCRIPTS = [
  'Latin', 'Greek', 'Cyrillic', 'Armenian', 'Georgian', 'Cherokee', 'Hebrew', 'Arabic', 'Syriac', 'Thaana', 'Devanagari', 'Bengali',
  'Gurmukhi', 'Gujarati', 'Oriya', 'Tamil', 'Telugu', 'Kannada', 'Malayalam', 'Sinhala', 'Thai', 'Lao', 'Tibetan', 'Myanmar',
  'Khmer', 'Mongolian', 'Ethiopic', 'Canadian_Aboriginal', 'Hangul', 'Hiragana', 'Katakana', 'Bopomofo', 'Han', 'Yi', 'Coptic',
].map((name) => ({ name: name.replace('_', ' '), letter: new RegExp(`^\\p{Script=${name}}$`, 'u') }))
const NO_SCRIPT = /^[\p{Script=Common}\p{Script=Inherited}]$/u

/** UTS #39 "highly restrictive": one script, or Latin with the scripts of one CJK writing system. */
const MIXES_ALLOWED = [new Set(['Latin', 'Han', 'Hiragana', 'Katakana']), new Set(['Latin', 'Han', 'Bopomofo']), new Set(['Latin', 'Han', 'Hangul'])]

/** Letters of other scripts that read as a Latin letter in a lower-case name (from Unicode's confusables.txt). */
const LOOKS_LATIN: Readonly<Record<string, string>> = {
  // Cyrillic
  а: 'a', ь: 'b', с: 'c', ԁ: 'd', е: 'e', ҽ: 'e', һ: 'h', і: 'i', ј: 'j', ӏ: 'l', п: 'n', о: 'o', р: 'p', ԛ: 'q', г: 'r', ѕ: 's', ѵ: 'v', ԝ: 'w', х: 'x', у: 'y',
  // Greek
  α: 'a', ι: 'i', κ: 'k', ν: 'v', ο: 'o', ρ: 'p', υ: 'u', χ: 'x', γ: 'y',
  // Armenian
  ց: 'g', հ: 'h', ո: 'n', օ: 'o', զ: 'q', ս: 'u',
}

function scriptsOf(label: string): string[] {
  const found = new Set<string>()
  for (const c of label) {
    if (NO_SCRIPT.test(c)) continue
    found.add(SCRIPTS.find((s) => s.letter.test(c))?.name ?? 'another script')
  }
  return [...found]
}

function mixesScripts(label: string): string[] | undefined {
  const scripts = scriptsOf(label)
  if (scripts.length <= 1 || MIXES_ALLOWED.some((allowed) => scripts.every((s) => allowed.has(s)))) return undefined
  return scripts
}

/** The ASCII name `unicode` reads as, when every letter of it reads as a Latin one and one of them is not. */
function asciiLookAlike(unicode: string): string | undefined {
  const shown = Array.from(unicode, (c) => LOOKS_LATIN[c] ?? c).join('')
  return shown !== unicode && /^[a-z0-9.-]+$/.test(shown) ? shown : undefined
}

/** An `xn--` label that is not punycode of anything. (Punycode of plain ASCII ends in "-", which no rule name may.) */
function badPunycode(label: string): string | undefined {
  if (!label.startsWith('xn--')) return undefined
  // Node 20 and 22 decode bad punycode to "", Node 24 leaves the label as it was
  const decoded = domainToUnicode(label)
  if (decoded !== '' && !decoded.startsWith('xn--')) return undefined
  return `"${label}" is not valid punycode: no name is written this way`
}

/** What is wrong with a name (in its ASCII form, as rules keep it), in a sentence; undefined: nothing. */
function nameProblem(name: string, written: string): string | undefined {
  const labels = name.split('.')
  const punycode = labels.map(badPunycode).find((p) => p !== undefined)
  if (punycode !== undefined) return punycode
  const unicode = domainToUnicode(name)
  const mixed = unicode.split('.').map((label) => ({ label, scripts: mixesScripts(label) })).find((l) => l.scripts !== undefined)
  const lookAlike = asciiLookAlike(unicode)
  if (mixed === undefined && lookAlike === undefined) return undefined
  const decoded = written.toLowerCase().includes('xn--') ? `is "${unicode}" when decoded, which ` : ''
  const what = [mixed && `mixes ${(mixed.scripts ?? []).join(' and ')} letters in "${mixed.label}"`, lookAlike && `looks like "${lookAlike}"`].filter(Boolean).join(' and ')
  const why = lookAlike ? `it is not ${lookAlike} but a look-alike of it` : 'mixed scripts are how look-alikes of other names are made: check that it is the name you mean'
  return `${decoded}${what}: ${why}`
}

/** Whether `suffix` is on the public suffix list ("com", "co.uk"; "github.io" in its private part). */
function publicSuffix(suffix: string): 'icann' | 'private' | undefined {
  const parsed = tldts().parse(suffix, { allowPrivateDomains: true })
  if (parsed.publicSuffix !== suffix) return undefined
  return parsed.isIcann === true ? 'icann' : parsed.isPrivate === true ? 'private' : undefined
}

/**
 * Warnings for one host pattern at `path`, written `written`. `widens`: the pattern lets traffic
 * through (allow, bypass), so a wildcard on a public suffix is worth a word; in deny it is not.
 */
export function hostWarnings(path: string, written: string, pattern: HostPattern, widens: boolean): RuleError[] {
  if (pattern.kind === 'cidr') return []
  const name = pattern.kind === 'exact' ? pattern.name : pattern.suffix
  const warnings: RuleError[] = []
  const problem = nameProblem(name, written)
  if (problem !== undefined) warnings.push({ path, entry: written, message: problem })
  const suffix = pattern.kind === 'wildcard' && widens ? publicSuffix(name) : undefined
  if (suffix !== undefined) {
    const whose = suffix === 'private' ? ' (on the private part of the list: the names under it belong to its many users)' : ''
    const unicode = domainToUnicode(name)
    const shown = unicode === name ? `"${name}"` : `"${name}" ("${unicode}")`
    warnings.push({ path, entry: written, message: `${shown} is a public suffix${whose}: "*.${name}" takes in every name registered under it, whoever holds it` })
  }
  return warnings
}
