// proxy-gate's version, from package.json (one source of truth for --version and generated files).
import { readFileSync } from 'node:fs'

export const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version
