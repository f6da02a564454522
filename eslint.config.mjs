// ESLint for the TypeScript in lib/ and test/: typescript-eslint's strict type-checked rules.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

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
  { files: ['eslint.config.mjs'], extends: [tseslint.configs.disableTypeChecked] },
)
