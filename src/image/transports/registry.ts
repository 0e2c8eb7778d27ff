import type { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import type { UploadResult } from '../../registry/client.js';
import { openRegistryHosts, type RegistryHostsOptions } from '../../registry/mirrors.js';
import { formatReference, parseReference, type ImageReference } from '../../registry/reference.js';
import type { Descriptor, RawManifest } from '../../oci/types.js';
import type { BlobLocation, ImageSink, ImageSource } from '../types.js';

/** The `REGISTRY/REPO[:TAG|@DIGEST]` transport: images in an OCI distribution registry. */
export interface RegistryOptions {
  /** Plain HTTP instead of TLS. */
  plainHttp?: boolean;
  /** Skip TLS certificate verification. */
  insecure?: boolean;
  /** Directory holding config.json (default $DOCKER_CONFIG, then ~/.docker). */
  dockerConfigDir?: string;
  userAgent?: string;
  /** hosts.toml roots (`--hosts-dir`), client TLS files, `-u` credentials, `--http-trace`: see RegistryHostsOptions. */
  hostsDirs?: RegistryHostsOptions['hostsDirs'];
  tlsFiles?: RegistryHostsOptions['tlsFiles'];
  credentials?: RegistryHostsOptions['credentials'];
  trace?: RegistryHostsOptions['trace'];
  readTimeoutMs?: RegistryHostsOptions['readTimeoutMs'];
}

export interface RegistryImageSource extends ImageSource {
  readonly reference: ImageReference;
  /** A registry source always knows where its blobs live (see ImageSource.location). */
  readonly location: BlobLocation;
}

export interface RegistryImageSink extends ImageSink {
  readonly reference: ImageReference;
  /** What `putBlob` did per digest (skipped as existing, mounted, or uploaded), for summaries. */
  readonly blobResults: ReadonlyMap<string, UploadResult>;
  /** Releases connections; `commit` and `abort` do this too. */
  close(): Promise<void>;
}

export async function openRegistrySource(
  reference: string,
  options: RegistryOptions = {},
): Promise<RegistryImageSource> {
  const ref = parseReference(reference);
  const client = await openRegistryHosts(ref.registry, registryOptionsOf(options));
  const repository = ref.repository;
  return {
    description: formatReference(ref),
    reference: ref,
    location: { registry: ref.registry, repository },
    fetchRoot: () => client.getManifest(repository, ref.digest ?? ref.tag!),
    async fetchManifest(desc: Descriptor): Promise<RawManifest> {
      const manifest = await client.getManifest(repository, desc.digest);
      if (manifest.bytes.length !== desc.size) {
        throw new EsgzError(
          'SIZE_MISMATCH',
          `manifest ${desc.digest} in ${ref.registry}/${repository}: expected ${desc.size} bytes, got ${manifest.bytes.length}`,
        );
      }
      return manifest;
    },
    openBlob: (desc: Descriptor) => client.openBlob(repository, desc),
    readBlobRange: (desc: Descriptor, offset: number, length: number) =>
      client.readBlobRange(repository, desc, offset, length),
    close: () => client.close(),
  };
}

export async function openRegistrySink(reference: string, options: RegistryOptions = {}): Promise<RegistryImageSink> {
  const ref = parseReference(reference);
  const client = await openRegistryHosts(ref.registry, registryOptionsOf(options));
  const repository = ref.repository;
  const description = formatReference(ref);
  const blobResults = new Map<string, UploadResult>();
  let finished = false;
  const close = async (): Promise<void> => {
    if (finished) return;
    finished = true;
    await client.close();
  };
  const assertOpen = (): void => {
    if (finished) throw new EsgzError('INTERNAL', `registry sink ${description} used after commit or abort`);
  };

  return {
    description,
    reference: ref,
    blobResults,
    async hasBlob(desc: Descriptor): Promise<boolean> {
      assertOpen();
      return client.hasBlob(repository, desc);
    },
    async putBlob(
      desc: Descriptor,
      open: () => Promise<Readable> | Readable,
      hints?: { mountFrom?: BlobLocation },
    ): Promise<void> {
      assertOpen();
      // Mounting only works inside one registry.
      const mountFrom = hints?.mountFrom?.registry === ref.registry ? hints.mountFrom.repository : undefined;
      const result = await client.uploadBlob(repository, desc, open, mountFrom !== undefined ? { mountFrom } : {});
      blobResults.set(desc.digest, result);
    },
    async putManifest(manifest: RawManifest): Promise<void> {
      assertOpen();
      await client.putManifest(repository, manifest.digest, manifest);
    },
    async commit(root: RawManifest): Promise<void> {
      assertOpen();
      try {
        if (ref.digest !== undefined && ref.digest !== root.digest) {
          throw new EsgzError(
            'BAD_REFERENCE',
            `destination ${description} names digest ${ref.digest}, but the image written is ${root.digest}`,
          );
        }
        // The one tag write, done last: until now nothing in the registry names the new image.
        await client.putManifest(repository, ref.tag ?? root.digest, root);
      } finally {
        await close();
      }
    },
    // Blobs and untagged manifests already pushed are harmless (garbage collection reclaims them); nothing is tagged.
    abort: close,
    close,
  };
}

/** Only the registry options of a bag that holds more (a command's or rpull's options), and only those set. */
export function registryOptionsOf(options: RegistryOptions): RegistryHostsOptions {
  const keys = [
    'plainHttp',
    'insecure',
    'dockerConfigDir',
    'userAgent',
    'hostsDirs',
    'tlsFiles',
    'credentials',
    'trace',
    'readTimeoutMs',
  ] as const;
  const set = keys.filter((k) => options[k] !== undefined);
  return Object.fromEntries(set.map((k) => [k, options[k]])) as RegistryHostsOptions;
}
