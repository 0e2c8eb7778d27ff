// Lint for src/ and test/ (run by `npm run lint`, part of `npm test`). Besides typescript-eslint's
// recommended rules it enforces the module layering of README.md's layout table: which folder of
// src/ may import which, as stargz-snapshotter does with depguard.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * What each folder of src/ may import besides itself and the root files (errors.ts, tmp.ts),
 * lowest layer first. `oci/` (digests, descriptors, media types, platforms) and `host/` import
 * nothing of esgz's; `estargz/` is the format library and knows only bytes and OCI constants;
 * `convert/` turns images' layers into eStargz / zstd:chunked and checks them; `rootfs/` unpacks
 * layers and stacks overlays for both optimize and the snapshotter.
 */
const ALLOWED = {
  oci: [],
  host: [],
  estargz: ['oci'],
  registry: ['oci', 'host'],
  store: ['oci', 'host'],
  image: ['oci', 'host', 'registry', 'store'],
  rootfs: ['oci', 'host', 'estargz'],
  runtime: ['oci', 'host', 'rootfs'],
  convert: ['oci', 'host', 'estargz', 'image', 'registry'],
  optimizer: ['oci', 'host', 'estargz', 'image', 'registry', 'rootfs', 'runtime', 'convert'],
  snapshotter: ['oci', 'host', 'estargz', 'image', 'registry', 'rootfs', 'runtime', 'convert', 'store'],
  cli: ['oci', 'host', 'estargz', 'image', 'registry', 'rootfs', 'runtime', 'convert', 'optimizer', 'snapshotter'],
  commands: ['oci', 'host', 'estargz', 'image', 'registry', 'rootfs', 'runtime', 'convert', 'optimizer', 'snapshotter', 'cli'],
};
const FOLDERS = Object.keys(ALLOWED);

function restrict(forbidden, from) {
  return {
    'no-restricted-imports': [
      'error',
      {
        patterns: forbidden.map((folder) => ({
          regex: `^(\\.\\./)+(src/)?${folder}(/|\\.js$)`,
          message: `${from} may not import ${folder}/ (see ALLOWED in eslint.config.js and the layout table in README.md)`,
        })),
      },
    ],
  };
}

const layering = Object.entries(ALLOWED).map(([folder, allowed]) => ({
  files: [`src/${folder}/**/*.ts`],
  rules: restrict(FOLDERS.filter((other) => other !== folder && !allowed.includes(other)), `src/${folder}/`),
}));
for (const [folder, allowed] of Object.entries(ALLOWED)) {
  if (!allowed.every((other) => FOLDERS.includes(other))) throw new Error(`eslint.config.js: unknown folder in ALLOWED.${folder}`);
}

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
);
