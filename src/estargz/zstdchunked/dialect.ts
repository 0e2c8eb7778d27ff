/**
 * The zstd:chunked dialects, told apart by a layer's descriptor annotations and its footer
 * (format only: no I/O). Spec sources (read, not copied): containers/storage
 * pkg/chunked/internal/minimal/compression.go (the io.github names, the 64-byte footer, TOC v1 with
 * tarSplitDigest) and its v1.43 pkg/chunked/internal (the io.containers names, the 40-byte footer);
 * stargz-snapshotter estargz/zstdchunked (the io.containers names plus toc.digest).
 *
 *  - `stargz`: what stargz-snapshotter's ctr-remote (and esgz by default) writes: toc.digest
 *    (sha256 of the TOC JSON) next to the io.containers keys, 40-byte footer, no tar-split.
 *  - `containers`: current containers/storage (podman ≥ 4.7/5): io.github keys (and a tar-split
 *    frame with its position key), 64-byte "GNUlInUx" footer, TOC v1 with tarSplitDigest.
 *  - `containers-legacy`: containers/storage ≤ 1.44 (Debian 12's podman 4.3): io.containers keys
 *    only, 40-byte footer, no tar-split.
 *  - `unannotated`: a 40-byte footer and no key at all (e.g. a blob copied without its
 *    annotations): stargz's and the legacy layout cannot be told apart, and no TOC can be verified.
 */
import { TOC_DIGEST_ANNOTATION } from '../constants.js';

/** stargz-snapshotter's names, also containers/storage ≤ 1.44's. */
export const MANIFEST_CHECKSUM_ANNOTATION = 'io.containers.zstd-chunked.manifest-checksum';
export const MANIFEST_POSITION_ANNOTATION = 'io.containers.zstd-chunked.manifest-position';
/** containers/storage ≥ 1.45 names (pkg/chunked/internal/minimal). */
export const CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION = 'io.github.containers.zstd-chunked.manifest-checksum';
export const CONTAINERS_MANIFEST_POSITION_ANNOTATION = 'io.github.containers.zstd-chunked.manifest-position';
/** containers/storage ≥ 1.48: where the tar-split frame is (`<offset>:<length>:<uncompressed length>`). */
export const CONTAINERS_TARSPLIT_POSITION_ANNOTATION = 'io.github.containers.zstd-chunked.tarsplit-position';

export type ZstdChunkedDialect = 'stargz' | 'containers' | 'containers-legacy' | 'unannotated';

/** The dialects `--zstdchunked-dialect` can write. */
export const WRITABLE_DIALECTS = ['stargz', 'containers'] as const;
export type WritableDialect = (typeof WRITABLE_DIALECTS)[number];

/** What a layer's annotations say about how to verify its TOC. */
export interface TOCExpectation {
  /** `containerd.io/snapshot/stargz/toc.digest`: sha256 of the TOC JSON. */
  tocDigest?: string;
  /** zstd:chunked manifest-checksum (either key family): sha256 of the compressed TOC bytes. */
  manifestChecksum?: string;
}

type Annotations = Readonly<Record<string, string>> | undefined;

/** The zstd:chunked manifest checksum, from the io.github key when there is one (it is what containers/storage reads first). */
export function manifestChecksumOf(annotations: Annotations): string | undefined {
  return annotations?.[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION] ?? annotations?.[MANIFEST_CHECKSUM_ANNOTATION];
}

/** The digests a layer's TOC must match; empty when the layer announces none (not lazily pullable). */
export function tocExpectation(annotations: Annotations): TOCExpectation {
  const tocDigest = annotations?.[TOC_DIGEST_ANNOTATION];
  const manifestChecksum = manifestChecksumOf(annotations);
  return { ...(tocDigest ? { tocDigest } : {}), ...(manifestChecksum ? { manifestChecksum } : {}) };
}

/** True when the annotations give a digest to verify a TOC against. */
export function announcesTOC(annotations: Annotations): boolean {
  const expected = tocExpectation(annotations);
  return expected.tocDigest !== undefined || expected.manifestChecksum !== undefined;
}

/**
 * The dialect of a zstd:chunked layer from its annotations and its footer kind (the codec's
 * FooterInfo.kind). The footer breaks ties for layers copied without annotations.
 */
export function zstdChunkedDialect(annotations: Annotations, footerKind?: string): ZstdChunkedDialect {
  if (annotations?.[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION] || footerKind === 'zstdchunked-containers')
    return 'containers';
  if (annotations?.[TOC_DIGEST_ANNOTATION]) return 'stargz';
  if (annotations?.[MANIFEST_CHECKSUM_ANNOTATION]) return 'containers-legacy';
  return 'unannotated';
}

/** The reader's OpenOptions that verify a TOC against what the annotations announce. */
export function tocVerification(annotations: Annotations): {
  expectedTOCDigest?: string;
  expectedStoredTOCDigest?: string;
} {
  const { tocDigest, manifestChecksum } = tocExpectation(annotations);
  return {
    ...(tocDigest ? { expectedTOCDigest: tocDigest } : {}),
    ...(manifestChecksum ? { expectedStoredTOCDigest: manifestChecksum } : {}),
  };
}
