#!/usr/bin/env node
// Peak memory as the layer grows: generated layers of 100 MiB, 200 MiB and 1 GiB (many small and
// medium files plus a few big ones, written streaming to disk, never held in memory), gzip'ed,
// put in an OCI layout, then `esgz image convert --estargz` / `--zstdchunked` and `esgz image copy`
// (layout -> registry) under /usr/bin/time. Targets: convert flat and under 256 MiB (issue 3),
// copy of the 200 MiB layer under 150 MB (issue 2).
//
//   node bench/memory.mjs [--sizes 100,200,1024]
// Generated layers are cached in bench/.cache/memory-layers (delete the folder to regenerate).
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { MB, MiB, benchCache, esgzBin, esgzHas, esgzHasFlag, fmtMiB, fmtSeconds, log, measure, mustRun } from './lib/common.mjs';
import { startBenchRegistry } from './lib/registry.mjs';

const RSS_LIMIT_CONVERT = 256 * MiB;
const RSS_LIMIT_COPY = 150 * MB;

/** Deterministic fast filler: AES-128-CTR keystream (incompressible) from a fixed key. */
function keystream(seed) {
  const key = createHash('sha256').update(`esgz-bench:${seed}`).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
}

const ZERO = Buffer.alloc(1 << 20);
const TEXT = Buffer.from(
  Array.from({ length: 20000 }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog ${i * 7919 % 10007}\n`).join(''),
);

function octal(value, width) {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function tarHeader(name, size, type = '0', mode = 0o644) {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(size, 12), 124);
  h.write(octal(1_704_067_200, 12), 136);
  h.fill(' ', 148, 156);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(octal(sum, 7) + ' ', 148);
  return h;
}

/**
 * Writes a tar of about `totalBytes`: 75 % in files of 512 B-1 MiB (half text, half random),
 * 25 % in four big random files, so chunking, many members and big payloads all show up.
 */
async function writeGeneratedTar(path, totalBytes) {
  const out = createWriteStream(path);
  const write = async (buf) => {
    if (!out.write(buf)) await once(out, 'drain');
  };
  const random = keystream(path);
  let written = 0;
  let fileNo = 0;
  const file = async (name, size, compressible) => {
    await write(tarHeader(name, size));
    let left = size;
    while (left > 0) {
      const n = Math.min(left, ZERO.length);
      if (compressible) {
        // TEXT (~1.5 MB) is longer than any write (<= 1 MiB); start each file somewhere else in it.
        const offset = (fileNo * 131) % (TEXT.length - n + 1);
        await write(TEXT.subarray(offset, offset + n));
      } else {
        await write(random.update(ZERO.subarray(0, n)));
      }
      left -= n;
    }
    const pad = (512 - (size % 512)) % 512;
    if (pad) await write(Buffer.alloc(pad));
    written += 512 + size + pad;
    fileNo++;
  };
  for (const dir of ['data/', 'data/small/', 'data/big/']) await write(tarHeader(dir, 0, '5', 0o755));
  const smallBudget = totalBytes * 0.75;
  let dirNo = 0;
  while (written < smallBudget) {
    if (fileNo % 500 === 0) {
      dirNo++;
      await write(tarHeader(`data/small/d${dirNo}/`, 0, '5', 0o755));
    }
    // Mostly small files (512 B-32 KiB, like a rootfs), every fiftieth 64 KiB-1 MiB.
    const spread = (fileNo * 2654435761) % 1_000_003;
    const size = fileNo % 50 === 0 ? 64 * 1024 + (spread % (960 * 1024)) : 512 + (spread % (32 * 1024));
    await file(`data/small/d${dirNo}/f${fileNo}`, size, fileNo % 2 === 0);
  }
  const bigSize = Math.floor((totalBytes - written) / 4);
  for (let i = 0; i < 4; i++) await file(`data/big/blob${i}.bin`, Math.max(bigSize, 0), false);
  await write(Buffer.alloc(1024));
  out.end();
  await once(out, 'finish');
}

/** Cached OCI layout with one gzip layer of about `sizeMiB`; returns the `oci:` reference. */
async function generatedImage(sizeMiB) {
  const dir = join(benchCache, 'memory-layers', `layer-v3-${sizeMiB}MiB`);
  const layout = join(dir, 'oci');
  if (existsSync(join(dir, 'done'))) return { ref: `oci:${layout}:gen`, layout };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  log(`generating a ${sizeMiB} MiB layer (cached for later runs)`);
  const tar = join(dir, 'layer.tar');
  await writeGeneratedTar(tar, sizeMiB * MiB);
  const diffId = (await mustRun('sha256sum', [tar])).split(' ')[0];
  await mustRun('sh', ['-c', 'gzip -1 -n -c "$0" > "$1"', tar, `${tar}.gz`]);
  const blobHex = (await mustRun('sha256sum', [`${tar}.gz`])).split(' ')[0];
  const blobSize = Number((await mustRun('stat', ['-c', '%s', `${tar}.gz`])).trim());
  renameSync(`${tar}.gz`, join(layout, 'blobs', 'sha256', blobHex));
  rmSync(tar);
  const putJson = (value) => {
    const bytes = Buffer.from(JSON.stringify(value));
    const hex = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(layout, 'blobs', 'sha256', hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const config = putJson({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
  });
  const manifest = putJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${blobHex}`, size: blobSize }],
  });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'gen' } }],
    }),
  );
  writeFileSync(join(dir, 'done'), '');
  return { ref: `oci:${layout}:gen`, layout };
}

/**
 * Runs the memory benchmark; returns table rows and target checks for bench/run.mjs.
 * Sizes 100 MiB and 1 GiB show whether memory is flat; 200 MiB is issue 2's copy size.
 */
export async function runMemoryBench({ sizesMiB = [100, 1024], work = join(benchCache, 'work', 'memory') } = {}) {
  const sizes = [...new Set([...sizesMiB, 200])].sort((a, b) => a - b);
  mkdirSync(work, { recursive: true });
  const rows = [];
  const samples = {};
  const haveConvert = await esgzHas(['image', 'convert']);
  const haveEstargz = haveConvert && (await esgzHasFlag(['image', 'convert'], '--estargz'));
  const haveZstd = haveConvert && (await esgzHasFlag(['image', 'convert'], '--zstdchunked'));
  const haveCopy = await esgzHas(['image', 'copy']);
  const registry = haveCopy ? await startBenchRegistry() : undefined;
  try {
    for (const size of sizes) {
      const image = await generatedImage(size);
      const ops = [
        ['convert --estargz', haveEstargz, ['image', 'convert', '--estargz', '--oci'], 'oci'],
        ['convert --zstdchunked', haveZstd, ['image', 'convert', '--zstdchunked', '--oci'], 'oci'],
        ['copy oci -> registry', haveCopy, ['image', 'copy', '--plain-http'], 'registry'],
      ];
      for (const [name, available, args, sink] of ops) {
        if (!available) {
          rows.push([`esgz ${name}`, String(size), 'n/a (not built)', '']);
          continue;
        }
        const out = join(work, 'out');
        rmSync(out, { recursive: true, force: true });
        const destination = sink === 'oci' ? `oci:${out}:out` : `${registry.address}/bench/memory:${size}`;
        log(`memory: esgz ${args.join(' ')} (${size} MiB layer)`);
        const r = await measure(process.execPath, [esgzBin, ...args, image.ref, destination]);
        samples[`${name}@${size}`] = r;
        rows.push([`esgz ${name}`, String(size), r.ok ? fmtSeconds(r.seconds) : `failed: ${r.error}`.slice(0, 60), r.ok ? fmtMiB(r.rssBytes) : '']);
      }
    }
  } finally {
    await registry?.stop();
    rmSync(join(work, 'out'), { recursive: true, force: true });
  }

  const targets = [];
  const rssCheck = (text, keys, limit) => {
    const got = keys.map((k) => samples[k]);
    if (got.some((s) => !s)) return targets.push({ status: 'n/a ', text, detail: 'esgz command not built yet' });
    if (got.some((s) => !s.ok)) return targets.push({ status: 'NOT ', text, detail: `a run failed: ${got.find((s) => !s.ok).error}` });
    const worst = Math.max(...got.map((s) => s.rssBytes));
    targets.push({ status: worst < limit ? 'met ' : 'NOT ', text, detail: got.map((s, i) => `${keys[i].split('@')[1]} MiB: ${fmtMiB(s.rssBytes)} MiB`).join(', ') });
  };
  const largest = sizes[sizes.length - 1];
  rssCheck('issue 3: convert --estargz peak RSS flat and < 256 MiB', sizes.map((s) => `convert --estargz@${s}`), RSS_LIMIT_CONVERT);
  rssCheck('issue 4: convert --zstdchunked peak RSS < 256 MiB', [`convert --zstdchunked@${largest}`], RSS_LIMIT_CONVERT);
  rssCheck('issue 2: copy of a 200 MiB layer peak RSS < 150 MB', ['copy oci -> registry@200'], RSS_LIMIT_COPY);
  return { rows, targets, samples };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--sizes');
  const sizesMiB = i > 0 ? process.argv[i + 1].split(',').map(Number) : [100, 1024];
  const { formatTable } = await import('./lib/common.mjs');
  const result = await runMemoryBench({ sizesMiB });
  console.log(formatTable(['operation', 'layer MiB', 'seconds', 'peak RSS MiB'], result.rows));
  for (const t of result.targets) console.log(`  [${t.status}] ${t.text}${t.detail ? `: ${t.detail}` : ''}`);
}
