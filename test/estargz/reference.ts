/**
 * Reference comparison with stargz-snapshotter's `ctr-remote` 0.12 (rerunnable:
 * `npx vitest run test/estargz/reference.test.ts`). Builds an OCI archive around a generated
 * layer, converts it with `ctr-remote image convert --estargz --oci` in a private containerd,
 * exports the result and reduces both TOCs to what must agree: entry names, types, modes, sizes,
 * ownership, times, link targets, devices, xattrs, digests and chunk boundaries.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import type { JTOC } from '../../src/estargz/toc.js';
import { writeOciImage } from '../fixtures/oci-image.js';
import { sha256Digest } from '../fixtures/tar.js';
import type { RunningContainerd } from '../harness/containerd.js';
import { readLayoutBlob, readOciLayout } from '../fixtures/oci-layout.js';

const ARCH = ({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch;

/** An OCI image archive (what `ctr images import` reads) with one uncompressed layer, named `name`. */
export async function ociArchive(layerTar: Buffer, name: string): Promise<Buffer> {
  const layout = await mkdtemp(path.join(os.tmpdir(), 'esgz-ref-layout-'));
  try {
    await writeOciImage(layout, {
      tag: name.split(':').pop(),
      indexAnnotations: { 'io.containerd.image.name': name },
      compression: 'none',
      platform: { os: 'linux', architecture: ARCH },
      layers: [layerTar],
    });
    const archive = await execa('tar', ['-c', '-C', layout, '-f', '-', 'oci-layout', 'index.json', 'blobs'], {
      encoding: 'buffer',
      // The bench images' layers (test/estargz/bench-image-toc.test.ts) are hundreds of MB.
      maxBuffer: 2 ** 31,
    });
    return Buffer.from(archive.stdout);
  } finally {
    await rm(layout, { recursive: true, force: true });
  }
}

/** A layer as ctr-remote wrote it: the blob and its descriptor's media type and annotations. */
export interface CtrRemoteLayer {
  blob: Buffer;
  annotations: Record<string, string>;
  mediaType: string;
}

/**
 * Converts `layerTar` with `ctr-remote image convert --oci FLAGS` (FLAGS name the codec:
 * `--estargz` or `--zstdchunked`); `recordIn` is the content of an `--estargz-record-in` file.
 */
export async function convertWithCtrRemote(
  containerd: RunningContainerd,
  layerTar: Buffer,
  flags: string[],
  options: { recordIn?: string } = {},
): Promise<CtrRemoteLayer> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-ref-'));
  try {
    const src = `docker.io/library/esgz-ref:src-${Date.now()}`;
    const dst = src.replace(':src-', ':converted-');
    const recordFlags = [];
    if (options.recordIn !== undefined) {
      await writeFile(path.join(work, 'record.json'), options.recordIn);
      recordFlags.push('--estargz-record-in', path.join(work, 'record.json'));
    }
    await writeFile(path.join(work, 'in.tar'), await ociArchive(layerTar, src));
    await containerd.ctr(['images', 'import', '--no-unpack', path.join(work, 'in.tar')]);
    await containerd.ctrRemote(['image', 'convert', '--oci', ...flags, ...recordFlags, src, dst]);
    await containerd.ctr(['images', 'export', path.join(work, 'out.tar'), dst]);
    const outDir = path.join(work, 'out');
    await execa('mkdir', ['-p', outDir]);
    await execa('tar', ['-x', '-C', outDir, '-f', path.join(work, 'out.tar')]);
    const { manifests } = readOciLayout(outDir);
    const layer = manifests[0]!.manifest.layers[0]!;
    return {
      blob: readLayoutBlob(outDir, layer.digest),
      annotations: layer.annotations ?? {},
      mediaType: layer.mediaType,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Puts a blob into containerd's content store and asks ctr-remote's reader for its TOC digest
 * (`flags`: `--zstdchunked` for that reader).
 */
export async function ctrRemoteTOCDigest(
  containerd: RunningContainerd,
  blob: Buffer,
  flags: string[] = [],
): Promise<string> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'esgz-ref-'));
  try {
    const p = path.join(work, 'blob');
    await writeFile(p, blob);
    const digest = sha256Digest(blob);
    const ingest = [
      'content',
      'ingest',
      '--expected-size',
      String(blob.length),
      '--expected-digest',
      digest,
      `esgz-${digest}`,
    ];
    // containerd may garbage-collect an unreferenced blob between the ingest and the read (seen
    // in CI: "content digest … not found"); ingest again then, a few times.
    for (let attempt = 1; ; attempt++) {
      await execa('/usr/bin/ctr', ['-a', containerd.address, '-n', containerd.namespace, ...ingest], { inputFile: p });
      try {
        return (await containerd.ctrRemote(['image', 'get-toc-digest', ...flags, digest])).trim();
      } catch (err) {
        if (attempt >= 3 || !/not found/.test(String(err))) throw err;
      }
    }
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
    if (e.type === 'chunk')
      return {
        name: e.name,
        type: e.type,
        chunkOffset: e.chunkOffset ?? 0,
        chunkSize: e.chunkSize ?? 0,
        chunkDigest: e.chunkDigest,
      };
    return {
      name: e.name,
      type: e.type,
      size: e.size ?? 0,
      mode: e.mode ?? 0,
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      user: users.get(e.uid ?? 0) ?? '',
      group: groups.get(e.gid ?? 0) ?? '',
      modtime: e.modtime ?? '',
      linkName: e.linkName ?? '',
      devMajor: e.devMajor ?? 0,
      devMinor: e.devMinor ?? 0,
      xattrs: e.xattrs ?? {},
      digest: e.digest ?? '',
      chunkOffset: e.chunkOffset ?? 0,
      chunkSize: e.chunkSize ?? 0,
      chunkDigest: e.chunkDigest ?? '',
    };
  });
}

export async function readTOC(blob: Buffer): Promise<{ toc: JTOC; tocDigest: string; reader: EstargzReader }> {
  const reader = await EstargzReader.open(bufferBlobReader(blob));
  return { toc: reader.toc, tocDigest: reader.tocDigest, reader };
}
