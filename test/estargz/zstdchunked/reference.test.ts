// Compares esgz's zstd:chunked output with stargz-snapshotter's reference `ctr-remote` 0.12
// (`image convert --zstdchunked --oci`), in a private containerd. Gated on containerd + ctr-remote
// being installed and on running as root.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_CHECKSUM_ANNOTATION, MANIFEST_POSITION_ANNOTATION } from '../../../src/estargz/zstdchunked/codec.js';
import {
  blockDevice, buildTar, charDevice, dir, fifo, file, generatedFile, hardlink, opaque, sha256Digest, symlink, whiteout, type TarEntry,
} from '../../fixtures/tar.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../../harness/containerd.js';
import { tarNames } from '../helpers.js';
import { ociArchive, readTOC, tocStructure } from '../reference.js';
import { convertZstd, rawFooter, sha256, zstdDecompressCli } from './helpers.js';

const CHUNK = 64 * 1024;
const entries: TarEntry[] = [
  dir('etc', { uname: 'root', gname: 'root' }),
  file('etc/os-release', 'ID=esgz\n', { uname: 'root', gname: 'root' }),
  file('etc/empty', ''),
  dir('usr', { uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
  dir('usr/bin'),
  generatedFile('usr/bin/tool', 3 * CHUNK + 5, { mode: 0o755 }),
  generatedFile('usr/bin/exact', 2 * CHUNK, { compressible: true }),
  generatedFile('usr/bin/small', 1000, { uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
  symlink('usr/bin/sh', 'tool'),
  hardlink('usr/bin/tool2', 'usr/bin/tool'),
  dir('dev'),
  charDevice('dev/null', 1, 3),
  blockDevice('dev/loop0', 7, 0),
  fifo('dev/fifo'),
  file('usr/bin/caps', 'cap', { xattrs: { 'user.comment': 'hello', 'security.capability': Buffer.from([1, 0, 0, 2, 0, 32, 0, 0]) } }),
  file(`usr/${'long-directory-name-'.repeat(6)}/${'f'.repeat(110)}`, 'long'),
  whiteout('etc/gone'),
  dir('var'),
  opaque('var'),
];

/** Converts `layerTar` with `ctr-remote image convert --zstdchunked --oci`; returns the layer blob and descriptor. */
async function ctrRemoteZstdChunked(
  containerd: RunningContainerd,
  layerTar: Buffer,
  flags: string[],
): Promise<{ blob: Buffer; annotations: Record<string, string>; mediaType: string }> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-zref-'));
  try {
    const src = `docker.io/library/esgz-zref:src-${Date.now()}`;
    const dst = src.replace(':src-', ':zstd-');
    await writeFile(path.join(work, 'in.tar'), await ociArchive(layerTar, src));
    await containerd.ctr(['images', 'import', '--no-unpack', path.join(work, 'in.tar')]);
    await containerd.ctrRemote(['image', 'convert', '--zstdchunked', '--oci', ...flags, src, dst]);
    await containerd.ctr(['images', 'export', path.join(work, 'out.tar'), dst]);
    const outDir = path.join(work, 'out');
    await execa('mkdir', ['-p', outDir]);
    await execa('tar', ['-x', '-C', outDir, '-f', path.join(work, 'out.tar')]);
    const readBlob = (digest: string) => readFile(path.join(outDir, 'blobs', 'sha256', digest.replace('sha256:', '')));
    const index = JSON.parse(await readFile(path.join(outDir, 'index.json'), 'utf8'));
    let manifest = JSON.parse((await readBlob(index.manifests[0].digest)).toString());
    if (manifest.manifests) manifest = JSON.parse((await readBlob(manifest.manifests[0].digest)).toString());
    const layer = manifest.layers[0];
    return { blob: await readBlob(layer.digest), annotations: layer.annotations ?? {}, mediaType: layer.mediaType };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Ingests a blob into containerd and asks ctr-remote's zstd:chunked reader for its TOC digest. */
async function ctrRemoteZstdTOCDigest(containerd: RunningContainerd, blob: Buffer): Promise<string> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-zref-'));
  try {
    const p = path.join(work, 'blob');
    await writeFile(p, blob);
    const digest = sha256Digest(blob);
    await execa('/usr/bin/ctr', ['-a', containerd.address, '-n', containerd.namespace, 'content', 'ingest', '--expected-size', String(blob.length), '--expected-digest', digest, `esgz-${digest}`], { inputFile: p });
    return (await containerd.ctrRemote(['image', 'get-toc-digest', '--zstdchunked', digest])).trim();
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

describe.skipIf(!containerdAvailable())('zstd:chunked reference comparison with ctr-remote 0.12', () => {
  let containerd: RunningContainerd;
  let tar: Buffer;

  beforeAll(async () => {
    containerd = await startContainerd({ namespace: 'esgz-zstd' });
    tar = await buildTar(entries);
  });
  afterAll(async () => {
    await containerd?.stop();
  });

  it('same TOC structure, media type and annotation names at the same chunk size', async () => {
    const ref = await ctrRemoteZstdChunked(containerd, tar, ['--estargz-chunk-size', String(CHUNK)]);
    const ours = await convertZstd(tar, { chunkSize: CHUNK });
    const refTOC = await readTOC(ref.blob);
    const ourTOC = await readTOC(ours.blob);
    expect(ref.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
    expect(refTOC.reader.codec.name).toBe('zstd');
    // landmark + every input entry + 3 extra chunks of usr/bin/tool + 1 of usr/bin/exact
    expect(refTOC.toc.entries).toHaveLength(entries.length + 1 + 4);
    expect(tocStructure(ourTOC.toc)).toEqual(tocStructure(refTOC.toc));
    // Both decompress (`zstd -dc`) to tars listing the same entries.
    expect(tarNames(zstdDecompressCli(ours.blob))).toEqual(tarNames(zstdDecompressCli(ref.blob)));

    // ctr-remote's descriptor annotations are what our reader and our footer reading compute for its blob.
    expect(ref.annotations['containerd.io/snapshot/stargz/toc.digest']).toBe(refTOC.tocDigest);
    const f = rawFooter(ref.blob);
    expect(f.magic).toBe('GnUlInUx');
    expect(ref.annotations[MANIFEST_POSITION_ANNOTATION]).toBe(`${f.offset}:${f.compressed}:${f.uncompressed}:1`);
    expect(ref.annotations[MANIFEST_CHECKSUM_ANNOTATION]).toBe(sha256(ref.blob.subarray(Number(f.offset), Number(f.offset + f.compressed))));
    // ... and the same annotation keys as ours (toc.digest and uncompressed-size come from the transform).
    const ourKeys = [...Object.keys(ours.result.codecAnnotations), 'containerd.io/snapshot/stargz/toc.digest', 'io.containers.estargz.uncompressed-size'];
    expect(ourKeys.sort()).toEqual(Object.keys(ref.annotations).sort());
    await refTOC.reader.verifyAll();
  });

  it('same structure at the default chunk size with a file larger than 4 MiB', async () => {
    const bigTar = await buildTar([dir('data'), generatedFile('data/blob', 9 * 1024 * 1024 + 17), file('data/note', 'n')]);
    const ref = await ctrRemoteZstdChunked(containerd, bigTar, []);
    const ours = await convertZstd(bigTar, {});
    expect(tocStructure((await readTOC(ours.blob)).toc)).toEqual(tocStructure((await readTOC(ref.blob)).toc));
  });

  it('prioritized files (record-in) give the same order and the same .prefetch.landmark', async () => {
    const paths = ['/usr/bin/tool', '/etc/os-release', '/not/in/the/layer'];
    const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-zref-'));
    try {
      const record = path.join(work, 'record.json');
      await writeFile(record, paths.map((p) => JSON.stringify({ path: p, manifestDigest: 'sha256:' + '0'.repeat(64), layerIndex: 0 })).join('\n') + '\n');
      const ref = await ctrRemoteZstdChunked(containerd, tar, ['--estargz-chunk-size', String(CHUNK), '--estargz-record-in', record]);
      const ours = await convertZstd(tar, { chunkSize: CHUNK, prioritizedFiles: paths });
      const refTOC = (await readTOC(ref.blob)).toc;
      const ourTOC = (await readTOC(ours.blob)).toc;
      expect(ourTOC.entries.map((e) => e.name)).toContain('.prefetch.landmark');
      expect(ourTOC.entries.map((e) => e.name)).not.toContain('.no.prefetch.landmark');
      expect(tocStructure(ourTOC)).toEqual(tocStructure(refTOC));
      expect(ours.result.missedPrioritizedFiles).toEqual(['/not/in/the/layer']);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("ctr-remote's zstd:chunked reader (get-toc-digest --zstdchunked) accepts esgz blobs", async () => {
    const ours = await convertZstd(tar, { chunkSize: CHUNK });
    expect(await ctrRemoteZstdTOCDigest(containerd, ours.blob)).toBe(ours.result.tocDigest);
    const bare = await convertZstd(tar, { chunkSize: CHUNK, endOfArchive: false });
    expect(await ctrRemoteZstdTOCDigest(containerd, bare.blob)).toBe(bare.result.tocDigest);
  });
});
