// `oci:DIR[:TAG]`: an OCI image layout directory (image-spec image-layout.md): an `oci-layout`
// marker file, `index.json` naming images by the `org.opencontainers.image.ref.name`
// annotation, and content-addressed blobs under `blobs/<alg>/<hex>`.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EsgzError } from '../../errors.js';
import { DigestVerifier, parseDigest, verifyBuffer } from '../../oci/digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../../oci/media-types.js';
import type { Descriptor, ImageIndex, RawManifest } from '../../oci/types.js';
import type { ImageSink, ImageSource } from '../types.js';
import { MAX_INDEX_JSON_BYTES, MAX_MANIFEST_BYTES } from '../../oci/limits.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** The image's full name, as containerd (`ctr image export`) records it in index.json. */
export const CONTAINERD_IMAGE_NAME_ANNOTATION = 'io.containerd.image.name';
const LAYOUT_FILE = 'oci-layout';
const INDEX_FILE = 'index.json';
const LAYOUT_VERSION = '1.0.0';
/** index.json lists every tag of the layout, so it may be larger; still never read unbounded. */

export interface OciReference {
  dir: string;
  tag?: string;
  digest?: string;
}

export function describeOci(ref: OciReference): string {
  return `oci:${ref.dir}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** Path of a blob inside a layout; the digest is validated first so it cannot escape `blobs/`. */
export function blobPath(dir: string, digest: string, where: string): string {
  const { algorithm, hex } = parseDigest(digest, where);
  return join(dir, 'blobs', algorithm, hex);
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

export async function openOciSource(ref: OciReference): Promise<OciLayoutSource> {
  const where = describeOci(ref);
  let layout: unknown;
  try {
    layout = JSON.parse(await readFile(join(ref.dir, LAYOUT_FILE), 'utf8'));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' && !(await isDirectory(ref.dir))) {
      throw new EsgzError('NOT_FOUND', `${where}: no such directory ${ref.dir}`, { cause: err });
    }
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') {
      throw new EsgzError('BAD_LAYOUT', `${where}: not an OCI image layout (no ${LAYOUT_FILE} file in ${ref.dir})`, {
        cause: err,
      });
    }
    throw new EsgzError('BAD_LAYOUT', `${where}: unreadable ${LAYOUT_FILE} file: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const version = (layout as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new EsgzError(
      'BAD_LAYOUT',
      `${where}: ${LAYOUT_FILE} has imageLayoutVersion ${JSON.stringify(version)}, expected 1.x`,
    );
  }
  const index = await readIndex(ref.dir, where, false);
  return new OciLayoutSource(ref, where, index);
}

/**
 * Reads a small file (index.json, a manifest) whole, refusing one over `max` bytes without
 * reading past max+1: a layout from elsewhere cannot make esgz buffer a huge "manifest".
 */
async function readBounded(path: string, max: number, what: string): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buf = Buffer.alloc(Math.min(max + 1, (await handle.stat()).size + 1));
    let done = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, done, buf.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
      if (done > max) throw new EsgzError('SIZE_MISMATCH', `${what}: larger than ${max} bytes`);
      if (done === buf.length) break;
    }
    return buf.subarray(0, done);
  } finally {
    await handle.close();
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function readIndex(dir: string, where: string, allowMissing: boolean): Promise<ImageIndex> {
  let text: string;
  try {
    text = (await readBounded(join(dir, INDEX_FILE), MAX_INDEX_JSON_BYTES, `${where}: ${INDEX_FILE}`)).toString('utf8');
  } catch (err) {
    if (err instanceof EsgzError) throw err;
    if (allowMissing && errnoCode(err) === 'ENOENT')
      return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
    throw new EsgzError('BAD_LAYOUT', `${where}: cannot read ${INDEX_FILE}: ${(err as Error).message}`, { cause: err });
  }
  return parseIndexJson(text, where);
}

function tagsOf(index: ImageIndex): string[] {
  return index.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter((t): t is string => t !== undefined);
}

/** Reads a manifest or index blob, verifies it against `desc`, and names its media type. */
async function readManifestBlob(
  dir: string,
  desc: { digest: string; size?: number; mediaType?: string },
  where: string,
): Promise<RawManifest> {
  const what = `${where} manifest ${desc.digest}`;
  let bytes: Buffer;
  try {
    bytes = await readBounded(blobPath(dir, desc.digest, what), MAX_MANIFEST_BYTES, what);
  } catch (err) {
    if (err instanceof EsgzError) throw err;
    if (errnoCode(err) === 'ENOENT')
      throw new EsgzError('NOT_FOUND', `${what}: blob missing from the layout`, { cause: err });
    throw new EsgzError('BAD_LAYOUT', `${what}: ${(err as Error).message}`, { cause: err });
  }
  return manifestFromBytes(bytes, desc, what);
}

/** Checks a manifest or index's bytes against `desc` and names its media type (its own, else the descriptor's). */
export function manifestFromBytes(
  bytes: Buffer,
  desc: { digest: string; size?: number; mediaType?: string },
  what: string,
): RawManifest {
  verifyBuffer(bytes, desc, what);
  let parsed: { mediaType?: unknown };
  try {
    parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${what}: not valid JSON`, { cause: err });
  }
  const inner = typeof parsed.mediaType === 'string' ? parsed.mediaType : undefined;
  const mediaType = inner ?? desc.mediaType ?? '';
  if (!isIndexMediaType(mediaType) && !isManifestMediaType(mediaType)) {
    throw new EsgzError('UNSUPPORTED', `${what}: media type "${mediaType}" is not an image manifest or index`);
  }
  return { bytes, mediaType, digest: desc.digest };
}

/**
 * The index.json entry a reference names: by digest (a digest not listed may still be a stored
 * manifest), by tag (the last entry with that ref name), or the only entry. `usage` shows how to
 * name one image (`oci:DIR:TAG`) when there are several.
 */
export function chooseIndexEntry(
  index: ImageIndex,
  ref: { tag?: string; digest?: string },
  description: string,
  usage: string,
): { digest: string; size?: number; mediaType?: string } {
  const { manifests } = index;
  if (ref.digest !== undefined) return manifests.find((m) => m.digest === ref.digest) ?? { digest: ref.digest };
  if (ref.tag !== undefined) {
    // ctr's archives name an image fully in io.containerd.image.name and only its tag in ref.name.
    const names = (m: Descriptor) => [
      m.annotations?.[REF_NAME_ANNOTATION],
      m.annotations?.[CONTAINERD_IMAGE_NAME_ANNOTATION],
    ];
    const tagged = manifests.filter((m) => names(m).includes(ref.tag));
    if (tagged.length === 0) {
      const tags = tagsOf(index);
      throw new EsgzError(
        'NOT_FOUND',
        `${description}: no image tagged "${ref.tag}" in ${INDEX_FILE} (${tags.length > 0 ? `tags: ${tags.join(', ')}` : 'no tagged images'})`,
      );
    }
    return tagged[tagged.length - 1]!;
  }
  if (manifests.length === 1) return manifests[0]!;
  if (manifests.length === 0) throw new EsgzError('NOT_FOUND', `${description}: ${INDEX_FILE} lists no images`);
  const tags = tagsOf(index);
  throw new EsgzError(
    'BAD_REFERENCE',
    `${description}: the layout holds ${manifests.length} images; name one as ${usage}${tags.length > 0 ? ` (tags: ${tags.join(', ')})` : ''}`,
  );
}

/** Parses index.json's text; BAD_LAYOUT when it is no index. */
export function parseIndexJson(text: string, where: string): ImageIndex {
  let index: ImageIndex;
  try {
    index = JSON.parse(text) as ImageIndex;
  } catch (err) {
    throw new EsgzError('BAD_LAYOUT', `${where}: ${INDEX_FILE} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (index === null || typeof index !== 'object' || !Array.isArray(index.manifests)) {
    throw new EsgzError('BAD_LAYOUT', `${where}: ${INDEX_FILE} has no "manifests" array`);
  }
  return index;
}

export class OciLayoutSource implements ImageSource {
  constructor(
    private readonly ref: OciReference,
    readonly description: string,
    private readonly index: ImageIndex,
  ) {}

  /** The descriptor in index.json the reference names. */
  rootDescriptor(): { digest: string; size?: number; mediaType?: string } {
    return chooseIndexEntry(this.index, this.ref, this.description, `oci:${this.ref.dir}:TAG`);
  }

  async fetchRoot(): Promise<RawManifest> {
    return readManifestBlob(this.ref.dir, this.rootDescriptor(), this.description);
  }

  fetchManifest(desc: Descriptor): Promise<RawManifest> {
    return readManifestBlob(this.ref.dir, desc, this.description);
  }

  async openBlob(desc: Descriptor): Promise<Readable> {
    const what = `${this.description} blob ${desc.digest}`;
    const handle = await openBlobFile(this.ref.dir, desc, what);
    try {
      checkDescriptorSize(desc, (await handle.stat()).size, what);
    } catch (err) {
      await handle.close();
      throw err;
    }
    const verifier = new DigestVerifier(desc, what);
    // One byte past the descriptor's size is enough to tell a longer blob (the file may grow meanwhile).
    const stream = handle.createReadStream({ highWaterMark: 1 << 20, start: 0, end: desc.size });
    stream.on('error', (err) =>
      verifier.destroy(new EsgzError('BAD_LAYOUT', `${what}: ${err.message}`, { cause: err })),
    );
    return stream.pipe(verifier);
  }

  async readBlobRange(desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    const what = `${this.description} blob ${desc.digest}`;
    if (offset < 0 || length < 0 || offset + length > desc.size)
      throw new EsgzError(
        'SIZE_MISMATCH',
        `${what}: range ${offset}+${length} is outside the descriptor's ${desc.size} bytes`,
      );
    const handle = await openBlobFile(this.ref.dir, desc, what);
    try {
      checkDescriptorSize(desc, (await handle.stat()).size, what);
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      if (done < length)
        throw new EsgzError('SIZE_MISMATCH', `${what}: range ${offset}+${length} is past the end of the blob`);
      return buf;
    } finally {
      await handle.close();
    }
  }

  async close(): Promise<void> {}
}

/** A blob whose length is not its descriptor's `size` is refused before a byte of it is used (as containers/image does). */
function checkDescriptorSize(desc: Descriptor, actual: number, what: string): void {
  if (actual !== desc.size)
    throw new EsgzError('SIZE_MISMATCH', `${what}: the blob has ${actual} bytes but its descriptor says ${desc.size}`);
}

async function openBlobFile(dir: string, desc: Descriptor, what: string) {
  try {
    return await open(blobPath(dir, desc.digest, what), 'r');
  } catch (err) {
    if (err instanceof EsgzError) throw err;
    if (errnoCode(err) === 'ENOENT')
      throw new EsgzError('NOT_FOUND', `${what}: blob missing from the layout`, { cause: err });
    throw new EsgzError('BAD_LAYOUT', `${what}: ${(err as Error).message}`, { cause: err });
  }
}

const LOCK_WAIT_MS = 30_000;
const LOCK_STALE_MS = 120_000;

/**
 * index.json is read-modified-written; an exclusive lock file keeps two esgz processes writing
 * the same layout from dropping each other's entries. A lock older than LOCK_STALE_MS belongs to
 * a process that died and is taken over.
 */
async function withIndexLock<T>(dir: string, where: string, work: () => Promise<T>): Promise<T> {
  const lockPath = join(dir, `${INDEX_FILE}.lock`);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST')
        throw new EsgzError('BAD_LAYOUT', `${where}: cannot lock ${INDEX_FILE}: ${(err as Error).message}`, {
          cause: err,
        });
      const age = await stat(lockPath).then(
        (info) => Date.now() - info.mtimeMs,
        () => 0,
      );
      if (age > LOCK_STALE_MS) {
        await rm(lockPath, { force: true });
        continue;
      }
      if (Date.now() > deadline)
        throw new EsgzError(
          'BAD_LAYOUT',
          `${where}: ${lockPath} has been held for ${Math.round(age / 1000)} s by another writer`,
        );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  try {
    return await work();
  } finally {
    await rm(lockPath, { force: true });
  }
}

/** A unique temp name next to `path` (same directory, so the final rename is atomic). */
function tempNameFor(path: string): string {
  const slash = path.lastIndexOf('/');
  return `${path.slice(0, slash + 1)}.tmp-${path.slice(slash + 1, slash + 17)}-${randomBytes(6).toString('hex')}`;
}

export function openOciSink(ref: OciReference): OciLayoutSink {
  if (ref.digest !== undefined) {
    throw new EsgzError('BAD_REFERENCE', `${describeOci(ref)}: a destination cannot be a digest; use oci:DIR[:TAG]`);
  }
  return new OciLayoutSink(ref);
}

/**
 * Writes blobs to temp names and renames them into place, and updates index.json last (also by
 * rename), so readers never see a half-written blob or an index entry pointing at missing content.
 * `abort` removes temp files, blobs this sink added, and the directory if this sink created it.
 */
export class OciLayoutSink implements ImageSink {
  readonly description: string;
  private prepared: Promise<void> | undefined;
  private committed = false;
  private readonly tempFiles = new Set<string>();
  private readonly addedBlobs = new Set<string>();
  /** What prepare() added to an existing directory, removed again by abort(). */
  private readonly createdFiles: string[] = [];
  private readonly createdDirs: string[] = [];

  constructor(private readonly ref: OciReference) {
    this.description = describeOci(ref);
  }

  private prepare(): Promise<void> {
    this.prepared ??= this.prepareLayout().catch((err: unknown) => {
      if (err instanceof EsgzError) throw err;
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new EsgzError('BAD_LAYOUT', `${this.description}: cannot write to ${this.ref.dir}: ${code}`, {
        cause: err,
      });
    });
    return this.prepared;
  }

  private prepareLayout(): Promise<void> {
    return (async () => {
      const { dir } = this.ref;
      try {
        const info = await stat(dir);
        if (!info.isDirectory())
          throw new EsgzError('BAD_LAYOUT', `${this.description}: ${dir} exists and is not a directory`);
      } catch (err) {
        if (err instanceof EsgzError) throw err;
        if (errnoCode(err) !== 'ENOENT')
          throw new EsgzError(
            'BAD_LAYOUT',
            `${this.description}: cannot write to ${dir}: ${errnoCode(err) ?? (err as Error).message}`,
            { cause: err },
          );
        const made = await mkdir(dir, { recursive: true });
        // Every directory mkdir made, innermost first, so abort can remove them again (mkdir
        // reports the outermost one it created, relative when `dir` is).
        const outermost = made !== undefined ? resolve(made) : undefined;
        for (let d = resolve(dir); outermost !== undefined; d = join(d, '..')) {
          this.createdDirs.push(d);
          if (d === outermost || d === join(d, '..')) break;
        }
      }
      const layoutPath = join(dir, LAYOUT_FILE);
      try {
        await stat(layoutPath);
      } catch {
        await this.writeAtomically(
          layoutPath,
          Buffer.from(`${JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION })}`),
        );
        this.createdFiles.push(layoutPath);
      }
      // Fail early (before any blob is copied) when index.json exists but is unusable.
      await readIndex(dir, this.description, true);
      for (const sub of [join(dir, 'blobs'), join(dir, 'blobs', 'sha256')]) {
        if ((await mkdir(sub, { recursive: true })) !== undefined) this.createdDirs.unshift(sub);
      }
    })();
  }

  private async writeAtomically(path: string, data: Buffer): Promise<void> {
    const temp = tempNameFor(path);
    this.tempFiles.add(temp);
    try {
      await writeFile(temp, data);
      await rename(temp, path);
    } finally {
      this.tempFiles.delete(temp);
      await rm(temp, { force: true });
    }
  }

  async hasBlob(desc: Descriptor): Promise<boolean> {
    await this.prepare();
    try {
      const info = await stat(blobPath(this.ref.dir, desc.digest, `${this.description} blob`));
      return info.isFile() && info.size === desc.size;
    } catch (err) {
      if (err instanceof EsgzError) throw err;
      return false;
    }
  }

  async putBlob(desc: Descriptor, openStream: () => Promise<Readable> | Readable): Promise<void> {
    if (await this.hasBlob(desc)) return;
    const what = `${this.description} blob ${desc.digest}`;
    const path = blobPath(this.ref.dir, desc.digest, what);
    await mkdir(join(path, '..'), { recursive: true });
    const temp = tempNameFor(path);
    this.tempFiles.add(temp);
    try {
      // Verify what we store: a sink never renames a wrong blob into its content address.
      await pipeline(await openStream(), new DigestVerifier(desc, what), createWriteStream(temp));
      await rename(temp, path);
      this.addedBlobs.add(path);
    } finally {
      this.tempFiles.delete(temp);
      await rm(temp, { force: true });
    }
  }

  async adoptBlobFile(desc: Descriptor, file: string): Promise<boolean> {
    if (await this.hasBlob(desc)) return true;
    const path = blobPath(this.ref.dir, desc.digest, `${this.description} blob ${desc.digest}`);
    await mkdir(join(path, '..'), { recursive: true });
    try {
      await rename(file, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EXDEV') return false;
      throw err;
    }
    this.addedBlobs.add(path);
    return true;
  }

  async putManifest(manifest: RawManifest): Promise<void> {
    await this.prepare();
    const what = `${this.description} manifest ${manifest.digest}`;
    verifyBuffer(manifest.bytes, { digest: manifest.digest }, what);
    const path = blobPath(this.ref.dir, manifest.digest, what);
    try {
      const info = await stat(path);
      if (info.size === manifest.bytes.length) return;
    } catch {
      // not there yet
    }
    await mkdir(join(path, '..'), { recursive: true });
    await this.writeAtomically(path, manifest.bytes);
    this.addedBlobs.add(path);
  }

  async commit(root: RawManifest): Promise<void> {
    await this.putManifest(root);
    await withIndexLock(this.ref.dir, this.description, () => this.updateIndex(root));
    this.committed = true;
    this.addedBlobs.clear();
  }

  private async updateIndex(root: RawManifest): Promise<void> {
    const index = await readIndex(this.ref.dir, this.description, true);
    const entry: Descriptor = { mediaType: root.mediaType, digest: root.digest, size: root.bytes.length };
    const { tag } = this.ref;
    if (tag !== undefined) entry.annotations = { [REF_NAME_ANNOTATION]: tag };
    // One entry per tag: the new image replaces whatever the tag named before. Untagged writes
    // only avoid listing the same untagged digest twice.
    const kept = index.manifests.filter((m) => {
      const name = m.annotations?.[REF_NAME_ANNOTATION];
      return tag !== undefined ? name !== tag : !(name === undefined && m.digest === root.digest);
    });
    const next: ImageIndex = {
      ...index,
      schemaVersion: 2,
      mediaType: index.mediaType ?? MediaType.ociIndex,
      manifests: [...kept, entry],
    };
    await this.writeAtomically(join(this.ref.dir, INDEX_FILE), Buffer.from(JSON.stringify(next)));
  }

  async abort(): Promise<void> {
    for (const temp of this.tempFiles) await rm(temp, { force: true });
    this.tempFiles.clear();
    for (const path of this.addedBlobs) await rm(path, { force: true });
    this.addedBlobs.clear();
    if (this.committed) return;
    // Only what this sink added goes: a writer that committed meanwhile keeps its layout.
    if (!(await exists(join(this.ref.dir, INDEX_FILE)))) {
      for (const path of this.createdFiles) await rm(path, { force: true });
    }
    for (const dir of this.createdDirs) await rmdir(dir).catch(() => undefined);
  }
}
