#!/usr/bin/env node
// Lazy pull (issue 6): through a 10 MB/s proxy on loopback in front of the registry,
//   lazy: `esgz image rpull` + `esgz run --rm REF python3 -c "print('hi')"` on the optimized image
//   full: download the gzip original (skopeo), unpack every layer (gzip -dc | tar -x), runc run
// Reports wall time to the workload's output and bytes sent through the proxy for each.
// Stubbed as "n/a (not built)" until `esgz image rpull`, `esgz run` and `esgz image optimize` exist.
//
//   node bench/lazy-pull.mjs      (standalone: builds the images, starts its own registry)
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { referenceLazyBytes, touchedChunkBytes } from './lib/estargz-peek.mjs';
import { MB, benchCache, esgzBin, esgzHas, fmtMB, fmtSeconds, importShared, log, measure, mustRun, repeat, runProcess } from './lib/common.mjs';

const BANDWIDTH = 10 * MB;
const WORKLOAD = ['python3', '-c', "print('hi')"];

export async function runLazyPullBench({ registry, image, remoteRef, work, runs = 3 }) {
  const needed = [['image', 'rpull'], ['run'], ['image', 'optimize']];
  const missing = [];
  for (const words of needed) if (!(await esgzHas(words))) missing.push(`esgz ${words.join(' ')}`);
  const title = `lazy pull: rpull + run ${WORKLOAD.join(' ')} at ${BANDWIDTH / MB} MB/s`;
  if (missing.length) {
    log(`lazy pull: skipped, not built yet: ${missing.join(', ')}`);
    return {
      rows: [[title, `n/a (not built: ${missing.join(', ')})`.slice(0, 60), '', '', 'full download+unpack+run', '', '', '', '', '']],
      targets: [{ status: 'n/a ', text: 'issue 6: rpull + run >= 3x faster than full download + unpack + run', detail: `not built: ${missing.join(', ')}` }],
    };
  }
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const { startFaultProxy } = await importShared('test/harness/fault-proxy.ts');
  const optimizedRef = `${registry.address}/bench/debian:python-optimized`;
  log('lazy pull: esgz image optimize (workload python3) -> registry');
  await mustRun(process.execPath, [
    esgzBin, 'image', 'optimize', '--oci', '--plain-http',
    '--entrypoint', JSON.stringify(WORKLOAD.slice(0, 2)), '--args', JSON.stringify(WORKLOAD.slice(2)),
    image.ref, optimizedRef,
  ]);

  const reference = await referenceLazyBytes(registry.address, optimizedRef.slice(registry.address.length + 1));
  const proxy = await startFaultProxy(registry.address);
  proxy.setBandwidth(BANDWIDTH);
  const viaProxy = (ref) => ref.replace(registry.address, proxy.address);
  const bytesSent = () => proxy.log.reduce((sum, entry) => sum + entry.bytes, 0);
  try {
    const root = join(work, 'esgz-root');
    const lazy = await repeat(
      runs,
      async (i) => {
        proxy.clearLog();
        const started = performance.now();
        const pull = await measure(process.execPath, [esgzBin, 'image', 'rpull', '--plain-http', '--root', root, viaProxy(optimizedRef)]);
        if (!pull.ok) return pull;
        const run = await measure(process.execPath, [esgzBin, 'run', '--rm', '--plain-http', '--root', root, viaProxy(optimizedRef), `bench-lazy-${i}`, ...WORKLOAD]);
        const seconds = (performance.now() - started) / 1000;
        if (run.ok && !run.stdout.includes('hi')) return { ok: false, error: `workload printed ${JSON.stringify(run.stdout.slice(0, 80))}` };
        const requests = proxy.log.map((entry) => `${entry.method} ${entry.path} ${entry.headers.range ?? ''} ${entry.status} ${entry.bytes}`);
        return { ok: run.ok, error: run.error, seconds, rssBytes: Math.max(pull.rssBytes ?? 0, run.rssBytes ?? 0), extra: { bytes: bytesSent(), touchedBytes: touchedChunkBytes(reference, proxy.log), rpullSeconds: pull.seconds, requests } };
      },
      async () => {
        await runProcess(process.execPath, [esgzBin, 'image', 'rm', '--root', root, viaProxy(optimizedRef)]);
        rmSync(root, { recursive: true, force: true });
      },
    );

    const full = await repeat(
      runs,
      async (i) => {
        proxy.clearLog();
        const run = await fullPullAndRun({ dir: join(work, `full-${i}`), ref: viaProxy(remoteRef), layers: image.layers, workload: WORKLOAD, expect: 'hi', id: `bench-full-${process.pid}-${i}` });
        return { ...run, extra: { bytes: bytesSent() } };
      },
      () => {},
    );
    for (let i = 0; i < runs; i++) rmSync(join(work, `full-${i}`), { recursive: true, force: true });

    const speedup = lazy.ok && full.ok ? full.median / lazy.median : undefined;
    const rows = [
      [
        title,
        lazy.ok ? `${fmtSeconds(lazy.median)} (${fmtSeconds(lazy.min)}-${fmtSeconds(lazy.max)})` : `failed: ${lazy.error}`.slice(0, 60),
        '',
        lazy.ok ? `${fmtMB(lazy.extra.bytes)} fetched` : '',
        full.ok ? `${fmtSeconds(full.median)} full download+unpack+run` : `full: failed: ${full.error}`.slice(0, 60),
        '',
        full.ok ? `${fmtMB(full.extra.bytes)} fetched` : '',
        speedup ? `${(1 / speedup).toFixed(2)} (${speedup.toFixed(1)}x)` : '',
        '',
        '',
      ],
      [
        'lazy pull: bytes the stargz snapshotter would fetch',
        '',
        '',
        '',
        '',
        '',
        `${fmtMB(reference.total)} + ${lazy.ok ? fmtMB(lazy.extra.touchedBytes) : '?'} touched`,
        lazy.ok ? (lazy.extra.bytes / (reference.total + lazy.extra.touchedBytes)).toFixed(2) : '',
        '',
        '',
      ],
    ];
    const targets = [
      {
        status: speedup === undefined ? 'NOT ' : speedup >= 3 ? 'met ' : 'NOT ',
        text: 'issue 6: rpull + run >= 3x faster than full download + unpack + run (10 MB/s)',
        detail: speedup ? `${speedup.toFixed(1)}x, ${fmtMB(lazy.extra.bytes)} MB vs ${fmtMB(full.extra.bytes)} MB fetched` : `lazy: ${lazy.error ?? 'ok'}; full: ${full.error ?? 'ok'}`,
      },
    ];
    targets.push({
      status: !lazy.ok ? 'NOT ' : lazy.extra.bytes <= reference.total + lazy.extra.touchedBytes ? 'met ' : 'NOT ',
      text: 'issue 6: rpull + run fetches no more than the reference snapshotter (prefetch range + TOCs + touched chunks)',
      detail: lazy.ok
        ? `${lazy.extra.bytes} bytes vs ${reference.total} (manifest, config, footers, TOCs, prioritized ranges) + ${lazy.extra.touchedBytes} (chunks read outside them)`
        : `lazy: ${lazy.error}`,
    });
    return { rows, targets, lazy, full, reference };
  } finally {
    await proxy.close();
  }
}

/**
 * The non-lazy baseline: download the image (skopeo), unpack every layer (`gzip -dc | tar -x`),
 * `runc run` the workload; seconds from the start to the workload's exit, `ok` when it printed `expect`.
 */
export async function fullPullAndRun({ dir, ref, layers, workload, expect, id }) {
  mkdirSync(dir, { recursive: true });
  const started = performance.now();
  const copied = await measure('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${join(dir, 'layout')}:img`]);
  if (!copied.ok) return copied;
  const rootfs = join(dir, 'bundle', 'rootfs');
  mkdirSync(rootfs, { recursive: true });
  for (const layer of layers) {
    const blob = join(dir, 'layout', 'blobs', 'sha256', layer.blobDigest.slice(7));
    await mustRun('sh', ['-c', 'gzip -dc "$0" | tar -x --numeric-owner -C "$1"', blob, rootfs]);
  }
  await mustRun('runc', ['spec', '--bundle', join(dir, 'bundle')]);
  const specPath = join(dir, 'bundle', 'config.json');
  const spec = JSON.parse(readFileSync(specPath, 'utf8'));
  spec.process.terminal = false;
  spec.process.args = workload;
  spec.root.readonly = false;
  writeFileSync(specPath, JSON.stringify(spec));
  const run = await measure('runc', ['--root', join(dir, 'runc'), 'run', '--bundle', join(dir, 'bundle'), id]);
  const seconds = (performance.now() - started) / 1000;
  const ok = run.ok && run.stdout.includes(expect);
  return { ok, error: ok ? undefined : (run.error ?? `workload did not print ${expect}`), seconds };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { startBenchRegistry } = await import('./lib/registry.mjs');
  const { debianImage } = await importShared('test/fixtures/debian.ts');
  const debian = await debianImage({ log });
  const registry = await startBenchRegistry();
  try {
    const remoteRef = `${registry.address}/bench/debian:bookworm-python`;
    await mustRun('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', debian.python.ref, `docker://${remoteRef}`]);
    const result = await runLazyPullBench({ registry, image: debian.python, remoteRef, work: join(benchCache, 'work', 'lazy-pull') });
    for (const row of result.rows) console.log(row.filter(Boolean).join('  '));
    for (const t of result.targets) console.log(`  [${t.status}] ${t.text}${t.detail ? `: ${t.detail}` : ''}`);
    if (process.env.ESGZ_BENCH_VERBOSE) console.log(JSON.stringify({ lazyRequests: result.lazy?.extra?.requests, reference: result.reference }, null, 1));
  } finally {
    await registry.stop();
  }
}
