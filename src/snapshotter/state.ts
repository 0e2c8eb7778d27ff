/**
 * The state root of lazy pull (default /var/lib/esgz, `--root`):
 *
 *   names/default/<h>.json                  the content store's name table (store/names.ts): a pulled
 *                                            reference's record rides on its name (`lazy`), written last
 *   images/<sha256 of the reference>.json   records of an older esgz, still read (and removed by rm)
 *   blobs/sha256/<hex>                      the content store's blobs (store/content.ts): here the
 *                                            manifest and config, stored only after their digest checked
 *   layers/sha256/<hex>/meta.bin + meta.json the footer and TOC bytes of a lazy layer, as fetched (so `run`
 *                                            re-opens the TOC, re-verifying it, without a request)
 *   layers/sha256/<hex>/fs/                 a layer that is not lazily pullable, unpacked in overlay form
 *   chunks/sha256/ab/<hex>                  the chunk cache (cache.ts)
 *   containers/<id>/                        a running (or kept, without --rm) container's upper dir and bundle
 *   pins/<tag>.json                         layers and blobs a live rpull or run uses (prune keeps them)
 *   lock/owner                              held while the set of images, pins and containers changes
 *
 * Other local users get nothing from it: every directory esgz creates here is 0700 and every file
 * 0600 whatever the umask (as containerd's snapshotter root), so they can neither list it, read a
 * container's config.json (its --env secrets) or a cached chunk, nor reach a setuid file of a
 * layer or an upper dir. Image content (layers/…/fs, a container's upper dir) keeps its own modes.
 *
 * Crash consistency: files are written under a temp name, fsynced, renamed into place and the
 * directory fsynced, so after a power cut a name holds either nothing or the complete file. Temp
 * names carry the writer's pid and start time; those of dead writers are swept by `image prune`.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError } from '../errors.js';
import { mountsUnder } from '../host/mounts.js';
import type { BlobReader } from '../estargz/reader.js';
import { ContentStore, sha256Hex, type Pin } from '../store/content.js';
import { sweepDeadTemps, writeFileAtomic, mkdirPrivate } from '../store/files.js';

// The private-file helpers moved to the content store; re-exported for the snapshotter's modules.
export {
  DEFAULT_STATE_ROOT,
  fsyncDir,
  isDeadTemp,
  mkdirPrivate,
  PRIVATE_DIR_MODE,
  PRIVATE_FILE_MODE,
  sweepDeadTemps,
  tempTag,
  writeFileAtomic,
} from '../store/files.js';
export type { Pin } from '../store/content.js';

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

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Flushes the filesystem holding `path` (syncfs(2), through coreutils `sync -f`: Node has no
 * binding), for a whole unpacked tree that is about to be marked complete.
 */
export async function syncFilesystem(path: string): Promise<void> {
  const { execa } = await import('execa');
  const r = await execa('sync', ['-f', path], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0)
    throw new EsgzError(
      'RUNTIME',
      `cannot flush ${path} to disk: ${String(r.stderr).trim() || `sync exited with ${r.exitCode}`}`,
    );
}

/**
 * `rm -rf dir`, unless something is mounted at or under it: deleting through a mount would
 * delete a layer or host directory it shows. Returns whether it removed; says why not.
 */
export async function removeUnlessMounted(dir: string, onWarning?: (message: string) => void): Promise<boolean> {
  const mounts = mountsUnder(dir);
  if (mounts.length > 0) {
    onWarning?.(`not removing ${dir}: ${mounts[0]} is still mounted`);
    return false;
  }
  await rm(dir, { recursive: true, force: true });
  return true;
}

/**
 * The state root: the content store (blobs, names, pins, lock) plus what lazy pull and run keep
 * (layer metadata, unpacked layers, the chunk cache, containers). Lazily pulled images are names
 * of the default namespace whose record carries the ImageRecord (`lazy`), so `image ls` and
 * `image rm` see one table.
 */
export class StateRoot extends ContentStore {
  get chunksRoot(): string {
    return this.root;
  }

  private legacyImagePath(reference: string): string {
    return join(this.root, 'images', `${createHash('sha256').update(reference).digest('hex')}.json`);
  }

  layerDir(digest: string): string {
    return join(this.root, 'layers', 'sha256', sha256Hex(digest));
  }

  containersDir(): string {
    return join(this.root, 'containers');
  }

  /**
   * Creates the state root, or opens an existing one: every directory of its skeleton is made
   * 0700 again (a root an older esgz left 0755 is closed at once; what lies deeper is reachable
   * only through these).
   */
  override async init(): Promise<void> {
    await super.init();
    await this.makeDirs(['images', 'layers', 'layers/sha256', 'chunks', 'chunks/sha256', 'containers']);
  }

  /**
   * Saves the byte ranges read while opening a lazy layer (footer and TOC) and, for a layer whose
   * TOC lives in a separate TOC image, that TOC blob.
   */
  async putLayerMeta(
    digest: string,
    ranges: Array<{ offset: number; data: Buffer }>,
    externalTOC?: Buffer,
  ): Promise<void> {
    const dir = this.layerDir(digest);
    await mkdirPrivate(dir);
    const index = {
      ranges: ranges.map((r) => ({ offset: r.offset, length: r.data.length })),
      externalTOC: externalTOC !== undefined,
    };
    if (externalTOC) await writeFileAtomic(join(dir, 'external-toc'), externalTOC);
    await writeFileAtomic(join(dir, 'meta.bin'), Buffer.concat(ranges.map((r) => r.data)));
    await writeFileAtomic(join(dir, 'meta.json'), JSON.stringify(index));
  }

  async getLayerMeta(
    digest: string,
  ): Promise<{ ranges: Array<{ offset: number; data: Buffer }>; externalTOC?: Buffer } | undefined> {
    const dir = this.layerDir(digest);
    try {
      const index = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as {
        ranges: Array<{ offset: number; length: number }>;
        externalTOC: boolean;
      };
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

  /** Makes a lazily pulled image visible to `run`: its name, pointing at its manifest, with the record. */
  async putImage(record: ImageRecord): Promise<void> {
    const size = (await stat(this.blobPath(record.manifestDigest))).size;
    const target = { mediaType: record.manifestMediaType, digest: record.manifestDigest, size };
    await this.names().put(record.reference, target, record);
  }

  async getImage(reference: string): Promise<ImageRecord | undefined> {
    const named = await this.names().get<ImageRecord>(reference);
    if (named) return named.lazy;
    try {
      return JSON.parse(await readFile(this.legacyImagePath(reference), 'utf8')) as ImageRecord;
    } catch {
      return undefined;
    }
  }

  /** The lazily pulled images (names with a record, and an older esgz's records), sorted. */
  async listImages(): Promise<ImageRecord[]> {
    const named = (await this.names().list<ImageRecord>()).flatMap((n) => (n.lazy ? [n.lazy] : []));
    const seen = new Set((await this.names().list()).map((n) => n.name));
    const legacyDir = join(this.root, 'images');
    for (const file of (await readdir(legacyDir).catch(() => [] as string[])).filter((n) => n.endsWith('.json'))) {
      try {
        const record = JSON.parse(await readFile(join(legacyDir, file), 'utf8')) as ImageRecord;
        if (!seen.has(record.reference)) named.push(record);
      } catch {
        // A record that does not parse is not an image; prune removes nothing it cannot attribute.
      }
    }
    return named.sort((a, b) => a.reference.localeCompare(b.reference));
  }

  /** Forgets a name of the default namespace (lazily pulled or not); false when there was none. */
  async removeImage(reference: string): Promise<boolean> {
    const named = await this.names().remove(reference);
    const legacy = await stat(this.legacyImagePath(reference)).then(
      () => true,
      () => false,
    );
    await rm(this.legacyImagePath(reference), { force: true });
    return named || legacy;
  }

  /**
   * Removes blobs, layer metadata, unpacked layers and cached chunks no image record and no live
   * pin refers to, and the temp files of writers that died. Chunks are attributed through each
   * lazy layer's TOC (re-read from the stored metadata). Call with the lock held.
   */
  async prune(
    chunkDigestsInUse: Set<string>,
    pins: Pin[],
    onWarning?: (message: string) => void,
  ): Promise<{ blobs: number; layers: number; chunks: number; bytes: number }> {
    const images = await this.listImages();
    const blobs = new Set<string>(pins.flatMap((p) => p.blobs));
    const layers = new Set<string>(pins.flatMap((p) => p.layers.map((l) => l.digest)));
    for (const digest of await this.namedContent()) blobs.add(digest);
    for (const img of images) {
      blobs.add(img.manifestDigest);
      blobs.add(img.configDigest);
      for (const l of img.layers) layers.add(l.digest);
    }
    for (const d of ['', 'images', 'blobs/sha256', 'layers/sha256']) await sweepDeadTemps(join(this.root, d));
    for (const name of await readdir(this.root)) {
      // What a process killed while releasing or breaking the lock leaves (never the lock itself).
      if (/^lock\.(released|stale)-[0-9a-f]+$/.test(name))
        await rm(join(this.root, name), { recursive: true, force: true });
    }
    let removedBlobs = 0;
    let removedLayers = 0;
    let removedChunks = 0;
    let bytes = 0;
    for (const hex of await readdir(join(this.root, 'blobs', 'sha256')).catch(() => [] as string[])) {
      if (!HEX64.test(hex) || blobs.has(`sha256:${hex}`)) continue;
      const p = join(this.root, 'blobs', 'sha256', hex);
      bytes += (await stat(p).catch(() => ({ size: 0 }))).size;
      await rm(p, { force: true });
      removedBlobs++;
    }
    for (const hex of await readdir(join(this.root, 'layers', 'sha256')).catch(() => [] as string[])) {
      if (!HEX64.test(hex)) continue;
      if (layers.has(`sha256:${hex}`)) {
        await sweepDeadTemps(join(this.root, 'layers', 'sha256', hex));
        continue;
      }
      if (await removeUnlessMounted(join(this.root, 'layers', 'sha256', hex), onWarning)) removedLayers++;
    }
    const { ChunkCache } = await import('./cache.js');
    const cache = new ChunkCache(this.root);
    await cache.sweepTemps();
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
      if (offset >= r.offset && offset + length <= r.offset + r.data.length)
        return r.data.subarray(offset - r.offset, offset - r.offset + length);
    }
    const data = await this.inner.read(offset, length);
    if (this.recording) this.recorded.push({ offset, data: Buffer.from(data) });
    return data;
  }
}
