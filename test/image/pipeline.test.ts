// transferImage with real (test-local) layer transforms: what convert/optimize rely on.
// gunzip/gzip from zlib and GNU tar are the oracles for layer contents.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { gunzipSync, createGunzip, createGzip } from 'node:zlib';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shortDigest } from '../../src/oci/digest.js';
import { transferImage, type TransferProgress } from '../../src/image/pipeline.js';
import {
  identityTransform,
  type LayerInput,
  type LayerOutput,
  type LayerTransform,
  type TransformContext,
} from '../../src/image/transform.js';
import { openSink, openSource } from '../../src/image/transports/index.js';
import { multiLayerEntries, twoPlatformImages, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-pipeline-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** Recompresses each layer at gzip level 1: same tar (diffID), new blob digest. */
class RegzipTransform implements LayerTransform {
  readonly name = 'regzip';
  readonly seen: number[] = [];
  constructor(private readonly options: { failAt?: number; delayFirstMs?: number; mediaType?: string } = {}) {}

  async transform(input: LayerInput, output: Writable, context: TransformContext): Promise<LayerOutput> {
    this.seen.push(input.index);
    if (input.index === 0 && this.options.delayFirstMs)
      await new Promise((r) => setTimeout(r, this.options.delayFirstMs));
    if (input.index === this.options.failAt) throw new Error('synthetic transform failure');
    const tarHash = createHash('sha256');
    const gunzip = (await input.open()).pipe(createGunzip());
    const gzip = createGzip({ level: 1 });
    gunzip.on('data', (chunk: Buffer) => tarHash.update(chunk));
    gunzip.pipe(gzip);
    let consumed = 0;
    for await (const chunk of gzip) {
      consumed += chunk.length;
      context.onInputProgress?.(consumed);
      if (!output.write(chunk)) await new Promise((r) => output.once('drain', r));
    }
    return {
      mediaType: this.options.mediaType ?? 'application/vnd.oci.image.layer.v1.tar+gzip',
      annotations: { 'org.example.regzip': String(input.index) },
      diffID: `sha256:${tarHash.digest('hex')}`,
      report: { index: input.index },
    };
  }
}

async function run(src: string, dst: string, transform: LayerTransform, extra: Record<string, unknown> = {}) {
  const source = await openSource(src);
  const sink = await openSink(dst);
  try {
    return await transferImage({ source, sink, transform, ...extra });
  } finally {
    await source.close();
  }
}

const blob = (dir: string, digest: string) => readFile(join(dir, 'blobs', 'sha256', digest.slice(7)));

let oci: WrittenImage;
let docker: WrittenImage;
let multi: WrittenImage;

beforeAll(async () => {
  oci = await writeOciImage(join(scratch, 'src'), { tag: 'oci', layers: multiLayerEntries() });
  docker = await writeOciImage(join(scratch, 'src'), {
    tag: 'docker',
    mediaTypes: 'docker',
    layers: multiLayerEntries(),
  });
  multi = await writeOciImage(join(scratch, 'src'), { tag: 'multi', platforms: twoPlatformImages() });
});

describe('transferImage with a transform', () => {
  it('writes new layer blobs, keeps diffIDs, rewrites manifest and config, in layer order despite parallelism', async () => {
    const dst = join(scratch, 'regzip');
    const transform = new RegzipTransform({ delayFirstMs: 300 });
    const updates: string[] = [];
    const progress: TransferProgress = {
      start: (id) => updates.push(`start ${id}`),
      update: () => {},
      finish: (id) => updates.push(`finish ${id}`),
    };
    const report = await run(`oci:${oci.dir}:oci`, `oci:${dst}:out`, transform, { concurrency: 3, progress });
    // Layer 0 was held back, so others finished first; the manifest still lists them in order.
    expect(updates.findIndex((u) => u.startsWith('finish layer-0'))).toBeGreaterThan(
      updates.findIndex((u) => u.startsWith('finish layer-1')),
    );
    const manifest = JSON.parse((await blob(dst, report.root.digest)).toString());
    expect(manifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(manifest.layers).toHaveLength(3);
    for (const [i, layer] of manifest.layers.entries()) {
      expect(layer.digest).not.toBe(oci.manifests[0]!.layers[i]!.digest);
      expect(layer.annotations).toEqual({ 'org.example.regzip': String(i) });
      const bytes = await blob(dst, layer.digest);
      expect(layer.size).toBe(bytes.length);
      expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(layer.digest);
      // Same tar inside: the diffID is unchanged.
      expect(`sha256:${createHash('sha256').update(gunzipSync(bytes)).digest('hex')}`).toBe(
        oci.manifests[0]!.layers[i]!.diffID,
      );
    }
    // diffIDs unchanged → the config bytes are the source's (same digest).
    expect(manifest.config.digest).toBe(oci.manifests[0]!.configDigest);
    expect(report.manifests[0]!.layers.map((l) => l.transform)).toEqual([{ index: 0 }, { index: 1 }, { index: 2 }]);
    // skopeo reads the result and GNU tar lists the rewritten layer.
    const { stdout } = await execa('skopeo', ['inspect', `oci:${dst}:out`]);
    expect(JSON.parse(stdout).Layers).toEqual(manifest.layers.map((l: { digest: string }) => l.digest));
    const layer2 = join(scratch, 'layer2.tar.gz');
    await execa('cp', [join(dst, 'blobs', 'sha256', manifest.layers[1].digest.slice(7)), layer2]);
    expect((await execa('tar', ['-tzf', layer2])).stdout).toContain('etc/.wh.hello');
  });

  it('rewrites config diff_ids when the transform changes the tar', async () => {
    const dst = join(scratch, 'difftar');
    const transform: LayerTransform = {
      name: 'append-file',
      async transform(input, output) {
        // A different (tiny) tar per layer: its diffID differs from the source's.
        const tar = Buffer.alloc(1024);
        const gz = createGzip();
        gz.end(tar);
        for await (const chunk of gz) output.write(chunk);
        (await input.open()).resume();
        return {
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          annotations: {},
          diffID: `sha256:${createHash('sha256').update(tar).digest('hex')}`,
        };
      },
    };
    const report = await run(`oci:${oci.dir}:oci`, `oci:${dst}:out`, transform);
    const manifest = JSON.parse((await blob(dst, report.root.digest)).toString());
    expect(manifest.config.digest).not.toBe(oci.manifests[0]!.configDigest);
    const config = JSON.parse((await blob(dst, manifest.config.digest)).toString());
    const empty = `sha256:${createHash('sha256').update(Buffer.alloc(1024)).digest('hex')}`;
    expect(config.rootfs.diff_ids).toEqual([empty, empty, empty]);
    const original = JSON.parse((await blob(oci.dir, oci.manifests[0]!.configDigest)).toString());
    expect(config.history).toEqual(original.history);
    expect(config.config).toEqual(original.config);
    expect(manifest.layers[0].annotations).toBeUndefined();
  });

  it('keeps the Docker media type family unless --oci', async () => {
    const kept = await run(`oci:${docker.dir}:docker`, `oci:${join(scratch, 'docker-kept')}:d`, new RegzipTransform());
    const keptManifest = JSON.parse((await blob(join(scratch, 'docker-kept'), kept.root.digest)).toString());
    expect(keptManifest.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(keptManifest.config.mediaType).toBe('application/vnd.docker.container.image.v1+json');
    expect(new Set(keptManifest.layers.map((l: { mediaType: string }) => l.mediaType))).toEqual(
      new Set(['application/vnd.docker.image.rootfs.diff.tar.gzip']),
    );

    const converted = await run(
      `oci:${docker.dir}:docker`,
      `oci:${join(scratch, 'docker-oci')}:d`,
      new RegzipTransform(),
      { oci: true },
    );
    const ociManifest = JSON.parse((await blob(join(scratch, 'docker-oci'), converted.root.digest)).toString());
    expect(ociManifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(ociManifest.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');

    // A layer format Docker cannot describe (zstd) turns the whole manifest OCI.
    const zstdish = await run(
      `oci:${docker.dir}:docker`,
      `oci:${join(scratch, 'docker-zstd')}:d`,
      new RegzipTransform({ mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }),
    );
    const zManifest = JSON.parse((await blob(join(scratch, 'docker-zstd'), zstdish.root.digest)).toString());
    expect(zManifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
  });

  it('transforms every platform of an index and rebuilds it with the new child digests', async () => {
    const dst = join(scratch, 'multi-out');
    const report = await run(`oci:${multi.dir}:multi`, `oci:${dst}:m`, new RegzipTransform(), { allPlatforms: true });
    const index = JSON.parse((await blob(dst, report.root.digest)).toString());
    expect(index.manifests.map((m: { platform: unknown }) => m.platform)).toEqual(
      multi.manifests.map((m) => m.platform),
    );
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toEqual(
      report.manifests.map((m) => m.output.digest),
    );
    for (const m of index.manifests) expect((await blob(dst, m.digest)).length).toBe(m.size);
    expect(report.root.digest).not.toBe(multi.rootDigest);
  });

  it('a failing layer aborts: error names the layer, nothing committed, spool removed', async () => {
    const spoolDir = join(scratch, 'spool');
    const dst = join(scratch, 'failed');
    const err = await run(`oci:${oci.dir}:oci`, `oci:${dst}:x`, new RegzipTransform({ failAt: 1 }), { spoolDir }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      message: expect.stringMatching(/^layer 2\/3 [0-9a-f]{12}: synthetic transform failure$/),
    });
    expect(existsSync(dst)).toBe(false);
    expect(existsSync(spoolDir) ? await readdir(spoolDir) : []).toEqual([]);
  });

  it('an OCI layout sink takes spooled layer blobs over by rename, or copies them across filesystems (same blobs)', async () => {
    const digestsOf = async (dir: string) => (await readdir(join(dir, 'blobs', 'sha256'))).sort();
    // Spool on the same filesystem as the destination: renamed into place, nothing left behind.
    const spool = join(scratch, 'spool-same-fs');
    const renamed = join(scratch, 'adopt-rename');
    await run(`oci:${oci.dir}:oci`, `oci:${renamed}:out`, new RegzipTransform(), { spoolDir: spool });
    expect(await readdir(spool)).toEqual([]);
    // Spool on a tmpfs (another filesystem): rename fails with EXDEV and the blob is streamed.
    expect((await execa('stat', ['-f', '-c', '%T', '/dev/shm'])).stdout).toBe('tmpfs');
    const shmSpool = await mkdtemp('/dev/shm/esgz-spool-test-');
    const copied = join(scratch, 'adopt-copy');
    try {
      await run(`oci:${oci.dir}:oci`, `oci:${copied}:out`, new RegzipTransform(), { spoolDir: shmSpool });
      expect(await readdir(shmSpool)).toEqual([]);
    } finally {
      await rm(shmSpool, { recursive: true, force: true });
    }
    expect(await digestsOf(copied)).toEqual(await digestsOf(renamed));
    for (const digest of await digestsOf(renamed)) {
      const bytes = await readFile(join(renamed, 'blobs', 'sha256', digest));
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(digest);
    }
  });

  it('is byte-reproducible: the same transform twice gives the same digests', async () => {
    const a = await run(
      `oci:${oci.dir}:oci`,
      `oci:${join(scratch, 'repro-a')}:x`,
      new RegzipTransform({ delayFirstMs: 50 }),
      { concurrency: 3 },
    );
    const b = await run(`oci:${oci.dir}:oci`, `oci:${join(scratch, 'repro-b')}:x`, new RegzipTransform(), {
      concurrency: 1,
    });
    expect(a.root.digest).toBe(b.root.digest);
  });

  it('an abort signal stops the transfer with INTERRUPTED and commits nothing', async () => {
    const controller = new AbortController();
    controller.abort();
    const dst = join(scratch, 'aborted');
    await expect(
      run(`oci:${oci.dir}:oci`, `oci:${dst}:x`, new RegzipTransform(), { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'INTERRUPTED' });
    expect(existsSync(dst)).toBe(false);
  });

  it('aborting mid-layer destroys the in-flight source stream (no waiting for the blob to finish)', async () => {
    const controller = new AbortController();
    let chunksAfterAbort = 0;
    const transform: LayerTransform = {
      name: 'abort-midway',
      async transform(input) {
        const stream = await input.open();
        for await (const _chunk of stream) {
          if (controller.signal.aborted) chunksAfterAbort++;
          controller.abort();
        }
        throw new Error('the stream should have been destroyed');
      },
    };
    const big = await writeOciImage(join(scratch, 'big'), {
      tag: 'b',
      layers: [[{ type: 'file', path: 'big.bin', size: 8 << 20, seed: 'abort' }]],
    });
    const dst = join(scratch, 'aborted-midway');
    await expect(
      run(`oci:${big.dir}:b`, `oci:${dst}:x`, transform, { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'INTERRUPTED' });
    expect(chunksAfterAbort).toBeLessThanOrEqual(1);
    expect(existsSync(dst)).toBe(false);
  });

  it('leaves attestation manifests out of a converted index (kept by an identity copy)', async () => {
    const withAttestation = await writeOciImage(join(scratch, 'attest'), {
      tag: 'a',
      platforms: [
        ...twoPlatformImages(),
        {
          layers: [[{ type: 'file', path: 'attestation.json', content: '{}' }]],
          platform: { os: 'unknown', architecture: 'unknown' },
        },
      ],
    });
    const warnings: string[] = [];
    const converted = await run(
      `oci:${withAttestation.dir}:a`,
      `oci:${join(scratch, 'attest-conv')}:a`,
      new RegzipTransform(),
      { allPlatforms: true, onWarning: (w: string) => warnings.push(w) },
    );
    expect(converted.manifests.map((m) => m.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(warnings).toEqual([
      expect.stringContaining(`leaving out attestation manifest ${shortDigest(withAttestation.manifests[2]!.digest)}`),
    ]);
    const index = JSON.parse((await blob(join(scratch, 'attest-conv'), converted.root.digest)).toString());
    expect(index.manifests).toHaveLength(2);
    const copied = await run(
      `oci:${withAttestation.dir}:a`,
      `oci:${join(scratch, 'attest-copy')}:a`,
      identityTransform,
      { allPlatforms: true },
    );
    expect(copied.root.digest).toBe(withAttestation.rootDigest);
  });

  it('the first failing layer stops the layers still in flight and is the error reported', async () => {
    const image = await writeOciImage(join(scratch, 'stop'), {
      tag: 's',
      layers: [
        [{ type: 'file', path: 'slow.bin', size: 4 << 20, seed: 'slow' }],
        [{ type: 'file', path: 'x', content: 'x' }],
      ],
    });
    let slowOutcome = 'running';
    const transform: LayerTransform = {
      name: 'slow-and-failing',
      async transform(input) {
        if (input.index === 1) {
          await new Promise((r) => setTimeout(r, 100));
          throw new Error('layer two is broken');
        }
        try {
          for await (const _chunk of await input.open()) await new Promise((r) => setTimeout(r, 400));
          slowOutcome = 'completed';
        } catch (err) {
          slowOutcome = (err as { code?: string }).code ?? 'error';
          throw err;
        }
        return 'unchanged';
      },
    };
    const dst = join(scratch, 'stop-dst');
    await expect(run(`oci:${image.dir}:s`, `oci:${dst}:s`, transform, { concurrency: 2 })).rejects.toMatchObject({
      message: expect.stringMatching(/^layer 2\/2 .*layer two is broken$/),
    });
    // The copy did not wait for the slow layer; its source stream was destroyed under it.
    expect(slowOutcome).toBe('running');
    await new Promise((r) => setTimeout(r, 1000));
    expect(slowOutcome).toBe('INTERRUPTED');
    expect(existsSync(dst)).toBe(false);
  });

  it('warns when --platform names another platform than a single-manifest image has', async () => {
    const warnings: string[] = [];
    const report = await run(`oci:${oci.dir}:oci`, `oci:${join(scratch, 'platform-warn')}:x`, identityTransform, {
      platform: { os: 'linux', architecture: 'arm64' },
      onWarning: (w: string) => warnings.push(w),
    });
    expect(report.root.digest).toBe(oci.rootDigest);
    expect(warnings).toEqual([expect.stringContaining('the image is linux/amd64, not linux/arm64')]);
  });
});
