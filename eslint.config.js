// Lint for src/ and test/ (run by `npm run lint`, part of `npm test`). Besides typescript-eslint's
// recommended rules it enforces the module layering of DESIGN.md: which folder of src/ may import
// which, as stargz-snapshotter does with depguard. A folder's row lists what it must NOT import.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const FOLDERS = ['cli', 'commands', 'estargz', 'host', 'image', 'oci', 'optimizer', 'registry', 'runtime', 'snapshotter'];

/** What each folder of src/ may not import (everything else is allowed). */
const FORBIDDEN = {
  host: ['cli', 'commands', 'estargz', 'image', 'oci', 'optimizer', 'registry', 'runtime', 'snapshotter'],
  oci: ['cli', 'commands', 'estargz', 'host', 'image', 'optimizer', 'registry', 'runtime', 'snapshotter'],
  estargz: ['cli', 'commands', 'image', 'optimizer', 'registry', 'runtime', 'snapshotter'],
  registry: ['cli', 'commands', 'estargz', 'image', 'optimizer', 'runtime', 'snapshotter'],
  runtime: ['cli', 'commands', 'estargz', 'image', 'optimizer', 'registry', 'snapshotter'],
  image: ['cli', 'commands', 'estargz', 'optimizer', 'runtime', 'snapshotter'],
  optimizer: ['cli', 'commands', 'snapshotter'],
  snapshotter: ['cli', 'commands', 'optimizer'],
  cli: ['commands'],
};

/**
 * Imports that break the layering today, each to be removed by a slice of issue #13 (the format
 * library knowing only bytes; a base module of OCI types; rootfs shared by optimize and run).
 * A file listed here may import the named folders; nothing new may be added to this list.
 */
const KNOWN_VIOLATIONS = {
  'src/estargz/gzip-codec.ts': ['image'],
  'src/estargz/reader.ts': ['image'],
  'src/estargz/transform.ts': ['image'],
  'src/estargz/verify.ts': ['image'],
  'src/estargz/zstdchunked/codec.ts': ['image'],
  'src/registry/client.ts': ['image'],
  'src/registry/reference.ts': ['image'],
  'src/runtime/spec.ts': ['image'],
  'src/snapshotter/manage.ts': ['optimizer'],
  'src/snapshotter/rpull.ts': ['optimizer'],
  'src/snapshotter/run.ts': ['optimizer'],
};

function restrict(forbidden, from) {
  return {
    'no-restricted-imports': [
      'error',
      {
        patterns: forbidden.map((folder) => ({
          regex: `^(\\.\\./)+(src/)?${folder}(/|\\.js$)`,
          message: `${from} may not import ${folder}/ (see the layering table in DESIGN.md and eslint.config.js)`,
        })),
      },
    ],
  };
}

const layering = Object.entries(FORBIDDEN).flatMap(([folder, forbidden]) => [
  { files: [`src/${folder}/**/*.ts`], rules: restrict(forbidden, `src/${folder}/`) },
]);
const exceptions = Object.entries(KNOWN_VIOLATIONS).map(([file, allowed]) => {
  const folder = file.split('/')[1];
  return { files: [file], rules: restrict(FORBIDDEN[folder].filter((f) => !allowed.includes(f)), `src/${folder}/`) };
});
if (!Object.keys(FORBIDDEN).every((f) => FOLDERS.includes(f))) throw new Error('eslint.config.js: unknown folder in FORBIDDEN');

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'native/**', 'bench/results/**', 'bench/.cache/**', 'test/.cache/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { process: 'readonly', Buffer: 'readonly', console: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextDecoder: 'readonly', TextEncoder: 'readonly', structuredClone: 'readonly', queueMicrotask: 'readonly', performance: 'readonly', fetch: 'readonly' } },
    rules: {
      // esgz parses binary formats: control characters in patterns are intended.
      'no-control-regex': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  ...layering,
  ...exceptions,
);
