// `docker-archive:FILE[:TAG]`: the `docker save` tar. manifest.json lists, per image, its config
// file, RepoTags and layer files; layers are stored as `<id>/layer.tar` (Docker < 25) or as
// `blobs/sha256/<hex>` next to an OCI index.json (Docker >= 25). Both are read; esgz writes the
// second form, keeping compressed layer blobs as they are so manifest digests survive a round trip.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import { sniffCompression } from '../compression.js';
import { digestOf, parseDigest, verifyBuffer } from '../../oci/digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../../oci/media-types.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, RawManifest } from '../../oci/types.js';
import type { ImageSink, ImageSource } from '../types.js';
import { formatReference, parseReference } from '../../registry/reference.js';
import { normalizeEntryName, TarFileReader, type TarEntryLocation } from './tar-reader.js';
import { ArchiveWriter, blobEntryName, OCI_LAYOUT_FILE } from './archive-writer.js';
import { CONTAINERD_IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION } from './oci-layout.js';

export interface DockerArchiveReference {
  file: string;
  tag?: string;
}

interface ArchiveManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

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

export async function openDockerArchiveSource(ref: DockerArchiveReference): Promise<ImageSource> {
  const where = describe(ref);
  const tar = await TarFileReader.open(ref.file, where);
  try {
    return await DockerArchiveSource.create(tar, ref, where);
  } catch (err) {
    await tar.close();
    throw err;
  }
}

class DockerArchiveSource implements ImageSource {
  private root!: RawManifest;
  /** Blob digest → where its bytes sit in the tar. */
  private readonly blobs = new Map<string, TarEntryLocation>();
  /** Manifests and indexes stored in the archive's OCI part, by digest. */
  private readonly storedManifests = new Map<string, RawManifest>();

  private readonly entries: Map<string, TarEntryLocation>;

  private constructor(
    private readonly tar: TarFileReader,
    readonly description: string,
  ) {
    this.entries = tar.entries;
  }

  static async create(tar: TarFileReader, ref: DockerArchiveReference, where: string): Promise<DockerArchiveSource> {
    const source = new DockerArchiveSource(tar, where);
    await source.resolve(ref);
    return source;
  }

  private entry(name: string, what: string): TarEntryLocation {
    return this.tar.entry(name, what);
  }

  private readEntry(location: TarEntryLocation): Promise<Buffer> {
    return this.tar.readEntry(location);
  }

  private readRange(location: TarEntryLocation, offset: number, length: number): Promise<Buffer> {
    return this.tar.readRange(location, offset, length);
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
    for await (const chunk of this.tar.stream(location)) {
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
    return this.tar.openVerified(this.blobLocation(desc, what), desc, what);
  }

  async readBlobRange(desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    const what = `${this.description} blob ${desc.digest}`;
    return this.tar.readBlobRange(this.blobLocation(desc, what), desc, offset, length, what);
  }

  async close(): Promise<void> {
    await this.tar.close();
  }
}

export function openDockerArchiveSink(ref: DockerArchiveReference): ImageSink {
  if (ref.tag !== undefined && /^@\d+$/.test(ref.tag)) {
    throw new EsgzError('BAD_REFERENCE', `${describe(ref)}: a destination needs a tag (name:tag), not an index`);
  }
  return new DockerArchiveSink(ref);
}

/** A `docker save` tar: the blobs, then manifest.json (one image) and its OCI index.json. */
class DockerArchiveSink extends ArchiveWriter implements ImageSink {
  constructor(private readonly ref: DockerArchiveReference) {
    super(ref.file, describe(ref));
  }

  async commit(root: RawManifest): Promise<void> {
    if (isIndexMediaType(root.mediaType)) {
      throw new EsgzError('UNSUPPORTED', `${this.description}: a docker archive holds one platform; select one`);
    }
    await this.putManifest(root);
    const manifest = JSON.parse(root.bytes.toString('utf8')) as ImageManifest;
    const repoTag = this.ref.tag !== undefined ? normalizeRepoTag(this.ref.tag) : undefined;
    const archiveManifest: ArchiveManifestEntry[] = [
      {
        Config: blobEntryName(manifest.config.digest),
        RepoTags: repoTag !== undefined ? [repoTag] : [],
        Layers: manifest.layers.map((l) => blobEntryName(l.digest)),
      },
    ];
    const rootDesc: Descriptor = { mediaType: root.mediaType, digest: root.digest, size: root.bytes.length };
    if (repoTag !== undefined) rootDesc.annotations = imageNameAnnotations(repoTag);
    const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [rootDesc] };
    await this.finish([
      OCI_LAYOUT_FILE,
      ['index.json', Buffer.from(JSON.stringify(index))],
      ['manifest.json', Buffer.from(JSON.stringify(archiveManifest))],
    ]);
  }
}

/** The index.json annotations containerd writes for a named image: its full name, and the tag as the ref name. */
export function imageNameAnnotations(name: string): Record<string, string> {
  return { [CONTAINERD_IMAGE_NAME_ANNOTATION]: name, [REF_NAME_ANNOTATION]: name.slice(name.lastIndexOf(':') + 1) };
}
