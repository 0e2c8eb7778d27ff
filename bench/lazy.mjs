#!/usr/bin/env node
// Lazy start-up (issue 19 item 2) through a link emulator (bench/lib/link-emulator.mjs: bandwidth
// + round-trip time) in front of the registry, at 10 MB/s 20 ms and 100 MB/s 5 ms:
//   - esgz rpull + run of the python image optimized for `python3 -c print('hi')`;
//   - the same image converted without optimization (no prefetch: what python reads is fetched on demand);
//   - that image with a workload that reads every file (`run --background-fetch`, as the snapshotter fetches);
//   - a full pull (skopeo download + gunzip | tar + runc run) of the gzip original.
// Each row: seconds from the start of rpull to the workload's first output, and bytes through the link.
// The reference row (containerd + stargz snapshotter) is not measured here yet.
//
//   node bench/lazy.mjs [--runs N] [--link 10]   (standalone: builds the images, starts its own registry)
//   node bench/run.mjs --lazy            (from the main bench)
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { fullPullAndRun } from './lazy-pull.mjs';
import { startLinkEmulator } from './lib/link-emulator.mjs';
import { MB, benchCache, esgzBin, fmtMB, fmtSeconds, log, mustRun, repeat } from './lib/common.mjs';

export const LINKS = [
  { name: '10 MB/s 20 ms', bytesPerSecond: 10 * MB, rttMs: 20 },
  { name: '100 MB/s 5 ms', bytesPerSecond: 100 * MB, rttMs: 5 },
];
const PYTHON = ['python3', '-c', "print('hi')"];
const READ_ALL = ['sh', '-c', 'find / -xdev -type f -exec cat {} + > /dev/null; echo done'];

/** Runs a command; resolves with the time its stdout first had bytes, its exit and its output. */
function runUntilExit(command, args, started) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let firstOutput;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      firstOutput ??= (performance.now() - started) / 1000;
      stdout += c;
    });
    child.stderr.on('data', (c) => (stderr = (stderr + c).slice(-4000)));
    child.on('close', (code) => resolve({ code, firstOutput, stdout, stderr }));
  });
}

/** `esgz image rpull` + `esgz run --stats` through the link; seconds to the first output and bytes. */
async function esgzLazyRun({ link, ref, root, workload, expect, runFlags, id }) {
  rmSync(root, { recursive: true, force: true });
  link.reset();
  const started = performance.now();
  const pull = await runUntilExit(process.execPath, [esgzBin, 'image', 'rpull', '--plain-http', '--root', root, ref], started);
  if (pull.code !== 0) return { ok: false, error: `rpull: ${pull.stderr.trim().slice(-300)}` };
  const run = await runUntilExit(process.execPath, [esgzBin, 'run', '--rm', '--stats', '--plain-http', '--root', root, ...runFlags, ref, id, ...workload], started);
  const ok = run.code === 0 && run.stdout.includes(expect);
  const stats = /stats: .*/.exec(run.stderr)?.[0];
  rmSync(root, { recursive: true, force: true });
  return { ok, error: ok ? undefined : `run: exit ${run.code}: ${run.stderr.trim().slice(-300)}`, seconds: run.firstOutput, extra: { bytes: link.stats.bytes, requests: link.stats.requests, stats } };
}

/** The images: optimized for the python workload, and the same converted without optimization. */
async function pushImages(registry, image) {
  const optimized = `${registry.address}/bench/lazy:python-optimized`;
  const plain = `${registry.address}/bench/lazy:python-estargz`;
  log('lazy: esgz image optimize (python3) and convert --estargz -> registry');
  await mustRun(process.execPath, [esgzBin, 'image', 'optimize', '--oci', '--plain-http', '--entrypoint', JSON.stringify(PYTHON.slice(0, 2)), '--args', JSON.stringify(PYTHON.slice(2)), image.ref, optimized]);
  await mustRun(process.execPath, [esgzBin, 'image', 'convert', '--estargz', '--oci', '--plain-http', image.ref, plain]);
  return { optimized, plain };
}

const fmtRun = (r) => (r.ok ? `${fmtSeconds(r.median)} s (${fmtSeconds(r.min)}-${fmtSeconds(r.max)}), ${fmtMB(r.extra.bytes)} MB` : `failed: ${r.error}`.slice(0, 80));

export async function runLazyBench({ registry, image, remoteRef, work, runs = 1, links = LINKS }) {
  mkdirSync(work, { recursive: true });
  const refs = await pushImages(registry, image);
  const rows = [];
  const targets = [];
  for (const profile of links) {
    const link = await startLinkEmulator(registry.address, profile);
    const via = (ref) => ref.replace(registry.address, link.address);
    try {
      const cases = [
        { name: 'esgz optimized, python3', ref: refs.optimized, workload: PYTHON, expect: 'hi', runFlags: [] },
        { name: 'esgz not optimized, python3 (on demand)', ref: refs.plain, workload: PYTHON, expect: 'hi', runFlags: [] },
        { name: 'esgz not optimized, read every file', ref: refs.plain, workload: READ_ALL, expect: 'done', runFlags: ['--background-fetch'] },
      ];
      const measured = {};
      for (const c of cases) {
        log(`lazy: ${profile.name}: ${c.name}`);
        measured[c.name] = await repeat(runs, (i) => esgzLazyRun({ link, ref: via(c.ref), root: join(work, 'root'), workload: c.workload, expect: c.expect, runFlags: c.runFlags, id: `bench-lazy-${process.pid}-${i}` }));
        rows.push([`${profile.name}: ${c.name}`, fmtRun(measured[c.name]), measured[c.name].extra?.stats ?? '']);
        log(rows[rows.length - 1].filter(Boolean).join('  '));
      }
      log(`lazy: ${profile.name}: full pull`);
      const full = await repeat(runs, async (i) => {
        link.reset();
        const dir = join(work, `full-${i}`);
        const r = await fullPullAndRun({ dir, ref: via(remoteRef), layers: image.layers, workload: PYTHON, expect: 'hi', id: `bench-full-${process.pid}-${i}` }).catch((err) => ({ ok: false, error: err.message }));
        rmSync(dir, { recursive: true, force: true });
        return { ...r, extra: { bytes: link.stats.bytes } };
      });
      rows.push([`${profile.name}: full pull + run python3`, fmtRun(full), '']);
      log(rows[rows.length - 1].filter(Boolean).join('  '));
      const lazy = measured['esgz optimized, python3'];
      const speedup = lazy.ok && full.ok ? full.median / lazy.median : undefined;
      if (profile.bytesPerSecond === 10 * MB)
        targets.push({
          status: speedup === undefined ? 'NOT ' : speedup >= 3 ? 'met ' : 'NOT ',
          text: 'issue 19: rpull + run (optimized) >= 3x faster than a full pull at 10 MB/s 20 ms',
          detail: speedup ? `${speedup.toFixed(1)}x` : `lazy: ${lazy.error ?? 'ok'}; full: ${full.error ?? 'ok'}`,
        });
    } finally {
      await link.close();
    }
  }
  targets.push({ status: 'n/a ', text: 'issue 19: esgz vs containerd + stargz snapshotter', detail: 'reference row not measured (bench/reference-snapshotter/ not built)' });
  return { rows, targets };
}

/** The rows and targets as text (after the main table of bench/run.mjs, or alone). */
export function formatLazyBench({ rows, targets }) {
  const lines = ['', 'lazy start-up (rpull start to first output, bytes through the link):'];
  for (const row of rows) lines.push(`  ${row.filter(Boolean).join('  ')}`);
  for (const t of targets) lines.push(`  [${t.status}] ${t.text}${t.detail ? `: ${t.detail}` : ''}`);
  return `${lines.join('\n')}\n`;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { startBenchRegistry } = await import('./lib/registry.mjs');
  const { importShared } = await import('./lib/common.mjs');
  const { debianImage } = await importShared('test/fixtures/debian.ts');
  const runs = process.argv.includes('--runs') ? Number(process.argv[process.argv.indexOf('--runs') + 1]) : 1;
  const debian = await debianImage({ log });
  const registry = await startBenchRegistry();
  try {
    const remoteRef = `${registry.address}/bench/lazy:bookworm-python`;
    await mustRun('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', debian.python.ref, `docker://${remoteRef}`]);
    process.on('exit', (code) => code === 0 || console.error(`exit ${code}`));
    const only = process.argv.includes('--link') ? LINKS.filter((l) => l.name.startsWith(process.argv[process.argv.indexOf('--link') + 1])) : LINKS;
    const result = await runLazyBench({ registry, image: debian.python, remoteRef, work: join(benchCache, 'work', 'lazy'), runs, links: only });
    console.log(formatLazyBench(result));
  } finally {
    await registry.stop();
  }
}
