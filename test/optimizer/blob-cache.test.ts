import { ReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transferImage } from '../../src/image/pipeline.js';
import { openSink, openSource } from '../../src/image/transports/index.js';
import type { Descriptor } from '../../src/oci/types.js';
import { CachingSource } from '../../src/optimizer/blob-cache.js';
import { optimizeImage } from '../../src/optimizer/optimize-image.js';
import { startRegistry, type RunningRegistry } from '../harness/registry.js';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { busyboxRootfs, writeOciImage } from '../fixtures/oci-image.js';

let registry: RunningRegistry;
let proxy: FaultProxy;
let work: string;
let ref: string;
let layer: Descriptor;

beforeAll(async () => {
  // A registry of our own behind a logging proxy: the proxy's log is the oracle for how often
  // each blob was fetched.
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.address);
  work = mkdtempSync(join(tmpdir(), 'esgz-blobcache-'));
  const written = await writeOciImage(join(work, 'src'), {
    tag: 'latest',
    layers: [busyboxRootfs()],
    config: { Cmd: ['/bin/sh'] },
  });
  ref = `${proxy.address}/h5/cache:1`;
  const source = await openSource(`oci:${join(work, 'src')}:latest`);
  await transferImage({ source, sink: await openSink(ref, { plainHttp: true }) });
  await source.close();
  const l = written.manifests[0]!.layers[0]!;
  layer = { mediaType: l.mediaType, digest: l.digest, size: l.size };
});
afterAll(async () => {
  await proxy?.close();
  await registry?.stop();
  rmSync(work, { recursive: true, force: true });
});

function blobGets(digest: string): number {
  return proxy.count({ method: 'GET', path: `/v2/h5/cache/blobs/${digest}` });
}

async function sha256(stream: NodeJS.ReadableStream): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

describe('CachingSource', () => {
  it('serves the second read of a blob from its local copy, and only complete copies', async () => {
    const source = await openSource(ref, { plainHttp: true });
    const cache = new CachingSource(source, { digests: new Set([layer.digest]) });
    try {
      // A read abandoned half-way leaves no copy behind.
      const partial = await cache.openBlob(layer);
      for await (const _ of partial) break;
      await new Promise((r) => setTimeout(r, 200));
      expect(await cache.openBlob(layer)).not.toBeInstanceOf(ReadStream);

      const first = await cache.openBlob(layer);
      expect(first).not.toBeInstanceOf(ReadStream);
      expect(await sha256(first)).toBe(layer.digest);
      await new Promise((r) => setTimeout(r, 200));
      const second = await cache.openBlob(layer);
      expect(second).toBeInstanceOf(ReadStream);
      expect(await sha256(second)).toBe(layer.digest);
    } finally {
      await cache.close();
      await source.close();
    }
  });

  it('optimize fetches each profiled layer once', async () => {
    const run = async (cacheBlobs: boolean, out: string) => {
      const before = blobGets(layer.digest);
      const source = await openSource(ref, { plainHttp: true });
      try {
        await optimizeImage({
          source,
          sink: await openSink(`oci:${join(work, out)}:o`),
          format: 'estargz',
          convert: {},
          oci: true,
          cacheBlobs,
          run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello'] },
          workloadStdout: new PassThrough(),
        });
      } finally {
        await source.close();
      }
      return blobGets(layer.digest) - before;
    };
    // The profile keeps the layer tars it unpacks and the conversion reads those, so the blob is
    // fetched once with or without the cache (the cache still serves layers converted from the
    // source: untraced ones, or any whose tar could not be kept).
    expect(await run(false, 'plain')).toBe(1);
    expect(await run(true, 'cached')).toBe(1);
    expect(readFileSync(join(work, 'cached', 'index.json'), 'utf8')).toEqual(
      readFileSync(join(work, 'plain', 'index.json'), 'utf8'),
    );
  });
});
