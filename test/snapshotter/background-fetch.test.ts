/**
 * Background fetch (#18): after `rpull` and a short `run --background-fetch`, every layer is
 * complete in the chunk cache, so a second run with the registry gone (its proxy closed) reads
 * every file from the cache, byte for byte; a background fetch that is stopped resumes where it
 * left off (the second fetch asks for none of the bytes the first one got). Real registry, runc,
 * FUSE and overlayfs; the fault proxy counts the requests.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rpull } from '../../src/snapshotter/rpull.js';
import { mountImage, runContainer, type RunContainerOptions } from '../../src/snapshotter/run.js';
import { busyboxImage } from '../fixtures/debian.js';
import { buildTar } from '../fixtures/tar-stream.js';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { registryAddress } from '../harness/registry.js';
import { pushEstargzImage } from './helpers.js';

const FILES = 120;

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const parts: Buffer[] = [];
  stream.on('data', (c: Buffer) => parts.push(c));
  return { stream, text: () => Buffer.concat(parts).toString() };
}

/** `sha256sum` lines of the generated files, as the container prints them for `sha256sum /data/*`. */
function expectedSums(files: Map<string, Buffer>): string {
  return [...files]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, data]) => `${createHash('sha256').update(data).digest('hex')}  /${name}\n`)
    .join('');
}

/** Byte ranges [start, end) of the layer's blob requests in the proxy log. */
function layerRanges(proxy: FaultProxy, digest: string): Array<[number, number]> {
  return proxy.log
    .filter((e) => e.path.includes(`/blobs/${digest}`))
    .map((e) => /^bytes=(\d+)-(\d+)$/.exec(String(e.headers.range ?? '')))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [Number(m[1]), Number(m[2]) + 1]);
}

describe('background fetch', () => {
  let proxy: FaultProxy;
  let work: string;
  let reference: string;
  let dataLayer: string;
  const files = new Map<string, Buffer>();

  beforeAll(async () => {
    work = await mkdtemp(join(os.tmpdir(), 'esgz-bgfetch-'));
    proxy = await startFaultProxy(registryAddress());
    // busybox for a shell, and a layer of files of 1-96 KiB in small chunks: not optimized, no
    // prefetch landmark, so every file of it is fetched on demand or by the background fetch.
    const busybox = await busyboxImage();
    for (let i = 0; i < FILES; i++)
      files.set(`data/f${String(i).padStart(3, '0')}`, randomBytes(1024 * (1 + (i % 96))));
    const dataTar = await buildTar([
      { name: 'data/', type: 'directory' },
      ...[...files].map(([name, content]) => ({ name, content })),
    ]);
    const pushed = await pushEstargzImage(
      `${registryAddress()}/bgfetch/img:esgz`,
      [await readFile(busybox.layers[0]!.tarPath), dataTar],
      { config: { Cmd: ['/bin/sh'] } },
      { chunkSize: 16 * 1024 },
    );
    dataLayer = pushed.layerDigests[1]!;
    reference = `${proxy.address}/bgfetch/img:esgz`;
  });

  /** `sh -c script` in the image (state root `root`), its stdout and stderr together. */
  async function runShell(root: string, script: string, extra: Partial<RunContainerOptions>) {
    const out = capture();
    const result = await runContainer({
      reference,
      stateRoot: root,
      rm: true,
      run: {},
      command: ['/bin/sh', '-c', script],
      stdout: out.stream,
      stderr: out.stream,
      ...extra,
    });
    return { result, output: out.text() };
  }

  afterAll(async () => {
    await proxy?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('completes the layers after a short run; a second run with the registry gone reads every file from the cache', async () => {
    const root = join(work, 'state-complete');
    await rpull({ reference, stateRoot: root, plainHttp: true });
    const { result: short, output: first } = await runShell(root, 'echo started', { backgroundFetch: true });
    expect(first).toBe('started\n');
    expect(short.exitCode).toBe(0);
    expect(short.stats.backgroundComplete).toBe(true);
    expect(short.stats.backgroundBytes).toBeGreaterThan(0);
    expect(short.stats.firstOutputMs).toBeGreaterThan(0);
    // Ranges of many members each, not one request per chunk.
    expect(short.stats.requests).toBeLessThan(short.fetches.reduce((n, f) => n + (f?.chunksFetched ?? 0), 0) / 4);

    await proxy.close();
    const { result: offline, output: second } = await runShell(
      root,
      'find / -xdev -type f -exec cat {} + > /dev/null && sha256sum /data/*',
      { fetchPolicy: { deadlineMs: 2000, attempts: 1 } },
    );
    expect(second).toBe(expectedSums(files));
    expect(offline.exitCode).toBe(0);
    expect(offline.stats).toMatchObject({ requests: 0, bytesFetched: 0, onDemandMisses: 0 });
    expect(offline.stats.prefetchHits).toBeGreaterThanOrEqual(FILES);
    proxy = await startFaultProxy(registryAddress());
  });

  it('resumes a stopped background fetch without fetching again what it got', async () => {
    const root = join(work, 'state-resume');
    const ref = `${proxy.address}/bgfetch/img:esgz`;
    await rpull({ reference: ref, stateRoot: root, plainHttp: true, noPrefetch: true });
    const fetchDataLayer = async (workDir: string, stopAfterFirstRange: boolean) => {
      // Small ranges, so stopping after the first leaves most of the layer to the resumed fetch.
      const fetchPolicy = { backgroundRangeBytes: 256 * 1024 };
      const image = await mountImage({ reference: ref, stateRoot: root, workDir, plainHttp: true, fetchPolicy });
      try {
        const lazy = image.lazies[1]!;
        const stop = new AbortController();
        await lazy.fetchAll({ signal: stop.signal, onProgress: () => stopAfterFirstRange && stop.abort() });
        return { ...lazy.stats };
      } finally {
        await image.release();
      }
    };
    proxy.clearLog();
    const stopped = await fetchDataLayer(join(work, 'c1'), true);
    const before = layerRanges(proxy, dataLayer);
    proxy.clearLog();
    const resumed = await fetchDataLayer(join(work, 'c2'), false);
    const after = layerRanges(proxy, dataLayer);
    expect(stopped.backgroundBytes).toBeGreaterThan(0);
    expect(resumed.backgroundBytes).toBeGreaterThan(0);
    // No byte the stopped fetch got is asked for again.
    for (const [s, e] of after)
      for (const [s0, e0] of before) expect(e <= s0 || s >= e0, `${s}-${e} vs ${s0}-${e0}`).toBe(true);
    proxy.clearLog();
    expect(await fetchDataLayer(join(work, 'c3'), false)).toMatchObject({ requests: 0 });
  });
});
