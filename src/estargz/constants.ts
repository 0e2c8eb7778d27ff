/**
 * Constants of the eStargz format (stargz-snapshotter docs/estargz.md) and of zstd:chunked,
 * each named once. Readers and writers import them from here.
 */

/** Name of the TOC tar entry at the end of an eStargz blob. */
export const TOC_TAR_NAME = 'stargz.index.json';
/** Entry after the prioritized files: everything before it is prefetched. */
export const PREFETCH_LANDMARK = '.prefetch.landmark';
/** Entry at the start of a blob that has no prioritized files. */
export const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark';
/** Landmark file contents: the single byte 0xf. */
export const LANDMARK_CONTENTS = Buffer.from([0x0f]);

/** Footer size of an eStargz blob (gzip member with the TOC offset in the extra field). */
export const FOOTER_SIZE = 51;
/** Footer size written by older stargz (legacy, read-only support). */
export const LEGACY_FOOTER_SIZE = 47;

/** Default chunk size of regular file payloads (ctr-remote: 4 MiB). */
export const DEFAULT_CHUNK_SIZE = 4 << 20;

/**
 * Largest TOC JSON esgz reads. Parsing a TOC and mounting it (the FUSE layer tree) takes about
 * ten times its size in memory, so this keeps `rpull` + `run` of a hostile TOC under the 512 MiB
 * peak RSS esgz promises (measured at the limits: 40 MiB of long names in 262k entries). It holds
 * ~150k realistic entries. stargz-snapshotter has no limit; containers/storage stops at 150 MiB.
 */
export const MAX_TOC_SIZE = 40 << 20;
/**
 * Most TOC entries esgz reads: entries cost memory whatever their size (1M tiny crafted ones
 * took 1 GiB to mount), and a TOC of MAX_TOC_SIZE holds fewer real ones than this.
 */
export const MAX_TOC_ENTRIES = 1 << 18;
/** Tar framing around the TOC JSON in an eStargz TOC member (headers, padding, end-of-archive). */
export const TOC_TAR_SLACK = 64 << 10;
/**
 * Largest chunk (and largest inner offset of a chunk in its member) the reader accepts: a chunk is
 * inflated whole into memory. 16x the default chunk size; current writers never get near it.
 */
export const MAX_CHUNK_SIZE = 64 << 20;
/** The most any member is ever inflated to: a chunk's inner offset plus its length. */
export const MAX_MEMBER_PREFIX = 2 * MAX_CHUNK_SIZE;

/** Descriptor annotation: sha256 digest of the uncompressed TOC JSON. */
export const TOC_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
/** Descriptor annotation: size of the uncompressed tar. */
export const UNCOMPRESSED_SIZE_ANNOTATION = 'io.containers.estargz.uncompressed-size';
/** Annotation on layers of an external-TOC image pointing at the layer they describe. */
export const TOC_LAYER_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/layer.digest';
/** Suffix of the image that carries external TOCs (ctr-remote: `-esgztoc`). */
export const EXTERNAL_TOC_IMAGE_SUFFIX = '-esgztoc';
