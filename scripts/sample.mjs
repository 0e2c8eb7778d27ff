#!/usr/bin/env node
// The README's first command ends here: build the built-in sample image into an OCI layout,
// convert it to eStargz and zstd:chunked with the real CLI, verify the results, and say what happened.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = process.env.ESGZ_SAMPLE_DIR ?? join(tmpdir(), 'esgz-sample');
const esgz = join(root, 'bin', 'run.js');

const { openSink } = await import(join(root, 'dist/image/transports/index.js'));
const { writeSampleImage } = await import(join(root, 'dist/image/sample.js'));

rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const source = `oci:${join(work, 'layout')}:sample`;
const sink = await openSink(source, {});
const written = await writeSampleImage(sink);
console.log(`sample image  ${source}  ${written.digest}`);

function step(title, args) {
  console.log(`\n$ esgz ${args.join(' ')}`);
  const result = spawnSync(process.execPath, [esgz, ...args], { stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`sample: "${title}" failed (exit ${result.status})`);
    process.exit(result.status ?? 1);
  }
}

step('convert to eStargz', ['image', 'convert', '--estargz', '--oci', source, `oci:${join(work, 'layout')}:sample-esgz`]);
step('verify eStargz', ['image', 'verify', `oci:${join(work, 'layout')}:sample-esgz`]);
step('convert to zstd:chunked', ['image', 'convert', '--zstdchunked', '--oci', source, `oci:${join(work, 'layout')}:sample-zstdchunked`]);
step('verify zstd:chunked', ['image', 'verify', `oci:${join(work, 'layout')}:sample-zstdchunked`]);
step('optimize (run the workload under runc, trace it, prioritize what it read)', ['image', 'optimize', '--oci', '--period', '5', source, `oci:${join(work, 'layout')}:sample-optimized`]);
step('verify the optimized image', ['image', 'verify', `oci:${join(work, 'layout')}:sample-optimized`]);
console.log(`\nDone. The OCI layout with all four images is in ${join(work, 'layout')}.`);
