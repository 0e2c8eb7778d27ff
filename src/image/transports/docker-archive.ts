// `docker-archive:FILE[:TAG]`: the `docker save` tar. manifest.json lists, per image, its config
// file, RepoTags and layer files; layers are stored as `<id>/layer.tar` (Docker < 25) or as
// `blobs/sha256/<hex>` next to an OCI index.json (Docker >= 25). Both are read; esgz writes the
// second form, keeping compressed layer blobs as they are so manifest digests survive a round trip.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { WriteStream } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import { sniffCompression } from '../compression.js';
import { DigestVerifier, digestOf, parseDigest, verifyBuffer } from '../../oci/digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../../oci/media-types.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, RawManifest } from '../../oci/types.js';
import type { ImageSink, ImageSource } from '../types.js';
import { formatReference, parseReference } from '../../registry/reference.js';
import { REF_NAME_ANNOTATION } from './oci-layout.js';

export interface DockerArchiveReference {
  file: string;
  tag?: string;
}

interface ArchiveManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

interface TarEntryLocation {
  offset: number;
  size: number;
}

const BLOCK = 512;

function describe(ref: DockerArchiveReference): string {
  return `docker-archive:${ref.file}${ref.tag !== undefined ? `:${ref.tag}` : ''}`;
}

/** `busybox` and `busybox:latest` name the same image; a registry host or path is kept. */
export function normalizeRepoTag(tag: string): string {
  const lastSlash = tag.lastIndexOf('/');
  return tag.slice(lastSlash + 1).includes(':') ? tag : `${tag}:latest`;
}

/** Canonical form for comparing tags: `sk/x`, `sk/x:latest` and `docker.io/sk/x:latest` are equal. */
function canonicalRepoTag(tag: string): string {
  try {
    return formatReference(parseReference(tag));
  } catch {
    return normalizeRepoTag(tag);
  }
}

function normalizeEntryName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}

function parseOctal(buf: Buffer, offset: number, length: number): number {
  const field = buf.subarray(offset, offset + length);
  // GNU base-256 for sizes past 8 GiB.
  if ((field[0]! & 0x80) !== 0) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return text.length === 0 ? 0 : parseInt(text, 8);
}

function cString(buf: Buffer, offset: number, length: number): string {
  const field = buf.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const length = parseInt(data.subarray(pos, space).toString('latin1'), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = data.subarray(space + 1, pos + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += length;
  }
  return out;
}

/** Reads every header once and records where each regular file's data starts (random access later). */
async function indexTar(handle: FileHandle, where: string): Promise<Map<string, TarEntryLocation>> {
  const entries = new Map<string, TarEntryLocation>();
  const { size: fileSize } = await handle.stat();
  const header = Buffer.alloc(BLOCK);
  let offset = 0;
  let pending: { path?: string; size?: number } = {};
  const readExactly = async (buf: Buffer, position: number): Promise<void> => {
    const { bytesRead } = await handle.read(buf, 0, buf.length, position);
    if (bytesRead !== buf.length) throw new EsgzError('BAD_ARCHIVE', `${where}: truncated tar at byte ${position}`);
  };
  while (offset + BLOCK <= fileSize) {
    await readExactly(header, offset);
    if (header.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
    if (sum !== parseOctal(header, 148, 8))
      throw new EsgzError('BAD_ARCHIVE', `${where}: not a tar file (bad header checksum at byte ${offset})`);
    const type = String.fromCharCode(header[156]!);
    const size = pending.size ?? parseOctal(header, 124, 12);
    const dataOffset = offset + BLOCK;
    if (dataOffset + size > fileSize)
      throw new EsgzError('BAD_ARCHIVE', `${where}: truncated tar (entry at byte ${offset} runs past the end)`);
    const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L') {
      const data = Buffer.alloc(size);
      await readExactly(data, dataOffset);
      if (type === 'x') {
        const pax = parsePax(data);
        pending = {
          ...pending,
          ...(pax.path !== undefined ? { path: pax.path } : {}),
          ...(pax.size !== undefined ? { size: Number(pax.size) } : {}),
        };
      } else {
        pending = { ...pending, path: data.toString('utf8').replace(/\0+$/, '') };
      }
    } else if (type === 'g') {
      // global PAX header: nothing esgz needs
    } else {
      const prefix = cString(header, 345, 155);
      const name = pending.path ?? (prefix ? `${prefix}/${cString(header, 0, 100)}` : cString(header, 0, 100));
      if (type === '0' || type === '\0' || type === '7')
        entries.set(normalizeEntryName(name), { offset: dataOffset, size });
      pending = {};
    }
    offset = next;
  }
  return entries;
}

export async function openDockerArchiveSource(ref: DockerArchiveReference): Promise<ImageSource> {
  const where = describe(ref);
  let handle: FileHandle;
  try {
    handle = await open(ref.file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new EsgzError('NOT_FOUND', `${where}: no such file ${ref.file}`, { cause: err });
    throw new EsgzError('BAD_ARCHIVE', `${where}: cannot open ${ref.file}: ${code ?? (err as Error).message}`, {
      cause: err,
    });
  }
  try {
    return await DockerArchiveSource.create(handle, ref, where);
  } catch (err) {
    await handle.close();
    throw err;
  }
}

class DockerArchiveSource implements ImageSource {
  private root!: RawManifest;
  /** Blob digest → where its bytes sit in the tar. */
  private readonly blobs = new Map<string, TarEntryLocation>();
  /** Manifests and indexes stored in the archive's OCI part, by digest. */
  private readonly storedManifests = new Map<string, RawManifest>();

  private constructor(
    private readonly handle: FileHandle,
    private readonly entries: Map<string, TarEntryLocation>,
    readonly description: string,
  ) {}

  static async create(handle: FileHandle, ref: DockerArchiveReference, where: string): Promise<DockerArchiveSource> {
    const entries = await indexTar(handle, where);
    const source = new DockerArchiveSource(handle, entries, where);
    await source.resolve(ref);
    return source;
  }

  private entry(name: string, what: string): TarEntryLocation {
    const found = this.entries.get(normalizeEntryName(name));
    if (!found) throw new EsgzError('BAD_ARCHIVE', `${this.description}: ${what} "${name}" is not in the archive`);
    return found;
  }

  private async readEntry(location: TarEntryLocation, limit = 64 * 1024 * 1024): Promise<Buffer> {
    if (location.size > limit)
      throw new EsgzError('BAD_ARCHIVE', `${this.description}: metadata file of ${location.size} bytes is too large`);
    return this.readRange(location, 0, location.size);
  }

  private async readRange(location: TarEntryLocation, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await this.handle.read(buf, 0, length, location.offset + offset);
    if (bytesRead !== length) throw new EsgzError('BAD_ARCHIVE', `${this.description}: truncated archive`);
    return buf;
  }

  private parseJsonEntry<T>(name: string, what: string): Promise<T> {
    return this.readEntry(this.entry(name, what)).then((bytes) => {
      try {
        return JSON.parse(bytes.toString('utf8')) as T;
      } catch (err) {
        throw new EsgzError('BAD_ARCHIVE', `${this.description}: ${name} is not valid JSON`, { cause: err });
      }
    });
  }

  private selectImage(list: ArchiveManifestEntry[], tag: string | undefined): ArchiveManifestEntry {
    if (list.length === 0) throw new EsgzError('BAD_ARCHIVE', `${this.description}: manifest.json lists no images`);
    if (tag === undefined) {
      if (list.length === 1) return list[0]!;
      throw new EsgzError(
        'BAD_REFERENCE',
        `${this.description}: the archive holds ${list.length} images; name one as docker-archive:FILE:TAG or :@N`,
      );
    }
    const byIndex = /^@(\d+)$/.exec(tag);
    if (byIndex) {
      const chosen = list[Number(byIndex[1])];
      if (!chosen)
        throw new EsgzError(
          'NOT_FOUND',
          `${this.description}: no image #${byIndex[1]} (the archive holds ${list.length})`,
        );
      return chosen;
    }
    const wanted = canonicalRepoTag(tag);
    const chosen = list.find((m) => (m.RepoTags ?? []).some((t) => canonicalRepoTag(t) === wanted));
    if (!chosen) {
      const tags = list.flatMap((m) => m.RepoTags ?? []);
      throw new EsgzError(
        'NOT_FOUND',
        `${this.description}: no image tagged "${tag}" (tags: ${tags.join(', ') || 'none'})`,
      );
    }
    return chosen;
  }

  private async resolve(ref: DockerArchiveReference): Promise<void> {
    if (!this.entries.has('manifest.json')) {
      throw new EsgzError('BAD_ARCHIVE', `${this.description}: no manifest.json (not a docker save archive)`);
    }
    const list = await this.parseJsonEntry<ArchiveManifestEntry[]>('manifest.json', 'manifest.json');
    if (!Array.isArray(list) || list.some((m) => typeof m?.Config !== 'string' || !Array.isArray(m.Layers))) {
      throw new EsgzError(
        'BAD_ARCHIVE',
        `${this.description}: manifest.json is not a list of {Config, RepoTags, Layers}`,
      );
    }
    const image = this.selectImage(list, ref.tag);
    const configLocation = this.entry(image.Config, 'config');
    const configBytes = await this.readEntry(configLocation);
    const configDigest = digestOf(configBytes);
    this.blobs.set(configDigest, configLocation);
    let config: ImageConfig;
    try {
      config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
    } catch (err) {
      throw new EsgzError('BAD_ARCHIVE', `${this.description}: config ${image.Config} is not valid JSON`, {
        cause: err,
      });
    }

    // Docker >= 25 (and esgz) also store the OCI manifest: use its exact bytes when it describes
    // this image, so the manifest digest is the one the image had in its registry.
    const stored = await this.storedManifestFor(configDigest, image);
    if (stored) {
      this.root = stored;
      return;
    }

    const diffIDs = config?.rootfs?.diff_ids ?? [];
    const layers: Descriptor[] = [];
    for (const [i, layerPath] of image.Layers.entries()) {
      const location = this.entry(layerPath, `layer ${i + 1}`);
      const head = await this.readRange(location, 0, Math.min(4, location.size));
      const compression = sniffCompression(head);
      if (compression === 'zstd')
        throw new EsgzError(
          'UNSUPPORTED',
          `${this.description}: layer ${layerPath} is zstd-compressed, which a Docker manifest cannot describe`,
        );
      const named = /(?:^|\/)blobs\/sha256\/([a-f0-9]{64})$/.exec(normalizeEntryName(layerPath));
      let digest: string;
      if (named) digest = `sha256:${named[1]}`;
      else if (compression === 'none' && typeof diffIDs[i] === 'string') digest = diffIDs[i]!;
      else digest = await this.hashEntry(location);
      this.blobs.set(digest, location);
      layers.push({
        mediaType: compression === 'gzip' ? MediaType.dockerLayerGzip : MediaType.dockerLayer,
        size: location.size,
        digest,
      });
    }
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifest,
      config: { mediaType: MediaType.dockerConfig, size: configBytes.length, digest: configDigest },
      layers,
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    this.root = { bytes, mediaType: MediaType.dockerManifest, digest: digestOf(bytes) };
  }

  private async storedManifestFor(configDigest: string, image: ArchiveManifestEntry): Promise<RawManifest | undefined> {
    if (!this.entries.has('index.json')) return undefined;
    for (const [name, location] of this.entries) {
      const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(name);
      if (m) this.blobs.set(`sha256:${m[1]}`, location);
    }
    let index: ImageIndex;
    try {
      index = await this.parseJsonEntry<ImageIndex>('index.json', 'index.json');
    } catch {
      return undefined;
    }
    const candidates: Descriptor[] = Array.isArray(index?.manifests) ? [...index.manifests] : [];
    while (candidates.length > 0) {
      const desc = candidates.shift()!;
      if (typeof desc?.digest !== 'string' || !this.blobs.has(desc.digest)) continue;
      const raw = await this.readStoredManifest(desc);
      if (raw === undefined) continue;
      if (isIndexMediaType(raw.mediaType)) {
        const nested = JSON.parse(raw.bytes.toString('utf8')) as ImageIndex;
        candidates.push(...(nested.manifests ?? []));
        continue;
      }
      const manifest = JSON.parse(raw.bytes.toString('utf8')) as ImageManifest;
      if (manifest.config?.digest !== configDigest || manifest.layers?.length !== image.Layers.length) continue;
      if (manifest.layers.every((l) => this.blobs.has(l.digest))) return raw;
    }
    return undefined;
  }

  private async readStoredManifest(desc: Descriptor): Promise<RawManifest | undefined> {
    const cached = this.storedManifests.get(desc.digest);
    if (cached) return cached;
    const location = this.blobs.get(desc.digest);
    if (!location || location.size > 4 * 1024 * 1024) return undefined;
    const bytes = await this.readEntry(location);
    verifyBuffer(bytes, desc, `${this.description} manifest ${desc.digest}`);
    let mediaType: string | undefined;
    try {
      mediaType = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? desc.mediaType;
    } catch {
      return undefined;
    }
    if (!isIndexMediaType(mediaType) && !isManifestMediaType(mediaType)) return undefined;
    const raw = { bytes, mediaType: mediaType!, digest: desc.digest };
    this.storedManifests.set(desc.digest, raw);
    return raw;
  }

  private async hashEntry(location: TarEntryLocation): Promise<string> {
    const hash = createHash('sha256');
    for await (const chunk of this.handle.createReadStream({
      start: location.offset,
      end: location.offset + location.size - 1,
      autoClose: false,
    })) {
      hash.update(chunk as Buffer);
    }
    return `sha256:${hash.digest('hex')}`;
  }

  async fetchRoot(): Promise<RawManifest> {
    return this.root;
  }

  async fetchManifest(desc: Descriptor): Promise<RawManifest> {
    if (desc.digest === this.root.digest) return this.root;
    const stored = await this.readStoredManifest(desc);
    if (!stored) throw new EsgzError('NOT_FOUND', `${this.description}: manifest ${desc.digest} is not in the archive`);
    return stored;
  }

  private blobLocation(desc: Descriptor, what: string): TarEntryLocation {
    parseDigest(desc.digest, what);
    const location = this.blobs.get(desc.digest);
    if (!location) throw new EsgzError('NOT_FOUND', `${what}: not in the archive`);
    return location;
  }

  async openBlob(desc: Descriptor): Promise<Readable> {
    const what = `${this.description} blob ${desc.digest}`;
    const location = this.blobLocation(desc, what);
    // Refused before a byte is used, as containers/image does: the entry's length is known here.
    if (location.size !== desc.size)
      throw new EsgzError(
        'SIZE_MISMATCH',
        `${what}: the blob has ${location.size} bytes but its descriptor says ${desc.size}`,
      );
    const verifier = new DigestVerifier(desc, what);
    if (location.size === 0) {
      verifier.end();
      return verifier;
    }
    const stream = this.handle.createReadStream({
      start: location.offset,
      end: location.offset + location.size - 1,
      autoClose: false,
      highWaterMark: 1 << 20,
    });
    stream.on('error', (err) =>
      verifier.destroy(new EsgzError('BAD_ARCHIVE', `${what}: ${err.message}`, { cause: err })),
    );
    return stream.pipe(verifier);
  }

  async readBlobRange(desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    const what = `${this.description} blob ${desc.digest}`;
    const location = this.blobLocation(desc, what);
    if (location.size !== desc.size)
      throw new EsgzError(
        'SIZE_MISMATCH',
        `${what}: the blob has ${location.size} bytes but its descriptor says ${desc.size}`,
      );
    if (offset + length > location.size)
      throw new EsgzError('SIZE_MISMATCH', `${what}: range ${offset}+${length} is past the end of the blob`);
    return this.readRange(location, offset, length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** A ustar header for a regular file; fixed owner, mode and mtime so archives are reproducible. */
function fileHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new EsgzError('INTERNAL', `docker-archive entry name too long: ${name}`);
  const buf = Buffer.alloc(BLOCK);
  const octal = (offset: number, width: number, value: number): void => {
    buf.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
  };
  buf.write(name, 0, 100, 'utf8');
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  if (size >= 8 ** 11) {
    // GNU base-256 size for blobs of 8 GiB and more.
    buf[124] = 0x80;
    let value = size;
    for (let i = 135; i > 124; i--) {
      buf[i] = value % 256;
      value = Math.floor(value / 256);
    }
  } else {
    octal(124, 12, size);
  }
  octal(136, 12, 0);
  buf.write('0', 156, 1, 'latin1');
  buf.write('ustar\x0000', 257, 8, 'latin1');
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of buf) sum += byte;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return buf;
}

function writeError(where: string, err: unknown): EsgzError {
  if (err instanceof EsgzError) return err;
  return new EsgzError('BAD_ARCHIVE', `${where}: writing failed: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

export function openDockerArchiveSink(ref: DockerArchiveReference): ImageSink {
  if (ref.tag !== undefined && /^@\d+$/.test(ref.tag)) {
    throw new EsgzError('BAD_REFERENCE', `${describe(ref)}: a destination needs a tag (name:tag), not an index`);
  }
  return new DockerArchiveSink(ref);
}

/**
 * Streams blobs into a tar at a temp path (one entry after another: tar is sequential), then
 * writes manifest.json, index.json and oci-layout, and renames the file into place on commit.
 */
class DockerArchiveSink implements ImageSink {
  readonly description: string;
  private readonly tempPath: string;
  private out: WriteStream | undefined;
  private queue: Promise<void> = Promise.resolve();
  /** digest -> size of the blobs written: a descriptor naming a written digest with another size is not "already there". */
  private readonly written = new Map<string, number>();
  private readonly manifests = new Map<string, RawManifest>();
  private failed = false;
  /** The first write error, rethrown to later writers so every layer reports the cause. */
  private firstFailure: unknown;

  constructor(private readonly ref: DockerArchiveReference) {
    this.description = describe(ref);
    this.tempPath = `${ref.file}.tmp-${randomBytes(6).toString('hex')}`;
  }

  /** Opens the temp file on first use, so a missing directory or permission error is named. */
  private async stream(): Promise<WriteStream> {
    if (!this.out) {
      let handle: FileHandle;
      try {
        handle = await open(this.tempPath, 'wx');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const why = code === 'ENOENT' ? 'its directory does not exist' : (code ?? (err as Error).message);
        throw new EsgzError(
          code === 'ENOENT' ? 'NOT_FOUND' : 'BAD_ARCHIVE',
          `${this.description}: cannot create ${this.ref.file}: ${why}`,
          { cause: err },
        );
      }
      this.out = handle.createWriteStream();
      this.out.on('error', (err) => {
        this.failed = true;
        this.firstFailure ??= writeError(this.description, err);
      });
    }
    return this.out;
  }

  private async write(chunk: Buffer): Promise<void> {
    const out = await this.stream();
    if (out.errored) throw writeError(this.description, out.errored);
    if (!out.write(chunk)) {
      // events.once rejects on 'error', so a failing disk cannot leave this waiting forever.
      await once(out, 'drain').catch((err: unknown) => {
        throw writeError(this.description, err);
      });
    }
  }

  /** Serialises tar writes: each call runs after the previous one finished. */
  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(() => {
      if (this.failed) {
        throw this.firstFailure instanceof EsgzError
          ? this.firstFailure
          : new EsgzError('BAD_ARCHIVE', `${this.description}: an earlier write failed`);
      }
      return task();
    });
    this.queue = run.catch((err: unknown) => {
      this.failed = true;
      this.firstFailure ??= err;
    });
    return run;
  }

  private async writeEntry(name: string, size: number, body: AsyncIterable<Buffer> | Buffer): Promise<void> {
    await this.write(fileHeader(name, size));
    if (Buffer.isBuffer(body)) {
      if (body.length > 0) await this.write(body);
    } else {
      for await (const chunk of body) await this.write(chunk);
    }
    const rest = size % BLOCK;
    if (rest !== 0) await this.write(Buffer.alloc(BLOCK - rest));
  }

  async hasBlob(desc: Descriptor): Promise<boolean> {
    return this.written.get(desc.digest) === desc.size;
  }

  putBlob(desc: Descriptor, openStream: () => Promise<Readable> | Readable): Promise<void> {
    const what = `${this.description} blob ${desc.digest}`;
    const { hex } = parseDigest(desc.digest, what);
    return this.enqueue(async () => {
      const size = this.written.get(desc.digest);
      if (size === desc.size) return;
      if (size !== undefined)
        throw new EsgzError('SIZE_MISMATCH', `${what}: written with ${size} bytes, but a descriptor says ${desc.size}`);
      await this.stream();
      const source = await openStream();
      const verified = source.pipe(new DigestVerifier(desc, what));
      source.on('error', (err) => verified.destroy(err));
      // The iteration below reports errors; this listener only keeps an error that arrives before
      // it starts (while the header is written) from being an unhandled 'error' event.
      verified.on('error', () => undefined);
      await this.writeEntry(`blobs/sha256/${hex}`, desc.size, verified as AsyncIterable<Buffer>);
      this.written.set(desc.digest, desc.size);
    });
  }

  async putManifest(manifest: RawManifest): Promise<void> {
    this.manifests.set(manifest.digest, manifest);
    await this.putBlob({ mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length }, () =>
      Readable.from([manifest.bytes]),
    );
  }

  async commit(root: RawManifest): Promise<void> {
    if (isIndexMediaType(root.mediaType)) {
      throw new EsgzError('UNSUPPORTED', `${this.description}: a docker archive holds one platform; select one`);
    }
    await this.putManifest(root);
    const manifest = JSON.parse(root.bytes.toString('utf8')) as ImageManifest;
    const blobName = (digest: string) => `blobs/sha256/${parseDigest(digest, 'digest').hex}`;
    const repoTag = this.ref.tag !== undefined ? normalizeRepoTag(this.ref.tag) : undefined;
    const archiveManifest: ArchiveManifestEntry[] = [
      {
        Config: blobName(manifest.config.digest),
        RepoTags: repoTag !== undefined ? [repoTag] : [],
        Layers: manifest.layers.map((l) => blobName(l.digest)),
      },
    ];
    const rootDesc: Descriptor = { mediaType: root.mediaType, digest: root.digest, size: root.bytes.length };
    if (repoTag !== undefined)
      rootDesc.annotations = {
        'io.containerd.image.name': repoTag,
        [REF_NAME_ANNOTATION]: repoTag.slice(repoTag.lastIndexOf(':') + 1),
      };
    const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [rootDesc] };
    const files: Array<[string, Buffer]> = [
      ['oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }))],
      ['index.json', Buffer.from(JSON.stringify(index))],
      ['manifest.json', Buffer.from(JSON.stringify(archiveManifest))],
    ];
    await this.enqueue(async () => {
      for (const [name, bytes] of files) await this.writeEntry(name, bytes.length, bytes);
      await this.write(Buffer.alloc(BLOCK * 2));
      const out = await this.stream();
      out.end();
      await once(out, 'close');
    });
    if (this.failed) throw new EsgzError('BAD_ARCHIVE', `${this.description}: writing ${this.tempPath} failed`);
    try {
      await rename(this.tempPath, this.ref.file);
    } catch (err) {
      throw new EsgzError(
        'BAD_ARCHIVE',
        `${this.description}: cannot write ${this.ref.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { cause: err },
      );
    }
  }

  async abort(): Promise<void> {
    this.failed = true;
    if (this.out && !this.out.closed) {
      this.out.destroy();
      await once(this.out, 'close').catch(() => undefined);
    }
    await rm(this.tempPath, { force: true });
  }
}
