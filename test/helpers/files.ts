// Scratch files for tests: a fresh temporary directory and JSON written into it.
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A new empty directory under the OS temp dir, named proxy-gate-NAME-XXXXXX. */
export function tempDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `proxy-gate-${name}-`))
}

/** A rules.json holding `rules`, in a new temporary directory. */
export function rulesFile(rules: unknown): string {
  return writeJson(tempDir('rules'), 'rules.json', rules)
}

/** Writes `value` as indented JSON to DIR/NAME and returns the file's path. */
export function writeJson(dir: string, name: string, value: unknown): string {
  const file = join(dir, name)
  writeFileSync(file, JSON.stringify(value, null, 2))
  return file
}

/**
 * A folder laid out and updated the way the kubelet writes a ConfigMap volume (AtomicWriter in
 * kubernetes pkg/volume/util/atomic_writer.go): the files live in a timestamped folder,
 * `..data` is a symlink to it, and each visible name is a symlink through `..data`.
 */
export interface ConfigMapVolume {
  readonly dir: string
  /** writes a new timestamped folder, points `..data_tmp` at it, renames that over `..data`, removes the old folder */
  update(files: Readonly<Record<string, string>>): void
}

let configMapSerial = 0

export function configMapVolume(files: Readonly<Record<string, string>>): ConfigMapVolume {
  const dir = tempDir('configmap')
  let current: string | undefined
  const update = (next: Readonly<Record<string, string>>): void => {
    const stamp = `..${new Date().toISOString().replace(/[-:T]/g, '_').replace(/\..*/, '')}.${String(++configMapSerial).padStart(9, '0')}`
    mkdirSync(join(dir, stamp))
    for (const [name, text] of Object.entries(next)) writeFileSync(join(dir, stamp, name), text)
    symlinkSync(stamp, join(dir, '..data_tmp'))
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
    for (const name of Object.keys(next)) if (!existsSync(join(dir, name))) symlinkSync(join('..data', name), join(dir, name))
    if (current !== undefined) rmSync(join(dir, current), { recursive: true })
    current = stamp
  }
  update(files)
  return { dir, update }
}
