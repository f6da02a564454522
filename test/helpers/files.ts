// Scratch files for tests: a fresh temporary directory and JSON written into it.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A new empty directory under the OS temp dir, named proxy-gate-NAME-XXXXXX. */
export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `proxy-gate-${name}-`))
}

/** Writes `value` as indented JSON to DIR/NAME and returns the file's path. */
export function writeJson(dir: string, name: string, value: unknown): string {
  const file = join(dir, name)
  writeFileSync(file, JSON.stringify(value, null, 2))
  return file
}
