#!/usr/bin/env node
// Builds the project's small native pieces at install time: every native/<name>/ with a
// binding.gyp (N-API addon, via node-gyp) or a Makefile (helper program, via make).
// A failed build is a warning, not an install failure: each piece has a fallback that esgz
// reports (`esgz version --json`), e.g. zlib instead of libdeflate.
import { existsSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const require = createRequire(import.meta.url);
let failures = 0;

for (const name of existsSync(nativeDir) ? readdirSync(nativeDir).sort() : []) {
  const dir = join(nativeDir, name);
  let result;
  if (existsSync(join(dir, 'binding.gyp'))) {
    let gyp;
    try {
      gyp = require.resolve('node-gyp/bin/node-gyp.js');
    } catch {
      console.warn(`esgz: skipping native/${name}: node-gyp is not installed`);
      failures++;
      continue;
    }
    // Offline machines: use the headers Debian's nodejs ships instead of downloading them.
    const nodedir = !process.env.npm_config_nodedir && existsSync('/usr/include/node/common.gypi') ? ['--nodedir=/usr'] : [];
    result = spawnSync(process.execPath, [gyp, 'rebuild', '--silent', ...nodedir], { cwd: dir, stdio: 'inherit' });
  } else if (existsSync(join(dir, 'Makefile'))) {
    result = spawnSync('make', ['-s'], { cwd: dir, stdio: 'inherit' });
  } else {
    continue;
  }
  if (result.status !== 0) {
    failures++;
    console.warn(`esgz: native/${name} did not build (exit ${result.status}); esgz will use its fallback`);
  }
}
process.exitCode = 0; // failures are warnings, see above
void failures;
