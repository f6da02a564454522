// `proxy-gate sandbox build`: a build context holding what the image needs (dist/, the production
// dependencies as installed here, the default rules) so that `docker build --network none` works.
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, sep } from 'node:path'

/** The installed proxy-gate: the folder holding package.json, dist/ and the Dockerfile. */
const PACKAGE_ROOT = new URL('../../', import.meta.url).pathname

interface Manifest {
  readonly dependencies?: Record<string, string>
  readonly optionalDependencies?: Record<string, string>
}

function manifest(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest
}

/** Node's lookup: `from/node_modules/NAME`, then each parent folder's node_modules. */
function findPackage(name: string, from: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name)
    if (existsSync(join(candidate, 'package.json'))) return candidate
    if (dirname(dir) === dir) return undefined
  }
}

/** Every production package folder the package at `root` needs, as installed (nested copies included). */
function productionPackages(root: string): string[] {
  const found = new Set<string>()
  const visit = (dir: string): void => {
    const { dependencies = {}, optionalDependencies = {} } = manifest(dir)
    for (const name of Object.keys({ ...dependencies, ...optionalDependencies })) {
      const dep = findPackage(name, dir)
      if (dep === undefined) {
        if (name in optionalDependencies) continue
        throw new Error(`${name} (needed by ${relative(root, dir) || 'proxy-gate'}) is not installed: run npm install first`)
      }
      if (found.has(dep)) continue
      found.add(dep)
      visit(dep)
    }
  }
  visit(root)
  return [...found]
}

/**
 * Where a package goes in the context: its path below proxy-gate's folder, or, for a package
 * hoisted next to an installed proxy-gate, below the project that installed it.
 */
function placeOf(root: string, dep: string): string {
  const inside = relative(root, dep)
  if (!inside.startsWith('..')) return inside
  const hoist = root.slice(0, root.lastIndexOf(`${sep}node_modules${sep}`))
  return relative(hoist, dep)
}

/** Copies one package without its node_modules: nested dependencies are copied to their own places. */
function copyPackage(dep: string, to: string): void {
  cpSync(dep, to, { recursive: true, filter: (src) => !relative(dep, src).split(sep).includes('node_modules') })
}

/** A temporary build context; the caller removes it. */
export function prepareContext(root = PACKAGE_ROOT): string {
  if (!existsSync(join(root, 'dist', 'cli.js'))) throw new Error(`${join(root, 'dist')} is missing: run npm run build first`)
  const context = mkdtempSync(join(tmpdir(), 'proxy-gate-image-'))
  try {
    for (const file of ['Dockerfile', 'package.json', 'rules.json', 'rules.schema.json']) cpSync(join(root, file), join(context, file))
    cpSync(join(root, 'dist'), join(context, 'dist'), { recursive: true, filter: (src) => !src.endsWith('.map') })
    for (const dep of productionPackages(root)) copyPackage(dep, join(context, placeOf(root, dep)))
  } catch (error) {
    rmSync(context, { recursive: true, force: true })
    throw error
  }
  return context
}
