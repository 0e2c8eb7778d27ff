#!/usr/bin/env node
// `node bench/copy-memory.mjs [--size-mb 200] [--keep]` (after `npm run build`)
//
// Peak memory of `esgz image copy` on an image with one big layer: blobs must stream, so peak
// RSS should stay far below the layer size (target < 150 MB for a 200 MB layer). Generates the
// image (one file of incompressible bytes, gzip level 1) into an OCI layout, then copies it with
// the built CLI under `/usr/bin/time -v`: oci → oci, oci → docker-archive, and oci → a local
// docker-registry (Debian's distribution binary) → oci when that binary is installed.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

const args = process.argv.slice(2);
const sizeMb = Number(args[args.indexOf('--size-mb') + 1] ?? 200) || 200;
const keep = args.includes('--keep');
const TARGET_MB = 150;
const repoRoot = new URL('../', import.meta.url).pathname;
const cli = join(repoRoot, 'bin/run.js');
if (!existsSync(join(repoRoot, 'dist/commands/image/copy.js'))) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(1);
}
const work = mkdtempSync(join(tmpdir(), 'esgz-copy-memory-'));

function tarHeader(name, size) {
  const buf = Buffer.alloc(512);
  const octal = (offset, width, value) => buf.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
  buf.write(name, 0, 100);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 1_600_000_000);
  buf.write('0', 156);
  buf.write('ustar\x0000', 257, 8, 'latin1');
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of buf) sum += b;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return buf;
}

async function* layerTar(size) {
  yield tarHeader('big.bin', size);
  // Incompressible content: sha256 in counter mode, 1 MiB at a time.
  const chunk = 1 << 20;
  for (let done = 0, counter = 0; done < size; done += chunk) {
    const n = Math.min(chunk, size - done);
    const out = Buffer.alloc(n);
    for (let off = 0; off < n; off += 32) createHash('sha256').update(`big:${counter++}`).digest().copy(out, off);
    yield out;
  }
  const pad = size % 512;
  if (pad) yield Buffer.alloc(512 - pad);
  yield Buffer.alloc(1024);
}

function hashing(hash, counter) {
  return new Transform({
    transform(chunk, _e, cb) {
      hash.update(chunk);
      if (counter) counter.bytes += chunk.length;
      cb(null, chunk);
    },
  });
}

async function buildImage(dir) {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const diff = createHash('sha256');
  const blob = createHash('sha256');
  const counter = { bytes: 0 };
  const temp = join(blobs, '.layer');
  await pipeline(Readable.from(layerTar(sizeMb * 1024 * 1024)), hashing(diff), createGzip({ level: 1 }), hashing(blob, counter), createWriteStream(temp));
  const layerDigest = `sha256:${blob.digest('hex')}`;
  renameSync(temp, join(blobs, layerDigest.slice(7)));
  const put = (obj) => {
    const bytes = Buffer.from(JSON.stringify(obj));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    writeFileSync(join(blobs, digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  const config = put({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${diff.digest('hex')}`] } });
  const manifest = put({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: counter.bytes }],
  });
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'big' } }] }),
  );
  return { layerSize: counter.bytes, digest: manifest.digest };
}

function measuredCopy(label, src, dst, extra = []) {
  const started = Date.now();
  const result = spawnSync('/usr/bin/time', ['-v', process.execPath, cli, 'image', 'copy', '--json', ...extra, src, dst], { encoding: 'utf8' });
  const seconds = (Date.now() - started) / 1000;
  if (result.status !== 0) {
    console.error(`${label}: esgz failed (exit ${result.status}):\n${result.stderr}`);
    process.exitCode = 1;
    return undefined;
  }
  const kb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr)?.[1]);
  const digest = JSON.parse(result.stdout).digest;
  return { label, peakMb: kb / 1024, seconds, digest };
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startRegistry() {
  if (!existsSync('/usr/bin/docker-registry')) return undefined;
  const address = `127.0.0.1:${await freePort()}`;
  const config = join(work, 'registry.yml');
  writeFileSync(config, JSON.stringify({ version: 0.1, log: { level: 'error', accesslog: { disabled: true } }, storage: { filesystem: { rootdirectory: join(work, 'registry') } }, http: { addr: address } }));
  const child = spawn('/usr/bin/docker-registry', ['serve', config], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`http://${address}/v2/`);
      if (res.ok) return { address, stop: () => child.kill('SIGTERM') };
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  return undefined;
}

try {
  console.log(`building a ${sizeMb} MiB single-layer image in ${work} …`);
  const image = await buildImage(join(work, 'src'));
  console.log(`layer blob: ${(image.layerSize / 1024 / 1024).toFixed(1)} MiB, manifest ${image.digest}`);
  const results = [];
  results.push(measuredCopy('oci → oci', `oci:${join(work, 'src')}:big`, `oci:${join(work, 'dst')}:big`));
  rmSync(join(work, 'dst'), { recursive: true, force: true });
  results.push(measuredCopy('oci → docker-archive', `oci:${join(work, 'src')}:big`, `docker-archive:${join(work, 'big.tar')}:big:latest`));
  rmSync(join(work, 'big.tar'), { force: true });
  const registry = await startRegistry();
  if (registry) {
    try {
      const ref = `${registry.address}/bench/big:latest`;
      results.push(measuredCopy('oci → registry', `oci:${join(work, 'src')}:big`, ref, ['--plain-http']));
      results.push(measuredCopy('registry → oci', ref, `oci:${join(work, 'pulled')}:big`, ['--plain-http']));
    } finally {
      registry.stop();
    }
  } else {
    console.log('(docker-registry not installed: registry copies skipped)');
  }
  console.log('');
  console.log('copy                   peak RSS    time     digest kept');
  for (const r of results.filter(Boolean)) {
    const ok = r.peakMb < TARGET_MB ? 'ok' : `OVER ${TARGET_MB} MB`;
    console.log(`${r.label.padEnd(22)} ${r.peakMb.toFixed(1).padStart(6)} MB  ${r.seconds.toFixed(1).padStart(5)} s  ${r.digest === image.digest ? 'yes' : 'NO'}   ${ok}`);
    if (r.peakMb >= TARGET_MB || r.digest !== image.digest) process.exitCode = 1;
  }
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true });
}
