/** Shared helpers for the snapshotter tests: build eStargz layers, walk trees, read xattrs. */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { execa } from 'execa';
import { createCodec, createMemberPool } from '../../src/estargz/codecs.js';
import { writeEstargz, type EstargzWriteResult } from '../../src/estargz/writer.js';

/** Converts an uncompressed tar into an eStargz blob (gzip) in memory. */
export async function toEstargz(tar: Buffer, options: { chunkSize?: number; prioritizedFiles?: string[]; codec?: 'gzip' | 'zstd'; externalTOC?: boolean } = {}): Promise<{ blob: Buffer; result: EstargzWriteResult }> {
  // ctr-remote --estargz-external-toc: the blob ends in an external-TOC footer, the TOC member comes back in the result.
  const codec = createCodec(options.codec ?? 'gzip', { externalTOC: options.externalTOC });
  const compressor = createMemberPool(codec.name, { workers: 1 });
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  });
  try {
    const result = await writeEstargz((async function* () { yield tar; })(), out, {
      codec,
      compressor,
      chunkSize: options.chunkSize,
      prioritizedFiles: options.prioritizedFiles,
    });
    return { blob: Buffer.concat(parts), result };
  } finally {
    await compressor.close();
  }
}

export interface WalkedEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  mtime?: number;
  target?: string;
  rdev?: number;
  sha256?: string;
  nlink?: number;
  ino: number;
  xattrs: Record<string, string>;
}

function typeOf(st: import('node:fs').Stats): string {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'reg';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'other';
}

/** Every xattr of `path` (not following symlinks) as name → base64, read by getfattr (an independent tool). */
export async function xattrsOf(path: string): Promise<Record<string, string>> {
  const r = await execa('getfattr', ['--absolute-names', '-h', '-d', '-m', '-', '-e', 'base64', path], { reject: false });
  const out: Record<string, string> = {};
  for (const line of String(r.stdout).split('\n')) {
    const m = /^([^#=][^=]*)=0s(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Walks a tree with node's fs (lstat, readlink, readFile) and getfattr. */
export async function walkTree(root: string): Promise<Map<string, WalkedEntry>> {
  const out = new Map<string, WalkedEntry>();
  const visit = async (rel: string) => {
    const full = rel === '' ? root : join(root, rel);
    const st = await lstat(full);
    const type = typeOf(st);
    const entry: WalkedEntry = { path: rel, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, ino: st.ino, xattrs: await xattrsOf(full) };
    entry.mtime = Math.floor(st.mtimeMs / 1000);
    if (type === 'reg') {
      entry.size = st.size;
      entry.nlink = st.nlink;
      entry.sha256 = createHash('sha256').update(await readFile(full)).digest('hex');
    }
    if (type === 'symlink') entry.target = await readlink(full);
    if (type === 'char' || type === 'block') entry.rdev = st.rdev;
    out.set(rel, entry);
    if (type === 'dir') for (const name of (await readdir(full)).sort()) await visit(rel === '' ? name : `${rel}/${name}`);
  };
  await visit('');
  return out;
}

/** Pushes an image whose layers are converted to eStargz here, straight to a registry (plain HTTP). */
export async function pushEstargzImage(
  reference: string,
  layerTars: Buffer[],
  imageConfig: Record<string, unknown>,
  options: { prioritizedFiles?: string[][]; tocAnnotation?: (real: string) => string; chunkSize?: number; codec?: 'gzip' | 'zstd'; externalTOC?: boolean; plainGzipLayers?: number[] } = {},
): Promise<{ manifestDigest: string; manifestSize: number; layerDigests: string[] }> {
  const { MediaType } = await import('../../src/oci/media-types.js');
  const { TOC_DIGEST_ANNOTATION } = await import('../../src/estargz/constants.js');
  const { openSink } = await import('../../src/image/transports/index.js');
  const { readableOf } = await import('../../src/image/compression.js');
  const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const layers: Array<{ blob: Buffer; tocBlob?: Buffer; desc: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }; diffID: string }> = [];
  for (const [i, tar] of layerTars.entries()) {
    if (options.plainGzipLayers?.includes(i)) {
      // An ordinary tar+gzip layer (zlib, one member, no TOC): not lazily pullable.
      const { gzipSync } = await import('node:zlib');
      const blob = gzipSync(tar);
      layers.push({ blob, diffID: digestOf(tar), desc: { mediaType: MediaType.ociLayerGzip, digest: digestOf(blob), size: blob.length, annotations: {} } });
      continue;
    }
    const { blob, result } = await toEstargz(tar, { prioritizedFiles: options.prioritizedFiles?.[i], chunkSize: options.chunkSize, codec: options.codec, externalTOC: options.externalTOC });
    const toc = options.tocAnnotation ? options.tocAnnotation(result.tocDigest) : result.tocDigest;
    const mediaType = options.codec === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip;
    layers.push({ blob, diffID: result.diffID, tocBlob: result.externalTOC, desc: { mediaType, digest: digestOf(blob), size: blob.length, annotations: { ...result.codecAnnotations, [TOC_DIGEST_ANNOTATION]: toc } } });
  }
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', ...imageConfig, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) } }));
  const configDesc = { mediaType: MediaType.ociConfig, digest: digestOf(config), size: config.length };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDesc, layers: layers.map((l) => l.desc) }));
  const sink = await openSink(reference, { plainHttp: true });
  try {
    for (const l of layers) await sink.putBlob(l.desc, () => readableOf(l.blob));
    await sink.putBlob(configDesc, () => readableOf(config));
    await sink.commit({ bytes: manifest, mediaType: MediaType.ociManifest, digest: digestOf(manifest) });
  } catch (err) {
    await sink.abort();
    throw err;
  }
  if (options.externalTOC) {
    // The TOC image, as ctr-remote lays it out: same repository, tag + "-esgztoc", one layer per
    // TOC naming the layer it describes (written by the converter's own writer).
    const { tocImageReference, writeExternalTOCImage } = await import('../../src/convert/external-toc.js');
    const tocs = new Map(layers.map((l) => [l.desc.digest, l.tocBlob!]));
    await writeExternalTOCImage(await openSink(tocImageReference(reference), { plainHttp: true }), tocs);
  }
  return { manifestDigest: digestOf(manifest), manifestSize: manifest.length, layerDigests: layers.map((l) => l.desc.digest) };
}

/** Pushes an OCI index naming already pushed manifests, with their platforms. */
export async function pushIndex(reference: string, manifests: Array<{ digest: string; size: number; platform: { os: string; architecture: string } }>): Promise<void> {
  const { MediaType } = await import('../../src/oci/media-types.js');
  const { openSink } = await import('../../src/image/transports/index.js');
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: manifests.map((m) => ({ mediaType: MediaType.ociManifest, ...m })) }));
  const sink = await openSink(reference, { plainHttp: true });
  await sink.commit({ bytes: index, mediaType: MediaType.ociIndex, digest: `sha256:${createHash('sha256').update(index).digest('hex')}` });
}
