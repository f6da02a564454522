// Replacing a file so that a reader (or a crash) sees the old content or the new, never half:
// a temporary file in the same folder, flushed to disk, then renamed over the name.
import { randomBytes } from 'node:crypto'
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'

/**
 * Writes `text` to `path` atomically. With `mode`, the file has exactly that mode from its
 * first byte (never wider, even briefly); without, it is created as a plain write would be.
 */
export function writeFileAtomic(path: string, text: string, mode?: number): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    writeSynced(temp, text, mode)
    renameSync(temp, path)
  } catch (error) {
    rmSync(temp, { force: true })
    throw error
  }
  syncFolder(dirname(path))
}

function writeSynced(path: string, text: string, mode: number | undefined): void {
  const fd = openSync(path, 'wx', mode ?? 0o666)
  try {
    if (mode !== undefined) fchmodSync(fd, mode) // the umask may have narrowed it
    writeFileSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Makes the rename itself durable. Windows cannot open a folder: there the rename is as durable as it gets. */
function syncFolder(folder: string): void {
  let fd: number
  try {
    fd = openSync(folder, 'r')
  } catch {
    return
  }
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}
