// ESLint for the TypeScript in lib/ and test/: typescript-eslint's strict type-checked rules.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

// The layers of lib/, lowest first: a folder may import only the folders it lists (and itself).
const LAYERS = {
  core: [],
  policy: ['core'],
  socks: ['core', 'policy'],
  rules: ['core', 'policy'],
  certs: ['core', 'policy'],
  wiring: ['core', 'policy'],
  net: ['core', 'policy', 'rules'],
  dns: ['core', 'policy', 'rules'],
  // secrets' placeholders, values and substitution; the policy sees only their bindings
  secrets: ['core', 'policy', 'rules'],
  proxy: ['core', 'policy', 'rules', 'certs', 'net', 'wiring', 'dns', 'secrets', 'socks'],
  observe: ['core', 'policy', 'rules', 'wiring', 'proxy', 'dns'],
  cli: ['core', 'policy', 'rules', 'certs', 'wiring', 'net', 'dns', 'proxy', 'observe', 'secrets'],
}
// The policy decides; it never touches files, DNS or sockets.
const IO_MODULES = ['net', 'dns', 'http', 'https', 'fs', 'tls', 'dgram', 'child_process'].flatMap((m) => [m, `node:${m}`, `${m}/*`, `node:${m}/*`])

function layerRules(folder, allowed) {
  const above = Object.keys(LAYERS).filter((f) => f !== folder && !allowed.includes(f))
  const patterns = [{ group: [...above.map((f) => `../${f}/*`), '../cli.js'], message: `lib/${folder}/ may import only ${allowed.join(', ') || 'nothing else of lib/'}: see the layers in eslint.config.mjs` }]
  if (folder === 'policy') patterns.push({ group: IO_MODULES, message: 'lib/policy/ is pure: files, DNS and sockets live outside it and call in' })
  return { files: [`lib/${folder}/**/*.ts`], rules: { 'no-restricted-imports': ['error', { patterns }] } }
}

export default tseslint.config(
  { ignores: ['dist/', 'coverage/', '.tap/', 'node_modules/', 'test/bench/', '.ci/'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // numbers in messages and log text are what they look like
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // `return refuse(...)` ends a void (or Promise<void>) function early on purpose: the project's idiom
      '@typescript-eslint/no-confusing-void-expression': 'off',
      // `const { secret: _secret, ...rest } = x` drops a field on purpose
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true, varsIgnorePattern: '^_', argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // tap runs the subtests it is given and reports their failures: its promises are not dropped
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafePromises: [{ from: 'package', package: '@tapjs/core', name: 'PromiseWithSubtest' }] }],
      // tap subtests are async functions by convention, with or without an await inside
      '@typescript-eslint/require-await': 'off',
    },
  },
  ...Object.entries(LAYERS).map(([folder, allowed]) => layerRules(folder, allowed)),
  { files: ['eslint.config.mjs'], extends: [tseslint.configs.disableTypeChecked] },
)
