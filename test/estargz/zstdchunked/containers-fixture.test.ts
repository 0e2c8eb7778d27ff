// A layer built to current containers/storage's zstd:chunked layout by an independent fixture
// writer (test/fixtures/containers-zstd.ts: frame per header and per chunk, zeros chunks, endOffset,
// TOC v1 + tar-split, 64-byte footer, io.github keys only) is read lazily like podman's own: the
// reader verifies it against the io.github manifest checksum; rpull fetches footer + TOC only
// (Range requests), run reads the files, verify names the dialect.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EstargzReader, bufferBlobReader } from '../../../src/estargz/reader.js';
import { tocVerification } from '../../../src/estargz/zstdchunked/dialect.js';
import { containersZstdChunked, GITHUB_CHECKSUM } from '../../fixtures/containers-zstd.js';
import { busyboxRootfs, writeOciImage } from '../../fixtures/oci-image.js';
import { buildTar, dir, file, generatedBuffer } from '../../fixtures/tar.js';
import { esgz } from '../../harness/cli.js';
import { startFaultProxy, type FaultProxy } from '../../harness/fault-proxy.js';
import { registryAddress } from '../../harness/registry.js';
import { sha256, zstdDecompressCli } from './helpers.js';

const BIG = generatedBuffer(200 * 1024 + 3, 'containers-fixture');
const SPARSE = Buffer.concat([Buffer.from('head'), Buffer.alloc(100_000), Buffer.from('tail')]);
const dataLayer = [dir('data'), file('data/big', BIG), file('data/sparse', SPARSE), file('data/note', 'from c/s\n')];

describe('a layer in current containers/storage zstd:chunked layout', () => {
  it('is read and verified against the io.github manifest checksum, zeros chunks included', async () => {
    const tar = await buildTar(dataLayer);
    const layer = containersZstdChunked(tar, 32 * 1024);
    expect(sha256(zstdDecompressCli(layer.blob))).toBe(layer.diffID);
    const reader = await EstargzReader.open(bufferBlobReader(layer.blob), tocVerification(layer.annotations));
    expect(reader.footer.kind).toBe('zstdchunked-containers');
    expect(reader.chunks('data/sparse').length).toBeGreaterThan(2);
    expect(reader.toc.entries.some((e) => (e as { chunkType?: string }).chunkType === 'zeros')).toBe(true);
    expect((await reader.readFile('data/big')).equals(BIG)).toBe(true);
    expect((await reader.readFile('data/sparse')).equals(SPARSE)).toBe(true);
    await reader.verifyAll();
    const forged = { ...layer.annotations, [GITHUB_CHECKSUM]: sha256(Buffer.from('other')) };
    await expect(EstargzReader.open(bufferBlobReader(layer.blob), tocVerification(forged))).rejects.toThrow(
      /does not match the manifest checksum/,
    );
  });
});

describe('esgz pulls and runs a containers/storage-layout image lazily', () => {
  let work: string;
  let proxy: FaultProxy;

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'esgz-containers-fixture-'));
    proxy = await startFaultProxy(registryAddress());
  });

  afterAll(async () => {
    await proxy?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('rpull fetches footer + TOC per layer, run reads the files, verify says containers', async () => {
    const layers = [];
    for (const entries of [busyboxRootfs(), dataLayer]) {
      const layer = containersZstdChunked(await buildTar(entries));
      layers.push({ ...layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' });
    }
    const layout = path.join(work, 'layout');
    await writeOciImage(layout, { tag: 'cs', layers, config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } });
    const name = `esgz-test/containers-fixture:${Date.now()}`;
    await execa('skopeo', [
      ...['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false'],
      ...[`oci:${layout}:cs`, `docker://${registryAddress()}/${name}`],
    ]);
    const reference = `${proxy.address}/${name}`;
    const verified = await esgz('image', 'verify', '--plain-http', '--json', reference);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
    const report = JSON.parse(verified.stdout) as { manifests: Array<{ layers: Array<{ dialect: string }> }> };
    expect(report.manifests[0]!.layers.map((l) => l.dialect)).toEqual(['containers', 'containers']);

    const root = path.join(work, 'state');
    proxy.clearLog();
    const pulled = await esgz('image', 'rpull', '--plain-http', '--root', root, '--json', reference);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const pull = JSON.parse(pulled.stdout) as { layers: Array<{ kind: string; size: number; fetchedBytes: number }> };
    expect(pull.layers.map((l) => l.kind)).toEqual(['lazy', 'lazy']);
    for (const l of pull.layers) expect(l.fetchedBytes).toBeLessThan(l.size / 2);
    // Every layer request is a Range request (footer, TOC): never a whole layer.
    const layerDigests = layers.map((l) => sha256(l.blob));
    const layerRequests = proxy.log.filter((e) => layerDigests.some((d) => e.path.includes(`/blobs/${d}`)));
    expect(layerRequests.length).toBeGreaterThan(0);
    for (const r of layerRequests) expect(r.headers.range).toMatch(/^bytes=\d+-\d+$/);

    const ran = await esgz(
      ...['run', '--rm', '--root', root, reference, 'c1', 'sh', '-c'],
      'cat /data/note; busybox sha256sum /data/sparse /data/big',
    );
    expect(ran.exitCode, ran.stderr).toBe(0);
    expect(ran.stdout).toContain('from c/s');
    expect(ran.stdout).toContain(`${sha256(SPARSE).slice(7)}  /data/sparse`);
    expect(ran.stdout).toContain(`${sha256(BIG).slice(7)}  /data/big`);
  }, 300_000);
});
