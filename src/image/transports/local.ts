// `local:NAME`: an image in esgz's content store under the state root (src/store/): its name in
// one namespace points at a manifest or index whose blobs are in the store. Read as an OCI
// layout whose only entry is that descriptor (the store keeps blobs as a layout does); written
// blob by blob (each pinned against a concurrent prune, streamed to a temp file, digest-checked,
// renamed), the name last.
import { rename, chmod } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import { verifyBuffer } from '../../oci/digest.js';
import type { Descriptor, ImageManifest, RawManifest } from '../../oci/types.js';
import { formatReference, parseReference } from '../../registry/reference.js';
import { ContentStore, type Lease } from '../../store/content.js';
import { DEFAULT_STATE_ROOT, PRIVATE_FILE_MODE, writeFileAtomic } from '../../store/files.js';
import { checkName, DEFAULT_NAMESPACE, type NameRecord } from '../../store/names.js';
import type { ImageSink, ImageSource } from '../types.js';
import { OciLayoutSource } from './oci-layout.js';

/** Where `local:` names live: the state root (`--root`) and the namespace (`-n`). */
export interface StoreLocation {
  root?: string;
  namespace?: string;
}

export const LOCAL_PREFIX = 'local:';

export function describeLocal(name: string): string {
  return `${LOCAL_PREFIX}${name}`;
}

function storeOf(location: StoreLocation): { store: ContentStore; namespace: string } {
  return {
    store: new ContentStore(location.root ?? DEFAULT_STATE_ROOT),
    namespace: location.namespace ?? DEFAULT_NAMESPACE,
  };
}

/** The file the store keeps a blob of this digest in (it may be missing): `get-toc-digest LAYER-DIGEST`. */
export function localBlobPath(digest: string, location: StoreLocation = {}): string {
  return storeOf(location).store.blobPath(digest);
}

/** `ubuntu` and `docker.io/library/ubuntu:latest` are the same registry image; a name that is no reference has no other form. */
function canonicalName(name: string): string | undefined {
  try {
    return formatReference(parseReference(name));
  } catch {
    return undefined;
  }
}

/**
 * The record a name has: the name as given, else its canonical registry form (`image pull
 * ubuntu` stores `docker.io/library/ubuntu:latest`). Undefined when neither is there.
 */
export async function findName(name: string, location: StoreLocation = {}): Promise<NameRecord | undefined> {
  const { store, namespace } = storeOf(location);
  const names = store.names(namespace);
  const exact = await names.get(checkName(name));
  if (exact) return exact;
  const canonical = canonicalName(name);
  return canonical !== undefined && canonical !== name ? names.get(canonical) : undefined;
}

export async function openLocalSource(name: string, location: StoreLocation = {}): Promise<ImageSource> {
  const { store, namespace } = storeOf(location);
  const description = describeLocal(name);
  const record = await findName(name, location);
  if (!record)
    throw new EsgzError('NOT_FOUND', `${description}: no image of that name in ${store.root} (namespace ${namespace})`);
  if (record.lazy !== undefined && !(await holdsWholeImage(store, record.target)))
    throw new EsgzError(
      'UNSUPPORTED',
      `${description} was pulled lazily ("image rpull"): its layers are not in the store; use "image pull" for a full copy`,
    );
  return new OciLayoutSource({ dir: store.root, digest: record.target.digest }, description, {
    schemaVersion: 2,
    manifests: [record.target],
  });
}

/**
 * Whether every blob of a lazily pulled name is in the store all the same: `image rpull` of a
 * name this machine converted or pulled in full (as in ctr, where rpull re-points the name and
 * the content stays) still reads as a whole image.
 */
async function holdsWholeImage(store: ContentStore, target: Descriptor): Promise<boolean> {
  if (!(await store.hasBlob(target))) return false;
  const manifest = JSON.parse((await store.getBlob(target.digest)).toString('utf8')) as Partial<ImageManifest>;
  if (!Array.isArray(manifest.layers) || manifest.config === undefined) return false;
  for (const desc of [manifest.config, ...manifest.layers]) if (!(await store.hasBlob(desc))) return false;
  return true;
}

export function openLocalSink(name: string, location: StoreLocation = {}): ImageSink {
  checkName(name);
  return new LocalSink(name, location);
}

/**
 * Blobs a failed write leaves stay until `image prune` (another command may be using them: a
 * concurrent pull of an image sharing a layer skips what it finds), but no name ever points at
 * an incomplete image: the name is written after every blob and manifest is in place.
 */
class LocalSink implements ImageSink {
  readonly description: string;
  private readonly store: ContentStore;
  private readonly namespace: string;
  private lease: Promise<Lease> | undefined;

  constructor(
    private readonly name: string,
    location: StoreLocation,
  ) {
    this.description = describeLocal(name);
    ({ store: this.store, namespace: this.namespace } = storeOf(location));
  }

  /** The store's skeleton and this write's pin, made on first use. */
  private pinned(): Promise<Lease> {
    this.lease ??= this.store
      .init()
      .then(() => this.store.lease(`write ${this.description}`))
      .catch((err: unknown) => {
        if (err instanceof EsgzError) throw err;
        throw new EsgzError(
          'RUNTIME',
          `${this.description}: cannot write to ${this.store.root}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      });
    return this.lease;
  }

  /** Pins a digest first, so prune cannot delete it between "already there" (or "written") and the name. */
  private async keep(digest: string): Promise<void> {
    await (await this.pinned()).add(digest);
  }

  async hasBlob(desc: Descriptor): Promise<boolean> {
    await this.keep(desc.digest);
    return this.store.hasBlob(desc);
  }

  async putBlob(desc: Descriptor, open: () => Promise<Readable> | Readable): Promise<void> {
    if (await this.hasBlob(desc)) return;
    await this.store.writeBlob(desc, await open(), `${this.description} blob ${desc.digest}`);
  }

  async adoptBlobFile(desc: Descriptor, path: string): Promise<boolean> {
    if (await this.hasBlob(desc)) return true;
    try {
      await chmod(path, PRIVATE_FILE_MODE);
      await rename(path, this.store.blobPath(desc.digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EXDEV') return false;
      throw err;
    }
    return true;
  }

  async putManifest(manifest: RawManifest): Promise<void> {
    const desc = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length };
    verifyBuffer(manifest.bytes, desc, `${this.description} manifest ${manifest.digest}`);
    if (await this.hasBlob(desc)) return;
    await writeFileAtomic(this.store.blobPath(manifest.digest), manifest.bytes);
  }

  async commit(root: RawManifest): Promise<void> {
    await this.putManifest(root);
    const target = { mediaType: root.mediaType, digest: root.digest, size: root.bytes.length };
    await this.store.names(this.namespace).put(this.name, target);
    await this.release();
  }

  async abort(): Promise<void> {
    await this.release();
  }

  private async release(): Promise<void> {
    const lease = await this.lease?.catch(() => undefined);
    this.lease = undefined;
    await lease?.release();
  }
}
