/**
 * The zstd:chunked codec of the one eStargz writer/reader (see ../codec.ts): every member is one
 * zstd frame; the tail is the tar end-of-archive frame, the zstd-compressed TOC in a skippable
 * frame and the 40-byte footer in another (layout in ./format.ts).
 *
 * Descriptor annotations this codec contributes (the transform adds `toc.digest` and
 * `uncompressed-size` for every codec):
 *  - `io.containers.zstd-chunked.manifest-checksum` = sha256 of the *compressed* TOC bytes,
 *    `io.containers.zstd-chunked.manifest-position` = `<offset>:<compressed>:<uncompressed>:1`
 *    (offset of the compressed TOC, after its skippable frame header). stargz-snapshotter reads
 *    the position as a hint; containers/storage ≤ 1.44 (Debian 12's podman 4.3) takes its
 *    zstd:chunked partial-pull path on the checksum key.
 *  - `io.github.containers.zstd-chunked.*` (containers/storage ≥ 1.45 names, same values) only
 *    on request (`containersStorageAnnotations`; the CLI's ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS=1):
 *    containers/storage ≥ 1.52 and containers/image ≥ 5.30 refuse a layer that carries both
 *    them and `containerd.io/snapshot/stargz/toc.digest` ("both zstd:chunked and eStargz TOC
 *    found"), and that error fails the whole pull instead of falling back to a full download.
 *
 * The `containers` dialect (option `dialect`) writes containers/storage's current layout
 * instead; its tar-split is built per blob from the uncompressed stream (startBlob → TarSplitBuilder).
 */
import { createHash } from 'node:crypto';
import { EsgzError } from '../../errors.js';
import { MediaType } from '../../oci/media-types.js';
import type { BlobObserver, Codec, CodecTail, FooterInfo, MemberCompressor, ParsedTOC } from '../codec.js';
import { MAX_MEMBER_PREFIX } from '../constants.js';
import { END_OF_ARCHIVE } from '../tar.js';
import { marshalTOC, parseTOCJSON, sha256Digest, type JTOC } from '../toc.js';
import {
  CONTAINERS_FOOTER_FRAME_SIZE,
  MAX_TOC_SIZE,
  MANIFEST_TYPE_CRFS,
  SKIPPABLE_HEADER_SIZE,
  decompressFrames,
  encodeContainersFooter,
  encodeFooter,
  isSkippableMagic,
  parseFooter,
  skippableFrame,
  unwrapSkippableFrame,
} from './format.js';

import {
  CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION,
  CONTAINERS_MANIFEST_POSITION_ANNOTATION,
  CONTAINERS_TARSPLIT_POSITION_ANNOTATION,
  MANIFEST_CHECKSUM_ANNOTATION,
  MANIFEST_POSITION_ANNOTATION,
  type WritableDialect,
} from './dialect.js';
import { TarSplitBuilder } from './tar-split.js';

export {
  CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION,
  CONTAINERS_MANIFEST_POSITION_ANNOTATION,
  CONTAINERS_TARSPLIT_POSITION_ANNOTATION,
  MANIFEST_CHECKSUM_ANNOTATION,
  MANIFEST_POSITION_ANNOTATION,
} from './dialect.js';

export interface ZstdChunkedCodecOptions {
  /**
   * Also emit the `io.github.containers.zstd-chunked.*` names. Off by default: see the module
   * comment (they make newer podman refuse the layer next to the stargz TOC digest).
   */
  containersStorageAnnotations?: boolean;
  /** Write the tar end-of-archive frame before the TOC (default true; ctr-remote omits it). */
  endOfArchive?: boolean;
  /**
   * 'stargz' (default): stargz-snapshotter's layout (above). 'containers': containers/storage's
   * current one: the tar-split frame after the TOC, TOC v1 with tarSplitDigest, the 64-byte
   * footer, the io.github keys plus the io.containers ones older podman reads, no toc.digest.
   */
  dialect?: WritableDialect;
}

export class ZstdChunkedCodec implements Codec {
  readonly name = 'zstd' as const;
  readonly mediaType = MediaType.ociLayerZstd;
  /** The reader fetches enough tail for either footer flavour. */
  readonly maxFooterSize = CONTAINERS_FOOTER_FRAME_SIZE;
  readonly containersStorageAnnotations: boolean;
  readonly endOfArchive: boolean;
  readonly dialect: WritableDialect;
  readonly tocDigestAnnotation: boolean;

  constructor(options: ZstdChunkedCodecOptions = {}) {
    this.containersStorageAnnotations = options.containersStorageAnnotations ?? false;
    this.endOfArchive = options.endOfArchive ?? true;
    this.dialect = options.dialect ?? 'stargz';
    this.tocDigestAnnotation = this.dialect === 'stargz';
  }

  startBlob(where: string): BlobObserver | undefined {
    return this.dialect === 'containers' ? new TarSplitBuilder(where) : undefined;
  }

  async buildTail(
    toc: JTOC,
    tocOffset: number,
    compressor: MemberCompressor,
    observer?: BlobObserver,
  ): Promise<CodecTail> {
    if (this.dialect === 'containers') {
      if (!(observer instanceof TarSplitBuilder))
        throw new EsgzError(
          'INTERNAL',
          'zstd:chunked containers dialect: the writer did not stream the layer through startBlob',
        );
      return containersTail(toc, tocOffset, compressor, observer);
    }
    const tocJSON = marshalTOC(toc);
    const [eoa, compressedTOC] = await Promise.all([
      this.endOfArchive ? compressor.compress(END_OF_ARCHIVE) : Promise.resolve(Buffer.alloc(0)),
      compressor.compress(tocJSON),
    ]);
    const tocPayloadOffset = tocOffset + eoa.length + SKIPPABLE_HEADER_SIZE;
    const checksum = `sha256:${createHash('sha256').update(compressedTOC).digest('hex')}`;
    const position = `${tocPayloadOffset}:${compressedTOC.length}:${tocJSON.length}:${MANIFEST_TYPE_CRFS}`;
    const annotations: Record<string, string> = {
      [MANIFEST_CHECKSUM_ANNOTATION]: checksum,
      [MANIFEST_POSITION_ANNOTATION]: position,
    };
    if (this.containersStorageAnnotations) {
      annotations[CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION] = checksum;
      annotations[CONTAINERS_MANIFEST_POSITION_ANNOTATION] = position;
    }
    return {
      bytes: Buffer.concat([
        eoa,
        skippableFrame(compressedTOC),
        encodeFooter(tocPayloadOffset, compressedTOC.length, tocJSON.length),
      ]),
      tocDigest: sha256Digest(tocJSON),
      uncompressedTail: this.endOfArchive ? Buffer.from(END_OF_ARCHIVE) : Buffer.alloc(0),
      annotations,
    };
  }

  /**
   * FooterInfo.tocOffset is the start of the TOC's skippable frame (so data members end where
   * it begins) and tocSize covers its 8-byte header: parseTOC checks that header's length.
   */
  parseFooter(tail: Buffer, blobSize: number): FooterInfo | undefined {
    const footer = parseFooter(tail, blobSize);
    if (!footer) return undefined;
    return {
      footerSize: footer.frameSize,
      tocOffset: footer.tocOffset - SKIPPABLE_HEADER_SIZE,
      tocSize: footer.tocCompressedSize + SKIPPABLE_HEADER_SIZE,
      externalTOC: false,
      kind: footer.flavour === 'stargz' ? 'zstdchunked' : 'zstdchunked-containers',
    };
  }

  /**
   * Accepts the TOC skippable frame as the footer locates it, or the bare compressed TOC as the
   * position annotation locates it.
   */
  async parseTOC(tocBytes: Buffer): Promise<ParsedTOC> {
    const where = 'zstd:chunked TOC';
    const compressed =
      tocBytes.length >= 4 && isSkippableMagic(tocBytes.readUInt32LE(0))
        ? unwrapSkippableFrame(tocBytes, where)
        : tocBytes;
    if (compressed.length === 0) throw new EsgzError('BAD_FORMAT', `${where} is empty`);
    // One byte past the limit tells a TOC that is too large from one that is just the limit.
    const tocJSON = decompressFrames(compressed, where, 0, MAX_TOC_SIZE + 1);
    if (tocJSON.length > MAX_TOC_SIZE)
      throw new EsgzError(
        'BAD_FORMAT',
        `${where} inflates to more than ${MAX_TOC_SIZE >> 20} MiB (the most esgz reads)`,
      );
    if (tocJSON.length === 0) throw new EsgzError('BAD_FORMAT', `${where} decompresses to 0 bytes`);
    return {
      toc: parseTOCJSON(tocJSON, where),
      tocJSON,
      tocDigest: sha256Digest(tocJSON),
      storedTOCDigest: sha256Digest(compressed),
    };
  }

  async decompress(compressed: Buffer, maxOutput = MAX_MEMBER_PREFIX): Promise<Buffer> {
    return decompressFrames(compressed, 'zstd:chunked member', 0, maxOutput);
  }
}

/**
 * containers/storage's tail (compressor.go writeZstdChunkedStream + minimal.WriteZstdChunkedManifest):
 * the end-of-archive frame, the TOC (v1, with the tar-split's digest), the tar-split, the 64-byte footer.
 */
async function containersTail(
  toc: JTOC,
  tocOffset: number,
  compressor: MemberCompressor,
  tarSplit: TarSplitBuilder,
): Promise<CodecTail> {
  tarSplit.update(END_OF_ARCHIVE);
  const tarSplitJSON = tarSplit.finish();
  const [eoa, compressedTarSplit] = await Promise.all([
    compressor.compress(END_OF_ARCHIVE),
    compressor.compress(tarSplitJSON),
  ]);
  const tocJSON = marshalTOC({ ...toc, tarSplitDigest: sha256Digest(compressedTarSplit) });
  const compressedTOC = await compressor.compress(tocJSON);
  const tocPayloadOffset = tocOffset + eoa.length + SKIPPABLE_HEADER_SIZE;
  const tarSplitOffset = tocPayloadOffset + compressedTOC.length + SKIPPABLE_HEADER_SIZE;
  const checksum = sha256Digest(compressedTOC);
  const position = `${tocPayloadOffset}:${compressedTOC.length}:${tocJSON.length}:${MANIFEST_TYPE_CRFS}`;
  return {
    bytes: Buffer.concat([
      eoa,
      skippableFrame(compressedTOC),
      skippableFrame(compressedTarSplit),
      encodeContainersFooter({
        tocOffset: tocPayloadOffset,
        tocCompressedSize: compressedTOC.length,
        tocUncompressedSize: tocJSON.length,
        tarSplitOffset,
        tarSplitCompressedSize: compressedTarSplit.length,
        tarSplitUncompressedSize: tarSplitJSON.length,
      }),
    ]),
    tocDigest: sha256Digest(tocJSON),
    uncompressedTail: Buffer.from(END_OF_ARCHIVE),
    annotations: {
      [CONTAINERS_MANIFEST_CHECKSUM_ANNOTATION]: checksum,
      [CONTAINERS_MANIFEST_POSITION_ANNOTATION]: position,
      [CONTAINERS_TARSPLIT_POSITION_ANNOTATION]: `${tarSplitOffset}:${compressedTarSplit.length}:${tarSplitJSON.length}`,
      // containers/storage ≤ 1.44 (Debian 12's podman 4.3) knows only these names.
      [MANIFEST_CHECKSUM_ANNOTATION]: checksum,
      [MANIFEST_POSITION_ANNOTATION]: position,
    },
  };
}

export function createZstdChunkedCodec(options: ZstdChunkedCodecOptions = {}): ZstdChunkedCodec {
  return new ZstdChunkedCodec(options);
}

/** The `manifest-position` value parsed: where the compressed TOC is, and its sizes. */
export function parseManifestPosition(value: string): {
  offset: number;
  compressedSize: number;
  uncompressedSize: number;
  manifestType: number;
} {
  const m = /^(\d+):(\d+):(\d+):(\d+)$/.exec(value);
  if (!m)
    throw new EsgzError(
      'BAD_FORMAT',
      `zstd:chunked manifest position ${JSON.stringify(value)} is not <offset>:<length>:<uncompressed length>:<type>`,
    );
  const [offset, compressedSize, uncompressedSize, manifestType] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
  ];
  if (![offset, compressedSize, uncompressedSize].every(Number.isSafeInteger))
    throw new EsgzError('BAD_FORMAT', `zstd:chunked manifest position ${value} is out of range`);
  return { offset, compressedSize, uncompressedSize, manifestType };
}
