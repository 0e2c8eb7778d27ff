/**
 * The state root of lazy pull (default /var/lib/esgz, `--root`):
 *
 *   images/<sha256 of the reference>.json   one record per pulled reference (written last, by rename)
 *   blobs/sha256/<hex>                      manifest and config bytes, stored only after their digest checked
 *   layers/sha256/<hex>/meta.bin + meta.json the footer and TOC bytes of a lazy layer, as fetched (so `run`
 *                                            re-opens the TOC, re-verifying it, without a request)
 *   layers/sha256/<hex>/fs/                 a layer that is not lazily pullable, unpacked in overlay form
 *   chunks/sha256/ab/<hex>                  the chunk cache (cache.ts)
 *   containers/<id>/                        a running (or kept, without --rm) container's upper dir and bundle
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError } from '../errors.js';
import type { BlobReader } from '../estargz/reader.js';

export const DEFAULT_STATE_ROOT = '/var/lib/esgz';

export interface LayerRecord {
  digest: string;
  mediaType: string;
  size: number;
  /** 'lazy': served through FUSE from its TOC; 'unpacked': fully downloaded into layers/…/fs. */
  kind: 'lazy' | 'unpacked';
  /** The verified TOC digest (lazy layers). */
  tocDigest?: string;
  /** Blob offset of the prefetch landmark, when the layer has prioritized files. */
  prefetchEnd?: number;
}

export interface ImageRecord {
  /** The reference as given, normalised (registry/repo:tag). */
  reference: string;
  /** Repository reference the blobs are read from (registry/repo). */
  repository: string;
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  platform?: string;
  layers: LayerRecord[];
  plainHttp: boolean;
  insecure: boolean;
  pulledAt: string;
}

function hexOf(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new EsgzError('BAD_FORMAT', `unsupported digest ${JSON.stringify(digest)} (only sha256)`);
  return m[1]!;
}

/** Writes a file under a temp name and renames it into place. */
export async function writeFileAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class StateRoot {
  constructor(readonly root: string = DEFAULT_STATE_ROOT) {}

  get chunksRoot(): string {
    return this.root;
  }

  private imagePath(reference: string): string {
    return join(this.root, 'images', `${createHash('sha256').update(reference).digest('hex')}.json`);
  }

  blobPath(digest: string): string {
    return join(this.root, 'blobs', 'sha256', hexOf(digest));
  }

  layerDir(digest: string): string {
    return join(this.root, 'layers', 'sha256', hexOf(digest));
  }

  containersDir(): string {
    return join(this.root, 'containers');
  }

  async init(): Promise<void> {
    for (const d of ['images', 'blobs/sha256', 'layers/sha256', 'chunks/sha256', 'containers']) {
      await mkdir(join(this.root, d), { recursive: true }).catch((err: NodeJS.ErrnoException) => {
        throw new EsgzError('RUNTIME', `cannot create the state root ${this.root}: ${err.message}`, { cause: err });
      });
    }
  }

  /** Stores bytes whose digest the caller verified (checked again here: nothing unverified lands). */
  async putBlob(digest: string, data: Buffer): Promise<void> {
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest) throw new EsgzError('DIGEST_MISMATCH', `state root: bytes for ${digest} have digest ${actual}`);
    await writeFileAtomic(this.blobPath(digest), data);
  }

  async getBlob(digest: string): Promise<Buffer> {
    const data = await readFile(this.blobPath(digest)).catch(() => {
      throw new EsgzError('NOT_FOUND', `state root ${this.root}: blob ${digest} is missing (pull the image again)`);
    });
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest) throw new EsgzError('DIGEST_MISMATCH', `state root ${this.root}: blob ${digest} is damaged (digest ${actual}); pull the image again`);
    return data;
  }

  /**
   * Saves the byte ranges read while opening a lazy layer (footer and TOC) and, for a layer whose
   * TOC lives in a separate TOC image, that TOC blob.
   */
  async putLayerMeta(digest: string, ranges: Array<{ offset: number; data: Buffer }>, externalTOC?: Buffer): Promise<void> {
    const dir = this.layerDir(digest);
    await mkdir(dir, { recursive: true });
    const index = { ranges: ranges.map((r) => ({ offset: r.offset, length: r.data.length })), externalTOC: externalTOC !== undefined };
    if (externalTOC) await writeFileAtomic(join(dir, 'external-toc'), externalTOC);
    await writeFileAtomic(join(dir, 'meta.bin'), Buffer.concat(ranges.map((r) => r.data)));
    await writeFileAtomic(join(dir, 'meta.json'), JSON.stringify(index));
  }

  async getLayerMeta(digest: string): Promise<{ ranges: Array<{ offset: number; data: Buffer }>; externalTOC?: Buffer } | undefined> {
    const dir = this.layerDir(digest);
    try {
      const index = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as { ranges: Array<{ offset: number; length: number }>; externalTOC: boolean };
      const bin = await readFile(join(dir, 'meta.bin'));
      let at = 0;
      const ranges = index.ranges.map((r) => {
        const data = bin.subarray(at, at + r.length);
        at += r.length;
        return { offset: r.offset, data };
      });
      return index.externalTOC ? { ranges, externalTOC: await readFile(join(dir, 'external-toc')) } : { ranges };
    } catch {
      return undefined;
    }
  }

  unpackedDir(digest: string): string {
    return join(this.layerDir(digest), 'fs');
  }

  async hasUnpacked(digest: string): Promise<boolean> {
    return stat(join(this.layerDir(digest), 'fs.done')).then(
      () => true,
      () => false,
    );
  }

  async markUnpacked(digest: string): Promise<void> {
    await writeFileAtomic(join(this.layerDir(digest), 'fs.done'), '');
  }

  async putImage(record: ImageRecord): Promise<void> {
    await writeFileAtomic(this.imagePath(record.reference), `${JSON.stringify(record, null, 2)}\n`);
  }

  async getImage(reference: string): Promise<ImageRecord | undefined> {
    try {
      return JSON.parse(await readFile(this.imagePath(reference), 'utf8')) as ImageRecord;
    } catch {
      return undefined;
    }
  }

  async listImages(): Promise<ImageRecord[]> {
    const names = await readdir(join(this.root, 'images')).catch(() => [] as string[]);
    const out: ImageRecord[] = [];
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      try {
        out.push(JSON.parse(await readFile(join(this.root, 'images', name), 'utf8')) as ImageRecord);
      } catch {
        // A record that does not parse is not an image; prune removes nothing it cannot attribute.
      }
    }
    return out.sort((a, b) => a.reference.localeCompare(b.reference));
  }

  async removeImage(reference: string): Promise<boolean> {
    const path = this.imagePath(reference);
    const existed = await stat(path).then(
      () => true,
      () => false,
    );
    await rm(path, { force: true });
    return existed;
  }

  /**
   * Removes blobs, layer metadata, unpacked layers and cached chunks no image record refers to.
   * Chunks are attributed through each lazy layer's TOC (re-read from the stored metadata).
   */
  async prune(chunkDigestsInUse: Set<string>): Promise<{ blobs: number; layers: number; chunks: number; bytes: number }> {
    const images = await this.listImages();
    const blobs = new Set<string>();
    const layers = new Set<string>();
    for (const img of images) {
      blobs.add(img.manifestDigest);
      blobs.add(img.configDigest);
      for (const l of img.layers) layers.add(l.digest);
    }
    let removedBlobs = 0;
    let removedLayers = 0;
    let removedChunks = 0;
    let bytes = 0;
    for (const hex of await readdir(join(this.root, 'blobs', 'sha256')).catch(() => [] as string[])) {
      if (blobs.has(`sha256:${hex}`)) continue;
      const p = join(this.root, 'blobs', 'sha256', hex);
      bytes += (await stat(p).catch(() => ({ size: 0 }))).size;
      await rm(p, { force: true });
      removedBlobs++;
    }
    for (const hex of await readdir(join(this.root, 'layers', 'sha256')).catch(() => [] as string[])) {
      if (layers.has(`sha256:${hex}`)) continue;
      await rm(join(this.root, 'layers', 'sha256', hex), { recursive: true, force: true });
      removedLayers++;
    }
    const { ChunkCache } = await import('./cache.js');
    const cache = new ChunkCache(this.root);
    for (const c of await cache.list()) {
      if (chunkDigestsInUse.has(c.digest)) continue;
      await cache.remove(c.digest);
      removedChunks++;
      bytes += c.size;
    }
    return { blobs: removedBlobs, layers: removedLayers, chunks: removedChunks, bytes };
  }
}

/**
 * A BlobReader that records every read (rpull: the footer and TOC reads, saved for `run`), or,
 * given saved ranges, serves reads that fall inside them from memory and only the rest from `inner`.
 */
export class PrimedBlobReader implements BlobReader {
  readonly recorded: Array<{ offset: number; data: Buffer }> = [];
  recording = false;

  constructor(
    private readonly inner: BlobReader,
    private readonly saved: Array<{ offset: number; data: Buffer }> = [],
  ) {}

  get size(): number {
    return this.inner.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    for (const r of [...this.saved, ...this.recorded]) {
      if (offset >= r.offset && offset + length <= r.offset + r.data.length) return r.data.subarray(offset - r.offset, offset - r.offset + length);
    }
    const data = await this.inner.read(offset, length);
    if (this.recording) this.recorded.push({ offset, data: Buffer.from(data) });
    return data;
  }
}
