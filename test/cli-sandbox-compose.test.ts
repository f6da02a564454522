// `sandbox compose` checks what it writes a file for: the rules load, the engine is one it knows,
// and a folder that would put certs/ into the container is named with a warning.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'

// no engine on PATH: compose prints the file --engine names (see sandbox-engine.test.ts)
const NO_ENGINE = { env: { PATH: '/nonexistent' } }

t.test('a missing or invalid rules file: no Compose file, exit 1', async (t) => {
  const missing = await runCli(['sandbox', 'compose', '--rules', join(tempDir('compose'), 'rules.json')], NO_ENGINE)
  t.equal(missing.code, 1)
  t.equal(missing.stdout, '')
  t.match(missing.stderr, /cannot read/)
  const invalid = await runCli(['sandbox', 'compose', '--rules', rulesFile({ allow: ['*'] })], NO_ENGINE)
  t.equal(invalid.code, 1)
  t.equal(invalid.stdout, '')
  t.match(invalid.stderr, /allow\[0\] "\*"/)
})

t.test('an engine it has no construction for is refused', async (t) => {
  const lxc = await runCli(['sandbox', 'compose', '--engine', 'lxc', '--rules', rulesFile({ allow: [] })], NO_ENGINE)
  t.equal(lxc.code, 2)
  t.equal(lxc.stdout, '')
  t.match(lxc.stderr, /--engine must name the docker or podman CLI, not "lxc"/)
})

t.test('a rules folder that holds certs/ is mounted with a warning; a folder of its own without one', async (t) => {
  const clone = tempDir('clone')
  mkdirSync(join(clone, 'certs'))
  writeFileSync(join(clone, 'rules.json'), JSON.stringify({ allow: ['example.com'] }))
  const warned = await runCli(['sandbox', 'compose', '--rules', join(clone, 'rules.json')], NO_ENGINE)
  t.equal(warned.code, 0, warned.stderr)
  t.match(warned.stdout, `${clone}:`)
  t.match(warned.stderr, `WARNING: the proxy-gate container gets all of ${clone} (read-only), certs/ included (the local CA key and the admin token)`)
  const own = await runCli(['sandbox', 'compose', '--rules', rulesFile({ allow: ['example.com'] })], NO_ENGINE)
  t.equal(own.code, 0, own.stderr)
  t.notMatch(own.stderr, /WARNING/)
})
