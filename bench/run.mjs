#!/usr/bin/env node
// `npm run bench [-- --with-reference] [--runs N] [--no-memory] [--no-lazy-pull]`
//
// Measures esgz against the reference ctr-remote 0.12 (in a private containerd) and against the
// physical floor (gzip/libdeflate/zstd on the very same tar bytes), all in one run on one machine,
// and prints one table of ratios. Absolute times on shared machines are noisy; ratios from the
// same run are what to compare. Results go to bench/results/bench-<time>.json.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MB,
  benchCache,
  esgzBin,
  esgzHas,
  esgzHasFlag,
  fileSize,
  fmtMB,
  fmtMiB,
  fmtSeconds,
  fmtTiming,
  formatTable,
  importShared,
  log,
  measure,
  measureParallel,
  mustRun,
  ociLayoutImageSize,
  repeat,
  repoRoot,
  resultsDir,
  runProcess,
  settle,
  summarize,
  median,
} from './lib/common.mjs';
import { startBenchRegistry } from './lib/registry.mjs';

// Debian's reference binary, by absolute path: scripts/setup.sh puts esgz's own `ctr-remote`
// alias in /usr/local/bin, which comes first on PATH.
const REFERENCE_CTR_REMOTE = '/usr/bin/ctr-remote';

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const option = (name, fallback) => {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] ? argv[i + 1] : fallback;
};
if (flag('--help') || flag('-h')) {
  console.log(`usage: npm run bench [-- --with-reference] [--runs N] [--no-memory] [--no-lazy-pull] [--node PATH|lts]

  --with-reference  also run ctr-remote 0.12 (Debian containerd + stargz-snapshotter; installed with apt if missing)
  --runs N          repetitions per measurement (default 3; median and min-max reported)
  --no-memory       skip the 100 MiB / 1 GiB peak-RSS benchmark (bench/memory.mjs)
  --no-lazy-pull    skip the rpull/run benchmark (bench/lazy-pull.mjs)
  --lazy            also the lazy start-up rows through a link emulator (bench/lazy.mjs; printed after the table)
  --no-floor        skip the gzip/libdeflate/zstd floor measurements
  --no-parallel-unpack  skip the full-pull unpack benchmark (bench/parallel-unpack.mjs)
  --no-huge         skip the huge-layer benchmark (bench/huge-layers.mjs; first run generates the layers)
  --ops A,B         only these operations (estargz-l9, estargz-l6, zstdchunked, optimize, estargz-python, busybox-estargz)
  --node PATH|lts   run the bench and every esgz it starts under this node binary; lts: the Node LTS
                    the tests also run under (scripts/node-lts.sh, installed from the npm registry when absent)`);
  process.exit(0);
}
const otherNode = option('--node', undefined);
if (otherNode) await rerunUnder(otherNode);
const withReference = flag('--with-reference');
// containerd's own client, by absolute path like the reference ctr-remote above.
const REFERENCE_CTR = '/usr/bin/ctr';
const runs = Math.max(1, Number(option('--runs', '3')));
const cores = cpus().length;
const startedAt = new Date();

const work = join(benchCache, 'work');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
mkdirSync(resultsDir, { recursive: true });

if (process.getuid?.() !== 0) {
  console.error('bench: run as root (debootstrap for the images, runc for optimize, containerd for the reference)');
  process.exit(1);
}

const cleanups = [];
let interrupted = false;
process.on('SIGINT', () => {
  interrupted = true;
  log('interrupted; cleaning up');
  void cleanupAll().then(() => process.exit(130));
});
async function cleanupAll() {
  while (cleanups.length) await cleanups.pop()().catch((err) => log(`cleanup: ${err.message}`));
}

const results = {
  startedAt: startedAt.toISOString(),
  machine: { cores, node: process.version, nodePath: process.execPath },
  runs,
  withReference,
  ops: {},
  floor: {},
  images: {},
};
log(`node ${process.version} (${process.execPath})`);

/**
 * `--node`: the whole bench again in a child under that node, so every esgz it starts (always
 * `process.execPath`) and its own bookkeeping run under it; this process only waits. Ctrl-C
 * reaches the child too (same process group), which cleans up before exiting.
 */
async function rerunUnder(node) {
  const path = node === 'lts' ? execFileSync('bash', [join(repoRoot, 'scripts/node-lts.sh')], { encoding: 'utf8' }).trim() : node;
  const rest = argv.filter((arg, i) => arg !== '--node' && argv[i - 1] !== '--node');
  const child = spawn(path, [fileURLToPath(import.meta.url), ...rest], { stdio: 'inherit' });
  process.on('SIGINT', () => {});
  const code = await new Promise((resolve) => {
    child.on('error', (err) => {
      console.error(`bench: --node ${path}: ${err.message}`);
      resolve(1);
    });
    child.on('exit', (status, signal) => resolve(status ?? 128 + (constants.signals[signal] ?? 0)));
  });
  process.exit(code);
}

async function main() {
  // 1. images (cached under /var/cache/esgz-fixtures) and a local registry holding them.
  const { debianImage, busyboxImage } = await importShared('test/fixtures/debian.ts');
  log('building or reusing the benchmark images (first time: debootstrap, ~1-2 min)');
  const debian = await debianImage({ log });
  const busybox = await busyboxImage({ log });
  const baseTar = debian.base.layers[0];
  results.images = {
    debianBase: { ref: debian.base.ref, tarBytes: baseTar.tarSize, gzipBytes: baseTar.blobSize },
    debianPython: { ref: debian.python.ref, tarBytes: debian.python.layers.reduce((s, l) => s + l.tarSize, 0) },
    busybox: { ref: busybox.ref, tarBytes: busybox.layers[0].tarSize },
  };

  const registry = await startBenchRegistry();
  cleanups.push(() => registry.stop());
  const remote = {
    base: `${registry.address}/bench/debian:bookworm`,
    python: `${registry.address}/bench/debian:bookworm-python`,
    busybox: `${registry.address}/bench/busybox:latest`,
  };
  log(`pushing the gzip images to ${registry.address} with skopeo`);
  for (const [fixture, ref] of [[debian.base, remote.base], [debian.python, remote.python], [busybox, remote.busybox]]) {
    await mustRun('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', fixture.ref, `docker://${ref}`]);
  }

  // 2. reference: private containerd, images pulled once (untimed) so convert/optimize run locally.
  let containerd;
  if (withReference) {
    containerd = await startReference();
    cleanups.push(() => containerd.stop());
    for (const ref of Object.values(remote)) {
      log(`ctr-remote image pull ${ref}`);
      const pulled = await measure(REFERENCE_CTR_REMOTE, ['-a', containerd.address, '-n', containerd.namespace, 'image', 'pull', '--plain-http', ref]);
      if (!pulled.ok) throw new Error(`ctr-remote pull ${ref}: ${pulled.error}`);
      if (ref === remote.base) results.referencePullSeconds = pulled.seconds;
    }
  }

  // 3a. the physical floor on the same bytes as the convert benchmarks: every layer's tar of the
  // image they convert (the Debian base image).
  if (!flag('--no-floor')) await measureFloor(debian.base.layers);
  if (interrupted) return;

  // 3b. esgz and ctr-remote, operation by operation (each tool's runs back to back).
  const python = ['["/usr/bin/python3","-c"]', '["print(1)"]'];
  // Both tools' default convert (level 9), the same words for each.
  const defaultEstargz = { esgz: ['image', 'convert', '--estargz', '--oci'], ctr: ['image', 'convert', '--estargz', '--oci'], needsFlag: '--estargz' };
  const ops = [
    {
      key: 'estargz-l9',
      title: 'convert --estargz, level 9 (default)',
      image: 'base',
      esgz: ['image', 'convert', '--estargz', '--oci', '--estargz-compression-level', '9'],
      ctr: ['image', 'convert', '--estargz', '--oci', '--estargz-compression-level', '9'],
      needsFlag: '--estargz',
      floor: 'libdeflate-gzip -9, all cores',
    },
    {
      key: 'estargz-l6',
      title: 'convert --estargz, level 6',
      image: 'base',
      esgz: ['image', 'convert', '--estargz', '--oci', '--estargz-compression-level', '6'],
      ctr: ['image', 'convert', '--estargz', '--oci', '--estargz-compression-level', '6'],
      needsFlag: '--estargz',
      floor: 'libdeflate-gzip -6, all cores',
    },
    {
      key: 'zstdchunked',
      title: 'convert --zstdchunked',
      image: 'base',
      esgz: ['image', 'convert', '--zstdchunked', '--oci'],
      ctr: ['image', 'convert', '--zstdchunked', '--oci'],
      needsFlag: '--zstdchunked',
      floor: 'zstd -3 -T0 + gunzip',
    },
    {
      key: 'optimize',
      title: 'optimize python3 -c print(1)',
      image: 'python',
      esgzCommand: ['image', 'optimize'],
      // --json: the report gives the workload's own run time (profile.durationMs).
      esgz: ['image', 'optimize', '--oci', '--json', '--entrypoint', python[0], '--args', python[1]],
      ctr: ['image', 'optimize', '--oci', '--entrypoint', python[0], '--args', python[1]],
    },
    { key: 'estargz-python', title: 'convert --estargz python image (optimize baseline)', image: 'python', ...defaultEstargz },
    { key: 'busybox-estargz', title: 'convert --estargz busybox (small image)', image: 'busybox', ...defaultEstargz },
  ];
  const localSource = { base: debian.base.ref, python: debian.python.ref, busybox: busybox.ref };
  const only = option('--ops', '').split(',').filter(Boolean);
  for (const op of ops) {
    if (interrupted) return;
    if (only.length && !only.includes(op.key)) continue;
    const entry = { title: op.title, image: op.image, floor: op.floor };
    results.ops[op.key] = entry;
    // Runs alternate esgz, ctr-remote, esgz, ... so load from other processes on a shared
    // machine hits both tools alike instead of whichever happened to run during a busy spell.
    const esgzRun = await esgzSampler(op, localSource[op.image]);
    const ctrRun = containerd ? ctrRemoteSampler(containerd, op, remote[op.image]) : undefined;
    log(`${op.title}: ${esgzRun ? `esgz ${op.esgz.join(' ')}` : 'esgz n/a (not built)'}${ctrRun ? ` | ctr-remote ${op.ctr.join(' ')}` : ''}  (${runs}x)`);
    const esgzSamples = [];
    const ctrSamples = [];
    for (let i = 0; i < runs && !interrupted; i++) {
      if (esgzRun && !esgzSamples.some((s) => !s.ok)) esgzSamples.push(await esgzRun());
      if (ctrRun && !ctrSamples.some((s) => !s.ok)) ctrSamples.push(await ctrRun());
    }
    entry.esgz = esgzRun ? summarize(esgzSamples) : { notBuilt: true };
    const workload = esgzSamples.map((s) => s.workloadSeconds).filter((v) => v !== undefined);
    if (workload.length) entry.esgz.workloadSeconds = median(workload.sort((a, b) => a - b));
    // Outputs are byte-reproducible, so runs under two Node versions must agree on this.
    if (entry.esgz.ok) entry.esgz.manifestDigest = esgzSamples.at(-1).manifestDigest;
    if (ctrRun) entry.ctrRemote = summarize(ctrSamples);
  }

  // 3c. memory and lazy pull (separate scripts, also runnable alone).
  if (!flag('--no-memory') && !interrupted) {
    const { runMemoryBench } = await import('./memory.mjs');
    results.memory = await runMemoryBench({ sizesMiB: [100, 1024], work: join(work, 'memory') });
  }
  if (!flag('--no-parallel-unpack') && !interrupted) {
    const { runParallelUnpackBench } = await import('./parallel-unpack.mjs');
    const blob = await estargzLayerBlob(localSource.base, join(work, 'parallel-unpack-src'));
    if (blob) results.parallelUnpack = await runParallelUnpackBench({ blob, work: join(work, 'parallel-unpack'), runs });
  }
  if (!flag('--no-huge') && !interrupted) {
    const { runHugeLayerBench } = await import('./huge-layers.mjs');
    results.huge = await runHugeLayerBench({ work: join(work, 'huge'), registry });
  }
  if (!flag('--no-lazy-pull') && !interrupted) {
    const { runLazyPullBench } = await import('./lazy-pull.mjs');
    results.lazyPull = await runLazyPullBench({ registry, image: debian.python, remoteRef: remote.python, work: join(work, 'lazy-pull'), runs });
  }
  let lazyReport = '';
  if (flag('--lazy') && !interrupted) {
    const { runLazyBench, formatLazyBench } = await import('./lazy.mjs');
    results.lazy = await runLazyBench({ registry, image: debian.python, remoteRef: remote.python, work: join(work, 'lazy'), runs });
    lazyReport = formatLazyBench(results.lazy);
  }

  // 4. the table, the targets, the JSON.
  const report = renderReport(results) + lazyReport;
  console.log(report);
  results.finishedAt = new Date().toISOString();
  results.elapsedSeconds = (Date.now() - startedAt.getTime()) / 1000;
  const file = join(resultsDir, `bench-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`\nresults: ${file}  (total ${fmtSeconds(results.elapsedSeconds)} s)`);
}

async function startReference() {
  const needed = ['/usr/bin/containerd', '/usr/bin/ctr', REFERENCE_CTR_REMOTE, '/usr/bin/containerd-shim-runc-v2'];
  if (!needed.every((p) => existsSync(p))) {
    log('installing the reference: apt-get install containerd stargz-snapshotter');
    const install = () => mustRun('apt-get', ['install', '-y', '-qq', 'containerd', 'stargz-snapshotter', 'runc'], { env: { DEBIAN_FRONTEND: 'noninteractive' } });
    // A fresh machine may never have fetched package lists.
    await install().catch(async () => {
      await mustRun('apt-get', ['update', '-qq']);
      await install();
    });
  }
  const { startContainerd } = await importShared('test/harness/containerd.ts');
  // ctr-remote --version prints containerd's ctr version; the package version is the real one.
  const pkg = await runProcess('dpkg-query', ['-W', '-f', '${Version}', 'stargz-snapshotter']);
  const ctd = await runProcess('dpkg-query', ['-W', '-f', '${Version}', 'containerd']);
  results.reference = { ctrRemote: `ctr-remote (stargz-snapshotter ${pkg.stdout.trim() || 'unknown'}, containerd ${ctd.stdout.trim() || 'unknown'})` };
  log('starting a private containerd for ctr-remote');
  return startContainerd({ namespace: 'esgz-bench' });
}

/** One timed esgz run of `op` into a fresh OCI layout, or undefined when the command has not landed. */
async function esgzSampler(op, source) {
  const words = op.esgzCommand ?? op.esgz.slice(0, 2);
  if (!(await esgzHas(words))) return undefined;
  if (op.needsFlag && !(await esgzHasFlag(words, op.needsFlag))) return undefined;
  const outLayout = join(work, `esgz-${op.key}`);
  return async () => {
    rmSync(outLayout, { recursive: true, force: true });
    await settle();
    const sample = await measure(process.execPath, [esgzBin, ...op.esgz, source, `oci:${outLayout}:out`]);
    if (sample.ok) {
      if (op.esgz.includes('--json')) sample.workloadSeconds = workloadSecondsOf(sample.stdout);
      sample.outputBytes = ociLayoutImageSize(outLayout, 'out');
      sample.manifestDigest = ociLayoutManifestDigest(outLayout, 'out');
    }
    return sample;
  };
}

/** The workload's own run time from `image optimize --json`. */
function workloadSecondsOf(stdout) {
  try {
    const ms = JSON.parse(stdout).profile?.durationMs;
    return typeof ms === 'number' ? ms / 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** The eStargz (level 9) blob of `source`'s first layer, converted by esgz (untimed), for the unpack bench. */
async function estargzLayerBlob(source, layout) {
  rmSync(layout, { recursive: true, force: true });
  const converted = await runProcess(process.execPath, [esgzBin, 'image', 'convert', '--estargz', '--oci', source, `oci:${layout}:out`]);
  if (converted.code !== 0) {
    log(`parallel unpack: esgz convert failed: ${converted.stderr.trim()}`);
    return undefined;
  }
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const manifest = JSON.parse(readFileSync(join(layout, 'blobs', ...index.manifests[0].digest.split(':')), 'utf8'));
  return join(layout, 'blobs', ...manifest.layers[0].digest.split(':'));
}

/** The digest of the manifest (or index) tagged `tag` in an OCI layout. */
function ociLayoutManifestDigest(layoutDir, tag) {
  const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8'));
  return index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)?.digest;
}

/** One timed ctr-remote run of `op` in the private containerd (previous output image removed first). */
function ctrRemoteSampler(containerd, op, source) {
  const target = `bench.local/${op.key}:out`;
  const base = ['-a', containerd.address, '-n', containerd.namespace];
  return async () => {
    await runProcess(REFERENCE_CTR, [...base, 'images', 'rm', '--sync', target]);
    await settle();
    const sample = await measure(REFERENCE_CTR_REMOTE, [...base, ...op.ctr, source, target], { timeoutMs: 600_000 });
    if (sample.ok) sample.outputBytes = await ctrImageSize(containerd, target);
    return sample;
  };
}

/** Sum of layer sizes of a containerd image, from its manifest in the content store. */
async function ctrImageSize(containerd, ref) {
  const base = ['-a', containerd.address, '-n', containerd.namespace];
  const list = await runProcess(REFERENCE_CTR, [...base, 'images', 'ls']);
  const line = list.stdout.split('\n').find((l) => l.startsWith(`${ref} `));
  const digest = line?.match(/sha256:[0-9a-f]{64}/)?.[0];
  if (!digest) return undefined;
  let manifest = JSON.parse((await runProcess(REFERENCE_CTR, [...base, 'content', 'get', digest])).stdout);
  if (manifest.manifests) manifest = JSON.parse((await runProcess(REFERENCE_CTR, [...base, 'content', 'get', manifest.manifests[0].digest])).stdout);
  return manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
}

/**
 * What the hardware can do on the same bytes: each compressor over the base layer tar on one
 * core, and on all cores (the tar split in `cores` parts compressed at once, or zstd -T0), plus
 * gunzip of the source blob (the part of a conversion no compressor choice removes).
 */
async function measureFloor(layers) {
  const dir = join(work, 'floor');
  mkdirSync(dir, { recursive: true });
  const layer = await floorInput(layers, dir);
  results.floorInput = { layers: layers.length, tarBytes: layer.tarSize, blobBytes: layer.blobSize };
  const parts = [];
  const partSize = Math.ceil(layer.tarSize / cores);
  for (let i = 0; i < cores; i++) {
    const part = join(dir, `part${i}.tar`);
    await mustRun('sh', ['-c', `dd if="$0" of="$1" bs=1M iflag=skip_bytes,count_bytes skip=${i * partSize} count=${partSize} status=none`, layer.tarPath, part]);
    parts.push(part);
  }
  const single = (name, shell) => ({ name, run: () => measure('sh', ['-c', shell, layer.tarPath, join(dir, 'out')]), out: join(dir, 'out') });
  const parallel = (name, perPart) => ({
    name,
    run: () => measureParallel(parts.map((p, i) => ['sh', ['-c', perPart, p, join(dir, `out${i}`)]])),
    outs: parts.map((_, i) => join(dir, `out${i}`)),
  });
  const floorOps = [
    single('gzip -9 (zlib), 1 core', 'gzip -9 -n -c "$0" > "$1"'),
    parallel(`gzip -9 (zlib), ${cores} cores`, 'gzip -9 -n -c "$0" > "$1"'),
    single('libdeflate-gzip -9, 1 core', 'libdeflate-gzip -9 -c "$0" > "$1"'),
    parallel(`libdeflate-gzip -9, all cores`, 'libdeflate-gzip -9 -c "$0" > "$1"'),
    single('libdeflate-gzip -6, 1 core', 'libdeflate-gzip -6 -c "$0" > "$1"'),
    parallel(`libdeflate-gzip -6, all cores`, 'libdeflate-gzip -6 -c "$0" > "$1"'),
    single('zstd -3, 1 core', 'zstd -3 -T1 -q -f "$0" -o "$1"'),
    single('zstd -3 -T0, all cores', 'zstd -3 -T0 -q -f "$0" -o "$1"'),
    { name: 'gunzip of the source blob', run: () => measure('sh', ['-c', 'gzip -dc "$@" > /dev/null', 'gzip', ...layer.blobPaths]) },
  ];
  for (const op of floorOps) {
    if (interrupted) return;
    log(`floor: ${op.name}  (${runs}x)`);
    const r = await repeat(runs, async () => {
      const sample = await op.run();
      if (sample.ok && op.out) sample.outputBytes = fileSize(op.out);
      if (sample.ok && op.outs) sample.outputBytes = op.outs.reduce((s, p) => s + (fileSize(p) ?? 0), 0);
      return sample;
    });
    r.inputBytes = op.name.startsWith('gunzip') ? layer.blobSize : layer.tarSize;
    results.floor[op.name] = r;
  }
  const zstdAll = results.floor['zstd -3 -T0, all cores'];
  const gunzip = results.floor['gunzip of the source blob'];
  if (zstdAll?.ok && gunzip?.ok) {
    const zstdOne = results.floor['zstd -3, 1 core'];
    const cpuSeconds = zstdOne?.ok ? zstdOne.cpuSeconds + gunzip.cpuSeconds : undefined;
    results.floor['zstd -3 -T0 + gunzip'] = { ok: true, runs: 1, median: zstdAll.median + gunzip.median, min: zstdAll.min + gunzip.min, max: zstdAll.max + gunzip.max, cpuSeconds, derived: true };
  }
  // Parallel runs are separate processes (no CPU figure): a format's CPU floor is its 1-core run.
  for (const [name, f] of Object.entries(results.floor)) {
    const one = results.floor[name.replace(/(all|\d+) cores$/, '1 core')];
    if (f.ok && f.cpuSeconds === undefined && one?.ok) f.cpuSeconds = one.cpuSeconds;
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The floor's input: every layer's tar, end to end in one file (what esgz converts), and the
 * source blobs (what it decompresses).
 */
async function floorInput(layers, dir) {
  const blobPaths = layers.map((l) => l.blobPath);
  const sizes = { tarSize: layers.reduce((s, l) => s + l.tarSize, 0), blobSize: layers.reduce((s, l) => s + l.blobSize, 0), blobPaths };
  if (layers.length === 1) return { ...sizes, tarPath: layers[0].tarPath };
  const tarPath = join(dir, 'layers.tar');
  await mustRun('sh', ['-c', 'cat "$@" > "$0"', tarPath, ...layers.map((l) => l.tarPath)]);
  return { ...sizes, tarPath };
}

const ratio = (a, b) => (a?.ok && b?.ok && b.median > 0 ? a.median / b.median : undefined);
const cpuRatio = (a, b) => (a?.ok && b?.ok && a.cpuSeconds !== undefined && b.cpuSeconds > 0 ? a.cpuSeconds / b.cpuSeconds : undefined);
const fmtRatio = (r) => (r === undefined ? '' : r.toFixed(2));

function renderReport(res) {
  const lines = [];
  const tarMB = fmtMB(res.images.debianBase.tarBytes);
  lines.push(`\nesgz benchmark  ${res.startedAt}  ${res.machine.cores} cores  node ${res.machine.node}  runs=${res.runs}`);
  lines.push(`images: debian bookworm minbase (one ${tarMB} MB tar layer, gzip ${fmtMB(res.images.debianBase.gzipBytes)} MB), + python3 layer, busybox`);
  if (res.reference) lines.push(`reference: ${res.reference.ctrRemote} with a private containerd (times: ctr-remote process; it does the conversion itself)`);
  lines.push('times in seconds: wall median (min-max), cpu = user+system median; RSS = peak resident set of the measured process; size = sum of output layer blobs\n');

  const header = ['operation', 'esgz s', 'cpu s', 'RSS MiB', 'size MB', 'ctr-remote s', 'cpu s', 'RSS MiB', 'size MB', 'esgz/ctr', 'floor s', 'esgz/floor', 'cpu esgz/floor'];
  const rows = [];
  for (const op of Object.values(res.ops)) {
    const floor = op.floor ? res.floor[op.floor] : undefined;
    const r = ratio(op.esgz, op.ctrRemote);
    rows.push([
      op.title,
      fmtTiming(op.esgz),
      op.esgz?.ok ? fmtSeconds(op.esgz.cpuSeconds) : '',
      op.esgz?.ok ? fmtMiB(op.esgz.rssBytes) : '',
      op.esgz?.ok ? fmtMB(op.esgz.outputBytes) : '',
      op.ctrRemote ? fmtTiming(op.ctrRemote) : 'n/a (no --with-reference)',
      op.ctrRemote?.ok ? fmtSeconds(op.ctrRemote.cpuSeconds) : '',
      op.ctrRemote?.ok ? fmtMiB(op.ctrRemote.rssBytes) : '',
      op.ctrRemote?.ok ? fmtMB(op.ctrRemote.outputBytes) : '',
      r === undefined ? '' : `${fmtRatio(r)} (${(1 / r).toFixed(1)}x)`,
      floor?.ok ? `${fmtSeconds(floor.median)} ${op.floor}` : '',
      fmtRatio(ratio(op.esgz, floor)),
      fmtRatio(cpuRatio(op.esgz, floor)),
    ]);
  }
  if (res.lazyPull) {
    // lazy-pull rows have no CPU columns (two processes per sample).
    for (const r of res.lazyPull.rows ?? []) rows.push([r[0], r[1], '', r[2], r[3], r[4], '', r[5], r[6], r[7], r[8], r[9]]);
  }
  lines.push(formatTable(header, rows));
  const digests = Object.values(res.ops).filter((op) => op.esgz?.manifestDigest);
  if (digests.length) {
    lines.push(`\nesgz output manifests (the same under every Node version; this run: node ${res.machine.node})`);
    for (const op of digests) lines.push(`  ${op.esgz.manifestDigest}  ${op.title}`);
  }

  const input = res.floorInput;
  lines.push(`\nphysical floor on the same bytes esgz converts (${input ? `${input.layers} layer tar(s) of the debian base image, ${fmtMB(input.tarBytes)} MB` : 'debian base image'}); cpu of an all-cores row = its 1-core run`);
  const floorRows = Object.entries(res.floor).map(([name, f]) => [
    name,
    fmtTiming(f),
    f.ok && f.cpuSeconds !== undefined ? fmtSeconds(f.cpuSeconds) : '',
    f.ok && !f.derived && f.inputBytes ? (f.inputBytes / MB / f.median).toFixed(0) : '',
    f.ok && f.outputBytes !== undefined ? fmtMB(f.outputBytes) : '',
  ]);
  lines.push(formatTable(['floor', 'seconds', 'cpu s', 'MB/s in', 'size MB'], floorRows));
  if (res.parallelUnpack) {
    lines.push('\nfull pull of the eStargz base layer: unpack (bench/parallel-unpack.mjs)');
    lines.push(formatTable(['unpack', 'seconds', 'cpu s'], res.parallelUnpack.rows));
  }
  if (res.huge) {
    lines.push('\nhuge layers (bench/huge-layers.mjs)');
    lines.push(formatTable(['operation', 'seconds', 'peak RSS MiB', 'vs floor'], res.huge.rows));
  }

  if (res.memory) {
    lines.push('\npeak RSS on generated layers (bench/memory.mjs)');
    lines.push(formatTable(['operation', 'layer MiB', 'seconds', 'peak RSS MiB'], res.memory.rows));
  }

  lines.push('\ntargets');
  for (const t of targets(res)) lines.push(`  [${t.status}] ${t.text}${t.detail ? `: ${t.detail}` : ''}`);
  return lines.join('\n');
}

function targets(res) {
  const out = [];
  const check = (text, ok, detail, missing) => out.push({ text, status: missing ? 'n/a ' : ok ? 'met ' : 'NOT ', detail: missing ?? detail });
  const op = (key) => res.ops[key] ?? { esgz: { ok: false, notMeasured: true } };
  const missing = (...rs) => {
    for (const r of rs) {
      if (!r) return res.withReference ? 'not measured in this run' : 'no reference run (--with-reference)';
      if (r.notMeasured) return 'not measured in this run (--ops)';
      if (r.notBuilt) return 'esgz command not built yet';
      if (!r.ok) return `a run failed: ${r.error ?? ''}`;
    }
    return undefined;
  };

  const l9 = op('estargz-l9');
  const r9 = ratio(l9.ctrRemote, l9.esgz);
  check('issue 3: convert --estargz (level 9) >= 6x faster than ctr-remote, output no larger', r9 >= 6 && l9.esgz.outputBytes <= l9.ctrRemote.outputBytes,
    r9 !== undefined ? `${r9.toFixed(1)}x, ${fmtMB(l9.esgz.outputBytes)} vs ${fmtMB(l9.ctrRemote.outputBytes)} MB` : '', missing(l9.esgz, l9.ctrRemote));

  const z = op('zstdchunked');
  const zFloor = res.floor['zstd -3 -T0 + gunzip'];
  const zr = ratio(z.esgz, zFloor);
  check('issue 4: convert --zstdchunked <= 1.5x (zstd -3 -T0 + gunzip)', zr <= 1.5, zr !== undefined ? `${zr.toFixed(2)}x` : '', missing(z.esgz, zFloor));
  const zc = ratio(z.ctrRemote, z.esgz);
  check('issue 4: convert --zstdchunked >= 8x faster than ctr-remote', zc >= 8, zc !== undefined ? `${zc.toFixed(1)}x` : '', missing(z.esgz, z.ctrRemote));

  const o = op('optimize');
  const oc = ratio(o.ctrRemote, o.esgz);
  check('issue 5: optimize >= 4x faster than ctr-remote optimize', oc >= 4, oc !== undefined ? `${oc.toFixed(1)}x` : '', missing(o.esgz, o.ctrRemote));

  floorTargets(res, op, check, missing);
  const py = op('estargz-python');
  const budget = py.esgz?.ok && o.esgz?.workloadSeconds !== undefined ? py.esgz.median + o.esgz.workloadSeconds + 0.5 : undefined;
  check('issue 19.1: optimize <= convert of the same image + the workload\'s run + 0.5 s', o.esgz?.median <= budget,
    budget !== undefined ? `${fmtSeconds(o.esgz.median)} s vs ${fmtSeconds(py.esgz.median)} + ${fmtSeconds(o.esgz.workloadSeconds)} + 0.5 = ${fmtSeconds(budget)} s` : '',
    missing(o.esgz, py.esgz) ?? (o.esgz.workloadSeconds === undefined ? 'no workload time in the optimize report' : undefined));
  for (const t of res.parallelUnpack?.targets ?? [{ status: 'n/a ', text: 'issue 18.5: parallel full pull', detail: 'skipped (--no-parallel-unpack)' }]) out.push(t);
  for (const t of res.huge?.targets ?? [{ status: 'n/a ', text: 'issue 19.3: huge layers', detail: 'skipped (--no-huge)' }]) out.push(t);
  if (res.memory) for (const t of res.memory.targets ?? []) out.push(t);
  else out.push({ status: 'n/a ', text: 'issues 2/3: peak RSS targets', detail: 'memory benchmark skipped (--no-memory)' });
  if (res.lazyPull) for (const t of res.lazyPull.targets ?? []) out.push(t);
  else out.push({ status: 'n/a ', text: 'issue 6: lazy pull >= 3x faster start', detail: 'lazy-pull benchmark skipped (--no-lazy-pull)' });
  return out;
}

/**
 * Issue 19.4: esgz against the floor on the same bytes, wall (all cores) and CPU (one core). What
 * esgz does beyond the compressor (why a miss is not a surprise): one gzip member per file and
 * per 4 MiB chunk (small members compress less well per CPU-second), sha256 of every chunk, the
 * source's inflate, the TOC, and Node's and oclif's start-up.
 */
function floorTargets(res, op, check, missing) {
  const because = 'esgz also inflates the source, hashes every chunk, writes a member per file and a TOC, and starts Node';
  const formats = [
    { key: 'estargz-l9', text: 'eStargz level 9 within 1.15x of the floor (libdeflate -9) wall and 1.3x CPU', floor: 'libdeflate-gzip -9, all cores', wall: 1.15, cpu: 1.3 },
    { key: 'zstdchunked', text: 'zstd:chunked within 1.3x of the floor (zstd -3 + gunzip) wall and CPU', floor: 'zstd -3 -T0 + gunzip', wall: 1.3, cpu: 1.3 },
  ];
  for (const f of formats) {
    const o = op(f.key);
    const floor = res.floor[f.floor];
    const wall = ratio(o.esgz, floor);
    const cpu = cpuRatio(o.esgz, floor);
    const met = wall <= f.wall && cpu <= f.cpu;
    const numbers = wall !== undefined ? `wall ${wall.toFixed(2)}x, cpu ${cpu?.toFixed(2) ?? '?'}x` : '';
    check(`issue 19.4: ${f.text}`, met, met ? numbers : `${numbers}, because ${because}`, missing(o.esgz, floor));
  }
}

// Last, so every module-level helper above is initialised before main() uses it.
try {
  await main();
} catch (err) {
  console.error(`bench: ${err.message}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
