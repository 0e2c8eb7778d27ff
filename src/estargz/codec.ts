/**
 * The seam between the ONE eStargz writer/reader and the compression format underneath.
 *
 * Modelled on stargz-snapshotter's Compressor/Decompressor split (estargz/types.go): the writer
 * decides *what* goes into each member (tar header bytes + one payload chunk, landmarks, where a
 * member starts) and computes offsets on the ordered output; a `MemberCompressor` (the worker
 * pool of ./member-pool.ts, which the conversion creates and hands to the writer) compresses
 * members; the codec describes the format: how the TOC and footer are laid out at the end of the
 * blob, its media type, and for the reader how to recognise the footer, parse the TOC and
 * decompress the bytes of one member/frame. A codec holds no threads and needs no closing.
 *
 * Two codecs implement this:
 *  - gzip  (eStargz): src/estargz/gzip-codec.ts
 *  - zstd  (zstd:chunked): src/estargz/zstdchunked/codec.ts
 *
 * Contract rules:
 *  - The compressor compresses each member as a pure function of its input bytes and its fixed
 *    parameters (backend, level), so blobs are byte-reproducible however many members compress
 *    concurrently and however they are batched. The writer may call it many times without
 *    awaiting (bounded); it awaits results in order.
 *  - Offsets in the TOC are compressed-blob offsets of member starts; `innerOffset` is an offset
 *    inside the decompressed member. Both are computed by the writer, never by the codec.
 *  - The TOC JSON bytes must be produced with `marshalTOC` (src/estargz/toc.ts) so that every
 *    codec hashes the same bytes for the same JTOC (the TOC digest is sha256 of those bytes).
 */
import type { JTOC } from './toc.js';

export type CodecName = 'gzip' | 'zstd';

export interface CompressedMembers {
  /** The compressed members, concatenated in input order. */
  data: Buffer;
  /** Compressed size of each member, in input order. */
  sizes: Uint32Array;
}

/**
 * What compresses members for the writer (stargz's Compressor): each member becomes one gzip
 * member / zstd frame of `format`. The worker pool (./member-pool.ts) implements it.
 */
export interface MemberCompressor {
  /** The member format it writes: must be the codec's. */
  readonly format: CodecName;
  /** Members compressing at once (worker threads); the writer sizes its in-flight window from it. */
  readonly size: number;
  /** Implementation, for reports: 'libdeflate' | 'zlib' | 'zstd-napi'. */
  readonly backend: string;
  /**
   * A buffer of at least `size` bytes (its length is its capacity) for the writer to fill with
   * members and pass to `compressMembers`: buffers are recycled (flat memory on big layers).
   */
  allocate(size: number): Buffer;
  /**
   * Compresses the members laid end to end in `batch` (member i ends at `ends[i]`), each into
   * its own gzip member / zstd frame, returned concatenated with each compressed size. The
   * caller hands `batch` over (it may move to a worker thread): it must not be used afterwards.
   */
  compressMembers(batch: Buffer, ends: Uint32Array): Promise<CompressedMembers>;
  /** Compresses one whole member; the caller keeps `input`. */
  compress(input: Buffer): Promise<Buffer>;
}

/** What the codec appends after the last member, and what the writer needs to know about it. */
export interface CodecTail {
  /** Bytes to write at `tocOffset`: the TOC in the codec's representation, then the footer. */
  bytes: Buffer;
  /** `sha256:<hex>` of the TOC JSON (`marshalTOC(toc)`): the `toc.digest` annotation. */
  tocDigest: string;
  /**
   * Uncompressed bytes these tail bytes add to the layer's tar stream (gzip: the
   * `stargz.index.json` tar entry and the end-of-archive blocks; zstd:chunked: whatever its
   * frames decompress to). The writer feeds them into the diffID hash and the uncompressed size.
   */
  uncompressedTail: Buffer;
  /** Extra descriptor annotations the format defines (e.g. zstd:chunked manifest position). */
  annotations?: Record<string, string>;
  /** External-TOC mode: the TOC blob (gzip member with the TOC tar entry) that goes into the TOC image. */
  externalTOC?: Buffer;
}

/**
 * Per-blob state a codec keeps while the writer streams one layer: it sees every uncompressed
 * byte, in order (zstd:chunked containers dialect: builds the tar-split from them).
 */
export interface BlobObserver {
  /** The next bytes of the layer's tar stream; the caller may reuse `uncompressed` afterwards. */
  update(uncompressed: Buffer): void;
}

/** Where the TOC is, as a footer says. */
export interface FooterInfo {
  /** Size of the footer at the end of the blob. */
  footerSize: number;
  /** Blob offset of the TOC bytes (gzip: start of the TOC member). */
  tocOffset: number;
  /**
   * Compressed length of the TOC bytes, when the footer says; undefined means "up to the footer"
   * (eStargz footers only carry the offset).
   */
  tocSize?: number;
  /** True for `STARGZEXTERNALTOC` footers: the TOC lives in a separate image, not in this blob. */
  externalTOC: boolean;
  /** Footer flavour, for reports: 'estargz' | 'estargz-legacy' | 'estargz-external' | 'zstdchunked'. */
  kind: string;
}

export interface ParsedTOC {
  toc: JTOC;
  /** The exact JSON bytes the digest covers. */
  tocJSON: Buffer;
  /** `sha256:<hex>` of `tocJSON`. */
  tocDigest: string;
  /** `sha256:<hex>` of the TOC as the blob stores it (zstd:chunked: the compressed TOC, its manifest-checksum). */
  storedTOCDigest?: string;
}

export interface Codec {
  readonly name: CodecName;
  /** OCI media type of a layer this codec writes. */
  readonly mediaType: string;

  // ---- writer side ----------------------------------------------------------------------

  /**
   * Builds everything after the last member: the TOC and the footer, compressing what needs it
   * with `compressor`. `tocOffset` is the compressed blob offset where `bytes` will start
   * (= total size of all members written).
   */
  buildTail(toc: JTOC, tocOffset: number, compressor: MemberCompressor, observer?: BlobObserver): Promise<CodecTail>;
  /** A fresh observer for one blob, when the codec needs to see its bytes (handed back to `buildTail`). */
  startBlob?(where: string): BlobObserver | undefined;
  /**
   * False when this codec's layers must not carry `containerd.io/snapshot/stargz/toc.digest`
   * (containers/storage refuses it next to its own zstd:chunked keys). Default true.
   */
  readonly tocDigestAnnotation?: boolean;

  // ---- reader side ----------------------------------------------------------------------

  /** How many bytes at the end of a blob the reader fetches to find the footer. */
  readonly maxFooterSize: number;
  /**
   * Recognises and parses the footer in `tail` (the last min(maxFooterSize, blobSize) bytes).
   * Returns undefined when the bytes are not this codec's footer at all; throws EsgzError
   * (BAD_FORMAT) when they are but are corrupt.
   */
  parseFooter(tail: Buffer, blobSize: number): FooterInfo | undefined;
  /** Parses the TOC bytes the footer points at (decompress, untar if needed, JSON-parse, validate). */
  parseTOC(tocBytes: Buffer): Promise<ParsedTOC>;
  /**
   * Decompresses `compressed`, which starts at a member/frame start and may hold several
   * consecutive members/frames; returns the first `maxOutput` bytes (default MAX_MEMBER_PREFIX) of
   * their concatenated uncompressed bytes, or all of them when fewer. Inflating stops once it has
   * them: a member's declared sizes bound the memory it costs, whatever it would inflate to.
   */
  decompress(compressed: Buffer, maxOutput?: number): Promise<Buffer>;
}
