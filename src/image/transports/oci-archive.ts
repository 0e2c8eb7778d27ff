// `oci-archive:FILE[:TAG]` (skopeo's name): a tar of an OCI image layout (oci-layout, index.json,
// blobs/sha256/<hex>), read in place (tar-reader.ts: blobs streamed from their offsets, never
// extracted or buffered) and written as a stream (archive-writer.ts). TAG is the index entry's
// `org.opencontainers.image.ref.name`; reading also accepts the full name containerd records.
import type { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import { MAX_INDEX_JSON_BYTES, MAX_MANIFEST_BYTES } from '../../oci/limits.js';
import { MediaType } from '../../oci/media-types.js';
import type { Descriptor, ImageIndex, RawManifest } from '../../oci/types.js';
import type { ImageSink, ImageSource } from '../types.js';
import { ArchiveWriter, blobEntryName, OCI_LAYOUT_FILE } from './archive-writer.js';
import { chooseIndexEntry, manifestFromBytes, parseIndexJson, REF_NAME_ANNOTATION } from './oci-layout.js';
import { TarFileReader, type TarEntryLocation } from './tar-reader.js';

export interface OciArchiveReference {
  file: string;
  tag?: string;
}

export function describeOciArchive(ref: OciArchiveReference): string {
  return `oci-archive:${ref.file}${ref.tag !== undefined ? `:${ref.tag}` : ''}`;
}

export async function openOciArchiveSource(ref: OciArchiveReference): Promise<ImageSource> {
  const description = describeOciArchive(ref);
  const tar = await TarFileReader.open(ref.file, description);
  try {
    if (!tar.entries.has('oci-layout') || !tar.entries.has('index.json'))
      throw new EsgzError('BAD_ARCHIVE', `${description}: not an OCI archive (no oci-layout or index.json)`);
    const indexBytes = await tar.readEntry(tar.entry('index.json', 'index.json'), MAX_INDEX_JSON_BYTES);
    const index = parseIndexJson(indexBytes.toString('utf8'), description);
    const root = chooseIndexEntry(index, ref, description, `oci-archive:${ref.file}:TAG`);
    return new OciArchiveSource(tar, description, root);
  } catch (err) {
    await tar.close();
    throw err;
  }
}

class OciArchiveSource implements ImageSource {
  constructor(
    private readonly tar: TarFileReader,
    readonly description: string,
    private readonly root: { digest: string; size?: number; mediaType?: string },
  ) {}

  private entryFor(digest: string, what: string): TarEntryLocation {
    const found = this.tar.entries.get(blobEntryName(digest));
    if (!found) throw new EsgzError('NOT_FOUND', `${what}: not in the archive`);
    return found;
  }

  private async readManifest(desc: { digest: string; size?: number; mediaType?: string }): Promise<RawManifest> {
    const what = `${this.description} manifest ${desc.digest}`;
    const bytes = await this.tar.readEntry(this.entryFor(desc.digest, what), MAX_MANIFEST_BYTES);
    return manifestFromBytes(bytes, desc, what);
  }

  fetchRoot(): Promise<RawManifest> {
    return this.readManifest(this.root);
  }

  fetchManifest(desc: Descriptor): Promise<RawManifest> {
    return this.readManifest(desc);
  }

  async openBlob(desc: Descriptor): Promise<Readable> {
    const what = `${this.description} blob ${desc.digest}`;
    return this.tar.openVerified(this.entryFor(desc.digest, what), desc, what);
  }

  async readBlobRange(desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    const what = `${this.description} blob ${desc.digest}`;
    return this.tar.readBlobRange(this.entryFor(desc.digest, what), desc, offset, length, what);
  }

  async close(): Promise<void> {
    await this.tar.close();
  }
}

/** The closing files of an OCI archive naming `entries` (index.json, oci-layout). */
export function ociArchiveFiles(entries: Descriptor[]): Array<readonly [string, Buffer]> {
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: entries };
  return [OCI_LAYOUT_FILE, ['index.json', Buffer.from(JSON.stringify(index))]];
}

export function openOciArchiveSink(ref: OciArchiveReference): ImageSink {
  return new OciArchiveSink(ref);
}

/** One image (a manifest or an index), named TAG when given. */
class OciArchiveSink extends ArchiveWriter implements ImageSink {
  constructor(private readonly ref: OciArchiveReference) {
    super(ref.file, describeOciArchive(ref));
  }

  async commit(root: RawManifest): Promise<void> {
    await this.putManifest(root);
    const entry: Descriptor = { mediaType: root.mediaType, digest: root.digest, size: root.bytes.length };
    if (this.ref.tag !== undefined) entry.annotations = { [REF_NAME_ANNOTATION]: this.ref.tag };
    await this.finish(ociArchiveFiles([entry]));
  }
}
