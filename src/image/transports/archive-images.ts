// `image export FILE NAME...` and `image import FILE`: an OCI archive as ctr writes it (one tar,
// every image's blobs once, index.json naming each image with `io.containerd.image.name` and its
// tag as `org.opencontainers.image.ref.name`, a docker-compatible manifest.json for the images that
// are single manifests) and the names an archive holds (ctr's, skopeo's, or `docker save`'s).
import { EsgzError } from '../../errors.js';
import { MediaType, isIndexMediaType } from '../../oci/media-types.js';
import type { Descriptor, ImageManifest, RawManifest } from '../../oci/types.js';
import { formatReference, parseReference } from '../../registry/reference.js';
import { transferImage, type TransferOptions, type TransferReport } from '../pipeline.js';
import type { ImageSink, ImageSource } from '../types.js';
import { ArchiveWriter, blobEntryName, OCI_LAYOUT_FILE } from './archive-writer.js';
import { imageNameAnnotations } from './docker-archive.js';
import { CONTAINERD_IMAGE_NAME_ANNOTATION, parseIndexJson, REF_NAME_ANNOTATION } from './oci-layout.js';
import { TarFileReader } from './tar-reader.js';

type TransferSettings = Omit<TransferOptions, 'source' | 'sink'>;

/** One image of an export: its name and where it is read from. */
export interface ExportedImage {
  name: string;
  source: ImageSource;
}

/** The archive's sink for one image: blobs go to the shared tar, the root is only recorded. */
class ArchiveEntrySink implements ImageSink {
  root: RawManifest | undefined;

  constructor(
    private readonly writer: ArchiveWriter,
    readonly description: string,
  ) {}

  hasBlob = (desc: Descriptor) => this.writer.hasBlob(desc);
  putBlob: ImageSink['putBlob'] = (desc, open) => this.writer.putBlob(desc, open);
  putManifest = (manifest: RawManifest) => this.writer.putManifest(manifest);

  async commit(root: RawManifest): Promise<void> {
    await this.writer.putManifest(root);
    this.root = root;
  }

  async abort(): Promise<void> {}
}

/** Writes `images` into one OCI archive at `file` (every platform each holds); nothing is left at `file` on failure. */
export async function exportArchive(
  file: string,
  images: readonly ExportedImage[],
  settings: TransferSettings = {},
): Promise<TransferReport[]> {
  const writer = new ArchiveWriter(file, `archive ${file}`);
  const reports: TransferReport[] = [];
  const entries: Descriptor[] = [];
  const dockerManifest: Array<{ Config: string; RepoTags: string[]; Layers: string[] }> = [];
  try {
    for (const { name, source } of images) {
      const sink = new ArchiveEntrySink(writer, `${writer.description} (${name})`);
      reports.push(await transferImage({ ...settings, allPlatforms: true, source, sink }));
      const root = sink.root!;
      entries.push({
        mediaType: root.mediaType,
        digest: root.digest,
        size: root.bytes.length,
        annotations: imageNameAnnotations(name),
      });
      if (!isIndexMediaType(root.mediaType)) {
        const manifest = JSON.parse(root.bytes.toString('utf8')) as ImageManifest;
        dockerManifest.push({
          Config: blobEntryName(manifest.config.digest),
          RepoTags: [name],
          Layers: manifest.layers.map((l) => blobEntryName(l.digest)),
        });
      }
    }
    const index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: entries };
    await writer.finish([
      OCI_LAYOUT_FILE,
      ['index.json', Buffer.from(JSON.stringify(index))],
      ['manifest.json', Buffer.from(JSON.stringify(dockerManifest))],
    ]);
    return reports;
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** A name as a full reference (`app:1` → `docker.io/library/app:1`), as ctr import names docker archive images. */
function fullName(name: string): string {
  try {
    return formatReference(parseReference(name));
  } catch {
    return name;
  }
}

/** What `image import` reads from an archive: each image's name and the transport spec that opens it. */
export interface ArchivedImage {
  name: string;
  spec: string;
}

/**
 * The named images of an archive: from index.json (ctr's `io.containerd.image.name`, else a
 * ref name that is a full reference), else from a `docker save` manifest.json's RepoTags.
 */
export async function archivedImages(file: string): Promise<ArchivedImage[]> {
  const where = `archive ${file}`;
  const tar = await TarFileReader.open(file, where);
  try {
    if (tar.entries.has('index.json') && tar.entries.has('oci-layout')) {
      const index = parseIndexJson((await tar.readEntry(tar.entry('index.json', 'index.json'))).toString(), where);
      const names = index.manifests.flatMap((m) => {
        const full = m.annotations?.[CONTAINERD_IMAGE_NAME_ANNOTATION];
        const ref = m.annotations?.[REF_NAME_ANNOTATION];
        if (full !== undefined) return [full];
        return ref !== undefined && ref.includes('/') ? [ref] : [];
      });
      if (names.length > 0) return names.map((name) => ({ name, spec: `oci-archive:${file}:${name}` }));
    }
    if (tar.entries.has('manifest.json')) {
      const list = JSON.parse((await tar.readEntry(tar.entry('manifest.json', 'manifest.json'))).toString()) as Array<{
        RepoTags?: string[] | null;
      }>;
      const tags = Array.isArray(list) ? list.flatMap((m) => m?.RepoTags ?? []) : [];
      if (tags.length > 0) return tags.map((tag) => ({ name: fullName(tag), spec: `docker-archive:${file}:${tag}` }));
    }
    throw new EsgzError('BAD_ARCHIVE', `${where}: names no image (no io.containerd.image.name, ref name or RepoTags)`);
  } catch (err) {
    if (err instanceof SyntaxError) throw new EsgzError('BAD_ARCHIVE', `${where}: manifest.json is not valid JSON`);
    throw err;
  } finally {
    await tar.close();
  }
}
