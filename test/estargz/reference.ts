/**
 * Reference comparison with stargz-snapshotter's `ctr-remote` 0.12 (rerunnable:
 * `npx vitest run test/estargz/reference.test.ts`). Builds an OCI archive around a generated
 * layer, converts it with `ctr-remote image convert --estargz --oci` in a private containerd,
 * exports the result and reduces both TOCs to what must agree: entry names, types, modes, sizes,
 * ownership, times, link targets, devices, xattrs, digests and chunk boundaries.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import type { JTOC } from '../../src/estargz/toc.js';
import { buildTar, dir, file, sha256Digest, type TarEntry } from '../fixtures/tar.js';
import type { RunningContainerd } from '../harness/containerd.js';

const ARCH = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;

/** An OCI image archive (what `ctr images import` reads) with one uncompressed layer. */
export async function ociArchive(layerTar: Buffer, name: string): Promise<Buffer> {
  const config = Buffer.from(JSON.stringify({ architecture: ARCH, os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Digest(layerTar)] } }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256Digest(layerTar), size: layerTar.length }],
  }));
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256Digest(manifest), size: manifest.length,
      annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.split(':').pop() },
      platform: { architecture: ARCH, os: 'linux' },
    }],
  }));
  const blob = (data: Buffer): TarEntry => file(`blobs/sha256/${sha256Digest(data).slice(7)}`, data);
  return buildTar([
    file('oci-layout', '{"imageLayoutVersion":"1.0.0"}'),
    file('index.json', index),
    dir('blobs'),
    dir('blobs/sha256'),
    blob(config),
    blob(manifest),
    blob(layerTar),
  ]);
}

/** Converts `layerTar` with ctr-remote; returns the eStargz layer blob it produced and its descriptor annotations. */
export async function convertWithCtrRemote(
  containerd: RunningContainerd,
  layerTar: Buffer,
  flags: string[],
): Promise<{ blob: Buffer; annotations: Record<string, string>; mediaType: string }> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-ref-'));
  try {
    const src = `docker.io/library/esgz-ref:src-${Date.now()}`;
    const dst = src.replace(':src-', ':esgz-');
    await writeFile(path.join(work, 'in.tar'), await ociArchive(layerTar, src));
    await containerd.ctr(['images', 'import', '--no-unpack', path.join(work, 'in.tar')]);
    await containerd.ctrRemote(['image', 'convert', '--estargz', '--oci', ...flags, src, dst]);
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

/** Puts a blob into containerd's content store and asks ctr-remote's reader for its TOC digest. */
export async function ctrRemoteTOCDigest(containerd: RunningContainerd, blob: Buffer): Promise<string> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-ref-'));
  try {
    const p = path.join(work, 'blob');
    await writeFile(p, blob);
    const digest = sha256Digest(blob);
    await execa('/usr/bin/ctr', ['-a', containerd.address, '-n', containerd.namespace, 'content', 'ingest', '--expected-size', String(blob.length), '--expected-digest', digest, `esgz-${digest}`], { inputFile: p });
    return (await containerd.ctrRemote(['image', 'get-toc-digest', digest])).trim();
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * What two writers must agree on. Offsets and innerOffsets differ (compressors and member
 * boundaries differ); userName/groupName are resolved per uid because stargz records a name
 * only when it changes and ctr-remote restarts that per parallel part.
 */
export function tocStructure(toc: JTOC): unknown[] {
  const users = new Map<number, string>();
  const groups = new Map<number, string>();
  return toc.entries.map((e) => {
    if (e.userName) users.set(e.uid ?? 0, e.userName);
    if (e.groupName) groups.set(e.gid ?? 0, e.groupName);
    if (e.type === 'chunk') return { name: e.name, type: e.type, chunkOffset: e.chunkOffset ?? 0, chunkSize: e.chunkSize ?? 0, chunkDigest: e.chunkDigest };
    return {
      name: e.name, type: e.type, size: e.size ?? 0, mode: e.mode ?? 0, uid: e.uid ?? 0, gid: e.gid ?? 0,
      user: users.get(e.uid ?? 0) ?? '', group: groups.get(e.gid ?? 0) ?? '',
      modtime: e.modtime ?? '', linkName: e.linkName ?? '', devMajor: e.devMajor ?? 0, devMinor: e.devMinor ?? 0,
      xattrs: e.xattrs ?? {}, digest: e.digest ?? '', chunkOffset: e.chunkOffset ?? 0, chunkSize: e.chunkSize ?? 0, chunkDigest: e.chunkDigest ?? '',
    };
  });
}

export async function readTOC(blob: Buffer): Promise<{ toc: JTOC; tocDigest: string; reader: EstargzReader }> {
  const reader = await EstargzReader.open(bufferBlobReader(blob));
  return { toc: reader.toc, tocDigest: reader.tocDigest, reader };
}
