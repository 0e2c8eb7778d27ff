/** Shared helpers for the snapshotter tests: build eStargz layers, walk trees, read xattrs. */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { createCodec, createMemberPool } from '../../src/estargz/codecs.js';
import { writeEstargz, type EstargzWriteResult } from '../../src/estargz/writer.js';
import { TOC_DIGEST_ANNOTATION } from '../../src/estargz/constants.js';
import { tocImageReference, writeExternalTOCImage } from '../../src/convert/external-toc.js';
import { openSink } from '../../src/image/transports/index.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { PreparedLayer } from '../fixtures/oci-image.js';
import { pushOciImage } from '../fixtures/oci-push.js';
import { sha256Digest } from '../fixtures/tar.js';

/** Converts an uncompressed tar into an eStargz blob (gzip) in memory. */
export async function toEstargz(
  tar: Buffer,
  options: { chunkSize?: number; prioritizedFiles?: string[]; codec?: 'gzip' | 'zstd'; externalTOC?: boolean } = {},
): Promise<{ blob: Buffer; result: EstargzWriteResult }> {
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
    const result = await writeEstargz(
      (async function* () {
        yield tar;
      })(),
      out,
      {
        codec,
        compressor,
        chunkSize: options.chunkSize,
        prioritizedFiles: options.prioritizedFiles,
      },
    );
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
  const r = await execa('getfattr', ['--absolute-names', '-h', '-d', '-m', '-', '-e', 'base64', path], {
    reject: false,
  });
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
    const entry: WalkedEntry = {
      path: rel,
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      ino: st.ino,
      xattrs: await xattrsOf(full),
    };
    entry.mtime = Math.floor(st.mtimeMs / 1000);
    if (type === 'reg') {
      entry.size = st.size;
      entry.nlink = st.nlink;
      entry.sha256 = createHash('sha256')
        .update(await readFile(full))
        .digest('hex');
    }
    if (type === 'symlink') entry.target = await readlink(full);
    if (type === 'char' || type === 'block') entry.rdev = st.rdev;
    out.set(rel, entry);
    if (type === 'dir')
      for (const name of (await readdir(full)).sort()) await visit(rel === '' ? name : `${rel}/${name}`);
  };
  await visit('');
  return out;
}

export interface EstargzPushOptions {
  prioritizedFiles?: string[][];
  tocAnnotation?: (real: string) => string;
  chunkSize?: number;
  codec?: 'gzip' | 'zstd';
  externalTOC?: boolean;
  /** Layers (by index) pushed as ordinary tar+gzip (zlib, one member, no TOC): not lazily pullable. */
  plainGzipLayers?: number[];
}

/** Converts layer `i` of an image for pushOciImage; also returns the external TOC blob when there is one. */
export async function estargzLayer(
  tar: Buffer,
  i: number,
  options: EstargzPushOptions,
): Promise<{ layer: PreparedLayer; externalTOC?: Buffer }> {
  if (options.plainGzipLayers?.includes(i)) {
    return { layer: { blob: gzipSync(tar), mediaType: MediaType.ociLayerGzip, diffID: sha256Digest(tar) } };
  }
  const { chunkSize, codec, externalTOC } = options;
  const { blob, result } = await toEstargz(tar, {
    prioritizedFiles: options.prioritizedFiles?.[i],
    chunkSize,
    codec,
    externalTOC,
  });
  const toc = options.tocAnnotation ? options.tocAnnotation(result.tocDigest) : result.tocDigest;
  const mediaType = codec === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip;
  const annotations = { ...result.codecAnnotations, [TOC_DIGEST_ANNOTATION]: toc };
  return { layer: { blob, mediaType, diffID: result.diffID, annotations }, externalTOC: result.externalTOC };
}

/**
 * Pushes an image whose layers are converted to eStargz here, straight to a registry (plain
 * HTTP). `image` gives the config's architecture (default amd64) and `config` object.
 */
export async function pushEstargzImage(
  reference: string,
  layerTars: Buffer[],
  image: { architecture?: string; config?: Record<string, unknown> },
  options: EstargzPushOptions = {},
): Promise<{ manifestDigest: string; manifestSize: number; layerDigests: string[] }> {
  const converted = await Promise.all(layerTars.map((tar, i) => estargzLayer(tar, i, options)));
  const platform = { os: 'linux', architecture: image.architecture ?? 'amd64' };
  const pushed = await pushOciImage(reference, {
    platform,
    config: image.config,
    layers: converted.map((c) => c.layer),
  });
  const [manifest] = pushed.manifests;
  if (options.externalTOC) {
    // The TOC image, as ctr-remote lays it out: same repository, tag + "-esgztoc", one layer per
    // TOC naming the layer it describes (written by the converter's own writer).
    const tocs = new Map(converted.map(({ externalTOC }, i) => [manifest!.layers[i]!.digest, externalTOC!]));
    await writeExternalTOCImage(await openSink(tocImageReference(reference), { plainHttp: true }), tocs);
  }
  return {
    manifestDigest: manifest!.digest,
    manifestSize: manifest!.size,
    layerDigests: manifest!.layers.map((l) => l.digest),
  };
}
