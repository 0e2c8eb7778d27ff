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
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EsgzError } from '../errors.js';
import { mountsUnder } from '../host/mounts.js';
import { identityAlive, processIdentity } from '../host/process.js';
import type { BlobReader } from '../estargz/reader.js';

export const DEFAULT_STATE_ROOT = '/var/lib/esgz';

/** Mode of every directory esgz creates in the state root (containerd's snapshotter uses 0700 too). */
export const PRIVATE_DIR_MODE = 0o700;
/** Mode of every file esgz writes in the state root. */
export const PRIVATE_FILE_MODE = 0o600;

/** How long a command waits for another one's state-root lock before giving up. */
const LOCK_WAIT_MS = 120_000;

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

/** What a live rpull or run uses: prune keeps these whether or not an image record names them. */
export interface Pin {
  owner: string;
  /** With size and TOC digest, so prune can re-open a lazy layer's stored TOC to keep its chunks. */
  layers: Array<{ digest: string; size: number; tocDigest?: string }>;
  blobs: string[];
}

const HEX64 = /^[0-9a-f]{64}$/;

function hexOf(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new EsgzError('BAD_FORMAT', `unsupported digest ${JSON.stringify(digest)} (only sha256)`);
  return m[1]!;
}

let ownTag: string | undefined;

/** `<pid>.<start time>-<random>`: a unique suffix for temp names that tells whose they are. */
export async function tempTag(): Promise<string> {
  ownTag ??= (processIdentity() ?? String(process.pid)).replace(' ', '.');
  return `${ownTag}-${randomBytes(4).toString('hex')}`;
}

/** Temp names esgz writes: `<name>.tmp-<pid>[.<start>]-<hex>` (the start time since pids get reused). */
const TEMP_NAME = /\.tmp-(\d+)(?:\.(\d+))?(?:-[0-9a-f]+)?$/;

/** True for a temp name whose writing process is gone (so it can never be completed). */
export async function isDeadTemp(name: string): Promise<boolean> {
  const m = TEMP_NAME.exec(name);
  if (!m) return false;
  return !identityAlive(m[2] === undefined ? m[1]! : `${m[1]} ${m[2]}`);
}

/** Removes the temp files and directories of dead writers directly in `dir`; returns how many. */
export async function sweepDeadTemps(dir: string): Promise<number> {
  let swept = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!(await isDeadTemp(name))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    swept++;
  }
  return swept;
}

/** Creates `dir` (and missing parents) 0700, and makes an existing one 0700: the umask cannot widen it. */
export async function mkdirPrivate(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(dir, PRIVATE_DIR_MODE);
}

/** fsyncs a directory, so a rename or unlink in it survives a power cut. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

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
 * Writes a file (0600) under a temp name, fsyncs it, renames it into place and fsyncs the
 * directory: after a crash the name holds the old file, the new one, or nothing, never a part.
 */
export async function writeFileAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${await tempTag()}`;
  try {
    const handle = await open(tmp, 'wx', PRIVATE_FILE_MODE);
    try {
      await handle.writeFile(data);
      await handle.chmod(PRIVATE_FILE_MODE);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(join(path, '..'));
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

  private pinsDir(): string {
    return join(this.root, 'pins');
  }

  /**
   * Creates the state root, or opens an existing one: every directory of its skeleton is made
   * 0700 again (a root an older esgz left 0755 is closed at once; what lies deeper is reachable
   * only through these).
   */
  async init(): Promise<void> {
    const dirs = [
      '',
      'images',
      'blobs',
      'blobs/sha256',
      'layers',
      'layers/sha256',
      'chunks',
      'chunks/sha256',
      'containers',
      'pins',
    ];
    for (const d of dirs) {
      await mkdirPrivate(join(this.root, d)).catch((err: NodeJS.ErrnoException) => {
        throw new EsgzError('RUNTIME', `cannot create the state root ${this.root}: ${err.message}`, { cause: err });
      });
    }
  }

  /**
   * Takes the state root's lock (a directory created atomically, holding its owner's pid and start
   * time), waiting while a live process holds it and breaking it when its owner is gone. Held
   * while the set of images, pins and containers changes, and by prune for all its work, so
   * prune never sees a layer between "in use" and "recorded as in use".
   */
  async lock(what: string): Promise<() => Promise<void>> {
    const dir = join(this.root, 'lock');
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
      // The owner record goes in before the directory takes the name (rename fails onto a
      // non-empty directory): a lock is never seen without its owner.
      const claim = `${dir}.tmp-${await tempTag()}`;
      await mkdir(claim, { mode: PRIVATE_DIR_MODE });
      const identity = processIdentity() ?? String(process.pid);
      await writeFileAtomic(join(claim, 'owner'), `${identity}\n${what}\n`);
      try {
        await rename(claim, dir);
        // Released by moving it aside first: the name never holds a half-deleted, ownerless lock.
        return async () => {
          const aside = `${dir}.released-${randomBytes(4).toString('hex')}`;
          await rename(dir, aside).catch(() => undefined);
          await rm(aside, { recursive: true, force: true });
        };
      } catch (err) {
        await rm(claim, { recursive: true, force: true });
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      }
      const holder = await this.lockHolder(dir);
      if (holder === 'stale') {
        await this.breakLock(dir);
        continue;
      }
      if (Date.now() > deadline) {
        throw new EsgzError(
          'RUNTIME',
          `state root ${this.root} is busy: ${holder ?? 'another esgz'} holds its lock (waited ${LOCK_WAIT_MS / 1000} s)`,
        );
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  /** Who holds the lock ("esgz prune (pid N)"), undefined when it just went, 'stale' when its owner is gone. */
  private async lockHolder(dir: string): Promise<string | undefined | 'stale'> {
    const text = await readFile(join(dir, 'owner'), 'utf8').catch(() => undefined);
    if (text === undefined)
      return (await stat(dir).then(
        () => true,
        () => false,
      ))
        ? 'stale'
        : undefined;
    const [identity = '', what = ''] = text.split('\n');
    if (!identityAlive(identity)) return 'stale';
    return `esgz ${what} (pid ${identity.split(' ')[0]})`;
  }

  /** Moves a dead owner's lock aside (rename: one breaker wins) and deletes it. */
  private async breakLock(dir: string): Promise<void> {
    const aside = `${dir}.stale-${randomBytes(4).toString('hex')}`;
    try {
      await rename(dir, aside);
    } catch {
      return;
    }
    // Another breaker may have won and a live process taken the lock since: give that one back.
    const text = await readFile(join(aside, 'owner'), 'utf8').catch(() => '');
    if (identityAlive(text.split('\n')[0] ?? '')) {
      await rename(aside, dir).catch(() => undefined);
      return;
    }
    await rm(aside, { recursive: true, force: true });
  }

  /** Records what a live process uses (call with the lock held); returns the pin's remover. */
  async pin(pin: Omit<Pin, 'owner'>): Promise<() => Promise<void>> {
    const path = join(this.pinsDir(), `${await tempTag()}.json`);
    const owner = processIdentity() ?? String(process.pid);
    await writeFileAtomic(path, JSON.stringify({ owner, ...pin } satisfies Pin));
    return async () => {
      await rm(path, { force: true });
    };
  }

  /** The pins of live processes; those of dead ones are removed (call with the lock held). */
  async livePins(): Promise<Pin[]> {
    const out: Pin[] = [];
    for (const name of await readdir(this.pinsDir()).catch(() => [] as string[])) {
      const path = join(this.pinsDir(), name);
      if (TEMP_NAME.test(name)) {
        if (await isDeadTemp(name)) await rm(path, { force: true });
        continue;
      }
      let pin: Pin | undefined;
      try {
        pin = JSON.parse(await readFile(path, 'utf8')) as Pin;
      } catch {
        pin = undefined;
      }
      if (pin && identityAlive(pin.owner)) out.push(pin);
      else await rm(path, { force: true });
    }
    return out;
  }

  /** Stores bytes whose digest the caller verified (checked again here: nothing unverified lands). */
  async putBlob(digest: string, data: Buffer): Promise<void> {
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest)
      throw new EsgzError('DIGEST_MISMATCH', `state root: bytes for ${digest} have digest ${actual}`);
    await writeFileAtomic(this.blobPath(digest), data);
  }

  async getBlob(digest: string): Promise<Buffer> {
    const data = await readFile(this.blobPath(digest)).catch(() => {
      throw new EsgzError('NOT_FOUND', `state root ${this.root}: blob ${digest} is missing (pull the image again)`);
    });
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== digest)
      throw new EsgzError(
        'DIGEST_MISMATCH',
        `state root ${this.root}: blob ${digest} is damaged (digest ${actual}); pull the image again`,
      );
    return data;
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
