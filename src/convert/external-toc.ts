/**
 * External TOCs (`--estargz-external-toc`, ctr-remote's STARGZEXTERNALTOC footer): the layers keep
 * only a footer, and their TOCs go to a second image, the TOC image, named after the image with
 * "-esgztoc" appended to its tag. Both sides are here: the name (tocImageReference), writing the
 * TOC image (writeExternalTOCImage) and reading a layer's TOC back from it (ExternalTOCImage).
 */
import { Readable } from 'node:stream';
import { EsgzError, withContext } from '../errors.js';
import {
  EXTERNAL_TOC_IMAGE_SUFFIX,
  MAX_TOC_SIZE,
  TOC_LAYER_DIGEST_ANNOTATION,
  TOC_TAR_SLACK,
} from '../estargz/constants.js';
import { digestOf } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import type { Descriptor, RawManifest } from '../oci/types.js';
import { resolveImages, readSmallBlob, type PlatformChoice } from '../image/resolve.js';
import { openRegistrySource, type RegistryOptions } from '../image/transports/registry.js';
import type { ImageSink, ImageSource } from '../image/types.js';
import { formatReference, parseReference } from '../registry/reference.js';

/**
 * The TOC image of an external-TOC conversion (ctr-remote's `DST-esgztoc`): an OCI manifest with
 * an empty config whose gzip layers are the TOC blobs, each annotated with the digest of the
 * eStargz layer it describes, sorted by digest as ctr-remote sorts them.
 */
export function externalTOCImage(tocs: Map<string, Buffer>): {
  config: Buffer;
  manifest: Buffer;
  blobs: Array<{ descriptor: Descriptor; data: Buffer }>;
} {
  const config = Buffer.from('{}');
  const blobs = [...tocs].map(([layerDigest, data]) => ({
    descriptor: {
      mediaType: MediaType.ociLayerGzip,
      digest: digestOf(data),
      size: data.length,
      annotations: { [TOC_LAYER_DIGEST_ANNOTATION]: layerDigest },
    },
    data,
  }));
  blobs.sort((a, b) =>
    a.descriptor.digest < b.descriptor.digest ? -1 : a.descriptor.digest > b.descriptor.digest ? 1 : 0,
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: digestOf(config), size: config.length },
      layers: blobs.map((b) => b.descriptor),
    }),
  );
  return { config, manifest, blobs };
}

/** Writes the TOC image to `sink` (blobs, then the manifest as the root); aborts the sink on failure. */
export async function writeExternalTOCImage(sink: ImageSink, tocs: Map<string, Buffer>): Promise<RawManifest> {
  const image = externalTOCImage(tocs);
  try {
    await sink.putBlob(
      { mediaType: MediaType.ociConfig, digest: digestOf(image.config), size: image.config.length },
      () => Readable.from([image.config]),
    );
    for (const blob of image.blobs) await sink.putBlob(blob.descriptor, () => Readable.from([blob.data]));
    const root: RawManifest = {
      bytes: image.manifest,
      mediaType: MediaType.ociManifest,
      digest: digestOf(image.manifest),
    };
    await sink.commit(root);
    return root;
  } catch (err) {
    await sink.abort().catch(() => {});
    throw err;
  }
}

/**
 * Where ctr-remote puts the TOC image: the destination with "-esgztoc" appended to its tag.
 * An untagged destination is refused, as a digest is: the main image would have no tag to
 * pair with (ctr-remote would name the TOC image ":-esgztoc", which no registry takes).
 * Docker archives cannot hold a second image.
 */
export function tocImageReference(spec: string): string {
  if (spec.startsWith('docker-archive:'))
    throw new EsgzError(
      'UNSUPPORTED',
      '--estargz-external-toc cannot write its TOC image into a docker archive; use a registry or oci: destination',
    );
  if (/@[a-z0-9]+:[0-9a-f]+$/.test(spec))
    throw new EsgzError('BAD_FLAG', `--estargz-external-toc needs a tagged destination, not a digest (${spec})`);
  const lastSlash = spec.lastIndexOf('/');
  const colon = spec.lastIndexOf(':');
  const hasTag = colon > lastSlash && !(spec.startsWith('oci:') && colon === 3);
  if (!hasTag)
    throw new EsgzError('BAD_FLAG', `--estargz-external-toc needs a tagged destination, e.g. ${spec}:TAG (${spec})`);
  return `${spec}${EXTERNAL_TOC_IMAGE_SUFFIX}`;
}

/**
 * The TOC image of an image, read: opened on the first `tocFor`, resolved once for all the
 * layers asked about. Each TOC is the TOC image's layer annotated with the layer's digest
 * (`containerd.io/snapshot/stargz/layer.digest`), read bounded and digest-verified; the
 * eStargz reader then checks it against the layer's TOC digest.
 */
export class ExternalTOCImage {
  private resolved?: Promise<{ source: ImageSource; layers: Descriptor[] }>;

  /**
   * `open` gives the TOC image's source; the ExternalTOCImage closes it unless `owned` is false
   * (a source the caller opened and closes).
   */
  constructor(
    private readonly open: () => Promise<ImageSource>,
    private readonly choice: PlatformChoice = {},
    private readonly owned = true,
  ) {}

  /**
   * The TOC image of a registry image being pulled: the same repository with the tag suffixed. A
   * digest pins the image but cannot name its TOC image: the tag does.
   */
  static ofRegistryImage(reference: string, options: RegistryOptions, choice: PlatformChoice = {}): ExternalTOCImage {
    return new ExternalTOCImage(async () => {
      const ref = parseReference(reference);
      if (!ref.tag) {
        const why = `its TOC image (tag${EXTERNAL_TOC_IMAGE_SUFFIX}) can only be found from a tagged reference`;
        throw new EsgzError('UNSUPPORTED', `${reference}: the layer's TOC is external, and ${why}`);
      }
      return openRegistrySource(tocImageReference(formatReference({ ...ref, digest: undefined })), options);
    }, choice);
  }

  private layers(): Promise<{ source: ImageSource; layers: Descriptor[] }> {
    this.resolved ??= (async () => {
      const source = await this.open();
      try {
        const [image] = await resolveImages(source, this.choice);
        return { source, layers: image!.manifest.layers };
      } catch (err) {
        if (this.owned) await source.close();
        throw withContext(`TOC image ${source.description}`, err);
      }
    })();
    return this.resolved;
  }

  /** The TOC blob of the layer `layerDigest`. */
  async tocFor(layerDigest: string): Promise<Buffer> {
    const { source, layers } = await this.layers();
    const desc = layers.find((l) => l.annotations?.[TOC_LAYER_DIGEST_ANNOTATION] === layerDigest);
    if (!desc) throw new EsgzError('NOT_FOUND', `${source.description}: no TOC for layer ${layerDigest}`);
    const what = `${source.description}: TOC blob for layer ${layerDigest}`;
    const tooLarge = (size: number): EsgzError =>
      new EsgzError('BAD_FORMAT', `${what} is ${size} bytes, larger than esgz reads (${MAX_TOC_SIZE >> 20} MiB)`);
    return readSmallBlob(source, desc, MAX_TOC_SIZE + TOC_TAR_SLACK, what, tooLarge);
  }

  async close(): Promise<void> {
    if (!this.owned || !this.resolved) return;
    await (await this.resolved.catch(() => undefined))?.source.close();
  }
}

/** The TOC of `layerDigest` from a TOC image the caller opened (and closes). */
export function fetchExternalTOC(tocImage: ImageSource, layerDigest: string): Promise<Buffer> {
  return new ExternalTOCImage(async () => tocImage, {}, false).tocFor(layerDigest);
}
