/** OCI and Docker media types, named once. */
export const MediaType = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerForeignGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.dockerManifestList];
export const MANIFEST_MEDIA_TYPES: readonly string[] = [MediaType.ociManifest, MediaType.dockerManifest];

export function isIndexMediaType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && INDEX_MEDIA_TYPES.includes(mediaType);
}

export function isManifestMediaType(mediaType: string | undefined): boolean {
  return mediaType !== undefined && MANIFEST_MEDIA_TYPES.includes(mediaType);
}

export function isDockerMediaType(mediaType: string | undefined): boolean {
  return mediaType?.startsWith('application/vnd.docker.') ?? false;
}

export type LayerCompression = 'gzip' | 'zstd' | 'none';

/** Compression a layer media type declares (the bytes are still sniffed before decoding). */
export function layerCompressionOf(mediaType: string): LayerCompression {
  if (mediaType.endsWith('+zstd')) return 'zstd';
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  return 'none';
}

/** Docker media types and their OCI equivalents (`--oci`). */
const DOCKER_TO_OCI: Record<string, string> = {
  [MediaType.dockerManifest]: MediaType.ociManifest,
  [MediaType.dockerManifestList]: MediaType.ociIndex,
  [MediaType.dockerConfig]: MediaType.ociConfig,
  [MediaType.dockerLayerGzip]: MediaType.ociLayerGzip,
  [MediaType.dockerLayer]: MediaType.ociLayer,
  [MediaType.dockerLayerForeignGzip]: MediaType.ociLayerNondistributableGzip,
};

const DOCKER_LAYER_TYPES: readonly string[] = [
  MediaType.dockerLayerGzip,
  MediaType.dockerLayer,
  MediaType.dockerLayerForeignGzip,
];

/** Layer media type (OCI or Docker) → its Docker form, derived from DOCKER_TO_OCI so the two agree. */
const DOCKER_LAYER_OF: Record<string, string> = Object.fromEntries(
  DOCKER_LAYER_TYPES.flatMap((docker) => [
    [DOCKER_TO_OCI[docker]!, docker],
    [docker, docker],
  ]),
);

/** The OCI media type for a Docker one; other media types unchanged. */
export function toOciMediaType(mediaType: string): string {
  return DOCKER_TO_OCI[mediaType] ?? mediaType;
}

/** The Docker media type of a layer, or undefined for OCI-only formats (e.g. zstd) that have none. */
export function dockerLayerMediaType(mediaType: string): string | undefined {
  return DOCKER_LAYER_OF[mediaType];
}

/** buildx's annotation on the in-toto attestation manifests (provenance, SBOM) it adds to an index. */
export const REFERENCE_TYPE_ANNOTATION = 'vnd.docker.reference.type';
export const ATTESTATION_REFERENCE_TYPE = 'attestation-manifest';

/**
 * One rule, for every command, for which entries of an index are attestations rather than
 * images: the annotation, or the unknown/unknown platform buildx gives them.
 */
export function isAttestationManifest(desc: {
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string };
}): boolean {
  return (
    desc.annotations?.[REFERENCE_TYPE_ANNOTATION] === ATTESTATION_REFERENCE_TYPE ||
    (desc.platform?.os === 'unknown' && desc.platform.architecture === 'unknown')
  );
}
