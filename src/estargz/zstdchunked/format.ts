/**
 * The zstd:chunked container format, byte level: skippable frames, the footer, and walking /
 * decompressing a run of frames. Spec sources (read, not copied): stargz-snapshotter
 * estargz/zstdchunked/zstdchunked.go (the 40-byte footer its reader parses) and containers/storage
 * pkg/chunked/internal (the same layout, annotation names, and the later 64-byte footer).
 *
 * Blob layout esgz writes:
 *
 *   [zstd frame per member ...]                 tar headers + file payload chunks (the writer)
 *   [zstd frame: 1024 zero bytes]               tar end-of-archive, so `zstd -dc | tar` sees a whole tar
 *   [skippable frame: zstd(TOC JSON)]           magic 0x184D2A50, LE u32 length, compressed TOC
 *   [skippable frame: 40-byte footer]           magic 0x184D2A50, LE u32 40, then:
 *        u64 LE  offset of the compressed TOC (just after its skippable frame header)
 *        u64 LE  compressed TOC length
 *        u64 LE  uncompressed TOC length
 *        u64 LE  manifest type (1 = CRFS, the stargz JTOC)
 *        8 bytes "GnUlInUx"
 *
 * Skippable frames decompress to nothing, so the whole blob is one valid zstd stream whose
 * content is the layer tar.
 */
import { createRequire } from 'node:module';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { EsgzError } from '../../errors.js';
import { MAX_MEMBER_PREFIX, MAX_TOC_SIZE } from '../constants.js';

/** First skippable frame magic (RFC 8878 3.1.2); 0x184D2A50..0x184D2A5F are all skippable. */
export const SKIPPABLE_FRAME_MAGIC = 0x184d2a50;
const SKIPPABLE_MASK = 0xfffffff0;
/** zstd frame magic 28 b5 2f fd (little-endian u32). */
export const ZSTD_FRAME_MAGIC = 0xfd2fb528;
/** Size of a skippable frame header: magic + LE u32 length. */
export const SKIPPABLE_HEADER_SIZE = 8;

/** The footer payload stargz-snapshotter writes and reads (zstdchunked.FooterSize). */
export const FOOTER_PAYLOAD_SIZE = 40;
/** The footer as it sits at the end of the blob: skippable header + payload. */
export const FOOTER_FRAME_SIZE = SKIPPABLE_HEADER_SIZE + FOOTER_PAYLOAD_SIZE;
/** The footer payload newer containers/storage writes (adds the tar-split position). */
export const CONTAINERS_FOOTER_PAYLOAD_SIZE = 64;
export const CONTAINERS_FOOTER_FRAME_SIZE = SKIPPABLE_HEADER_SIZE + CONTAINERS_FOOTER_PAYLOAD_SIZE;

/** stargz-snapshotter's (and containers/storage ≤ 1.47's) footer magic. */
export const FOOTER_MAGIC = Buffer.from('GnUlInUx', 'latin1');
/** containers/storage ≥ 1.48 writes "GNUlInUx" (capital N) in its 64-byte footer. */
export const CONTAINERS_FOOTER_MAGIC = Buffer.from('GNUlInUx', 'latin1');
/** Manifest type 1: the TOC is the CRFS/stargz JTOC JSON. */
export const MANIFEST_TYPE_CRFS = 1;

/** Largest TOC esgz agrees to decompress (see constants.ts; containers/storage stops at 150 MiB). */
export { MAX_TOC_SIZE };

export function isSkippableMagic(magic: number): boolean {
  return (magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_FRAME_MAGIC;
}

/** Wraps `payload` in a skippable frame (magic 0x184D2A50, as both reference writers use). */
export function skippableFrame(payload: Buffer): Buffer {
  if (payload.length > 0xffffffff)
    throw new EsgzError('INTERNAL', `skippable frame payload of ${payload.length} bytes exceeds 4 GiB`);
  const header = Buffer.alloc(SKIPPABLE_HEADER_SIZE);
  header.writeUInt32LE(SKIPPABLE_FRAME_MAGIC, 0);
  header.writeUInt32LE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

export interface ZstdChunkedFooter {
  /** Blob offset of the compressed TOC bytes (after the TOC's skippable frame header). */
  tocOffset: number;
  tocCompressedSize: number;
  tocUncompressedSize: number;
  manifestType: number;
  /** containers/storage 64-byte footers only: where the tar-split frame payload is. */
  tarSplit?: { offset: number; compressedSize: number; uncompressedSize: number };
  /** Size of the footer skippable frame at the end of the blob. */
  frameSize: number;
  flavour: 'stargz' | 'containers';
}

/** The footer skippable frame stargz-snapshotter's zstdchunked reader expects (48 bytes). */
export function encodeFooter(tocOffset: number, tocCompressedSize: number, tocUncompressedSize: number): Buffer {
  const payload = Buffer.alloc(FOOTER_PAYLOAD_SIZE);
  payload.writeBigUInt64LE(BigInt(tocOffset), 0);
  payload.writeBigUInt64LE(BigInt(tocCompressedSize), 8);
  payload.writeBigUInt64LE(BigInt(tocUncompressedSize), 16);
  payload.writeBigUInt64LE(BigInt(MANIFEST_TYPE_CRFS), 24);
  FOOTER_MAGIC.copy(payload, 32);
  return skippableFrame(payload);
}

/** Where the TOC and the tar-split frame payloads are, for containers/storage's 64-byte footer. */
export interface ContainersFooterFields {
  tocOffset: number;
  tocCompressedSize: number;
  tocUncompressedSize: number;
  tarSplitOffset: number;
  tarSplitCompressedSize: number;
  tarSplitUncompressedSize: number;
}

/**
 * containers/storage's footer skippable frame (72 bytes): the TOC's offset and sizes, the
 * manifest type, the tar-split's offset and sizes, then "GNUlInUx" (minimal.footerDataToBlob).
 */
export function encodeContainersFooter(f: ContainersFooterFields): Buffer {
  const payload = Buffer.alloc(CONTAINERS_FOOTER_PAYLOAD_SIZE);
  const fields = [
    f.tocOffset,
    f.tocCompressedSize,
    f.tocUncompressedSize,
    MANIFEST_TYPE_CRFS,
    f.tarSplitOffset,
    f.tarSplitCompressedSize,
    f.tarSplitUncompressedSize,
  ];
  fields.forEach((value, i) => payload.writeBigUInt64LE(BigInt(value), i * 8));
  CONTAINERS_FOOTER_MAGIC.copy(payload, fields.length * 8);
  return skippableFrame(payload);
}

function u64(buf: Buffer, at: number, what: string): number {
  const value = buf.readBigUInt64LE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER))
    throw new EsgzError('BAD_FORMAT', `zstd:chunked footer: ${what} ${value} is too large`);
  return Number(value);
}

/**
 * Finds and parses the zstd:chunked footer at the end of `tail` (the last bytes of a blob of
 * `blobSize` bytes). Undefined when the blob does not end in a footer-shaped skippable frame
 * carrying a zstd:chunked magic; EsgzError(BAD_FORMAT) when it does but the footer is wrong.
 */
export function parseFooter(tail: Buffer, blobSize: number): ZstdChunkedFooter | undefined {
  const magicAtEnd = tail.length >= 8 ? tail.subarray(tail.length - 8) : undefined;
  const frameAt = (size: number): Buffer | undefined => {
    if (tail.length < size) return undefined;
    const frame = tail.subarray(tail.length - size);
    if (!isSkippableMagic(frame.readUInt32LE(0))) return undefined;
    return frame.readUInt32LE(4) === size - SKIPPABLE_HEADER_SIZE ? frame : undefined;
  };

  const stargz = frameAt(FOOTER_FRAME_SIZE);
  const containers = stargz ? undefined : frameAt(CONTAINERS_FOOTER_FRAME_SIZE);
  if (!stargz && !containers) {
    if (magicAtEnd && (magicAtEnd.equals(FOOTER_MAGIC) || magicAtEnd.equals(CONTAINERS_FOOTER_MAGIC))) {
      throw new EsgzError(
        'BAD_FORMAT',
        'zstd:chunked footer: the blob ends in the GnUlInUx magic but not in a 40- or 64-byte skippable footer frame',
      );
    }
    return undefined;
  }
  const frame = (stargz ?? containers)!;
  const payload = frame.subarray(SKIPPABLE_HEADER_SIZE);
  const magic = payload.subarray(payload.length - 8);
  if (!magic.equals(FOOTER_MAGIC) && !magic.equals(CONTAINERS_FOOTER_MAGIC)) {
    if (containers) return undefined; // an unrelated 64-byte skippable frame: not ours
    throw new EsgzError(
      'BAD_FORMAT',
      `zstd:chunked footer: wrong magic ${JSON.stringify(magic.toString('latin1'))} (expected "GnUlInUx")`,
    );
  }
  const footer: ZstdChunkedFooter = {
    tocOffset: u64(payload, 0, 'TOC offset'),
    tocCompressedSize: u64(payload, 8, 'compressed TOC length'),
    tocUncompressedSize: u64(payload, 16, 'uncompressed TOC length'),
    manifestType: u64(payload, 24, 'manifest type'),
    frameSize: frame.length,
    flavour: stargz ? 'stargz' : 'containers',
  };
  if (containers) {
    footer.tarSplit = {
      offset: u64(payload, 32, 'tar-split offset'),
      compressedSize: u64(payload, 40, 'tar-split length'),
      uncompressedSize: u64(payload, 48, 'tar-split uncompressed length'),
    };
  }
  if (footer.manifestType !== MANIFEST_TYPE_CRFS) {
    throw new EsgzError(
      'BAD_FORMAT',
      `zstd:chunked footer: manifest type ${footer.manifestType} is not supported (only 1, the CRFS TOC)`,
    );
  }
  const tocEnd = footer.tocOffset + footer.tocCompressedSize;
  if (
    footer.tocOffset < SKIPPABLE_HEADER_SIZE ||
    footer.tocCompressedSize === 0 ||
    tocEnd > blobSize - footer.frameSize
  ) {
    throw new EsgzError(
      'BAD_FORMAT',
      `zstd:chunked footer: TOC at ${footer.tocOffset} (+${footer.tocCompressedSize}) does not lie inside the blob before the footer (${blobSize} bytes)`,
    );
  }
  if (footer.tocUncompressedSize === 0 || footer.tocUncompressedSize > MAX_TOC_SIZE) {
    throw new EsgzError(
      'BAD_FORMAT',
      `zstd:chunked footer: uncompressed TOC length ${footer.tocUncompressedSize} is out of range (1..${MAX_TOC_SIZE})`,
    );
  }
  return footer;
}

/**
 * Returns the payload of the skippable frame that must fill `frame` exactly; `what` names it.
 * A length field that disagrees with the bytes around it is a "lying length".
 */
export function unwrapSkippableFrame(frame: Buffer, what: string): Buffer {
  if (frame.length < SKIPPABLE_HEADER_SIZE || !isSkippableMagic(frame.readUInt32LE(0))) {
    throw new EsgzError('BAD_FORMAT', `${what} is not in a zstd skippable frame`);
  }
  const declared = frame.readUInt32LE(4);
  if (declared !== frame.length - SKIPPABLE_HEADER_SIZE) {
    throw new EsgzError(
      'BAD_FORMAT',
      `${what}: skippable frame says ${declared} bytes but the footer gives it ${frame.length - SKIPPABLE_HEADER_SIZE}`,
    );
  }
  return frame.subarray(SKIPPABLE_HEADER_SIZE);
}

/** zstd-napi's native binding, loaded on first use: an eStargz conversion never needs it. */
let zstdBinding: typeof ZstdBinding | undefined;

function zstd(): typeof ZstdBinding {
  zstdBinding ??= createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;
  return zstdBinding;
}

let sharedDCtx: ZstdBinding.DCtx | undefined;

function dctx(): ZstdBinding.DCtx {
  sharedDCtx ??= new (zstd().DCtx)();
  return sharedDCtx;
}

function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Decompresses one whole zstd frame (`frame` holds exactly it), keeping at most `limit` bytes:
 * a frame whose header declares no more is decoded at once, any other is streamed into
 * buffers no larger than what is still wanted and left as soon as `limit` bytes came out.
 */
function decompressFrame(frame: Buffer, at: number, where: string, limit: number): Buffer {
  let declared: number | null;
  try {
    declared = zstd().getFrameContentSize(frame);
  } catch (err) {
    throw new EsgzError('BAD_FORMAT', `${where}: corrupt zstd frame header at offset ${at}: ${describeError(err)}`, {
      cause: err,
    });
  }
  const ctx = dctx();
  try {
    if (declared !== null && declared <= limit) {
      const out = Buffer.allocUnsafe(declared);
      const n = ctx.decompress(out, frame);
      if (n !== declared) throw new Error(`frame produced ${n} bytes, header says ${declared}`);
      return out;
    }
    // No content size in the header (streaming writers), or more than wanted: stream it.
    ctx.reset(zstd().ResetDirective.sessionOnly);
    const parts: Buffer[] = [];
    let input = frame;
    let total = 0;
    while (total < limit) {
      const out = Buffer.allocUnsafe(Math.min(limit - total, Math.max(zstd().dStreamOutSize(), input.length * 4)));
      const [remaining, produced, consumed] = ctx.decompressStream(out, input);
      if (produced > 0) parts.push(out.subarray(0, produced));
      total += produced;
      input = input.subarray(consumed);
      if (remaining === 0) break;
      if (consumed === 0 && produced === 0) throw new Error('frame is truncated');
    }
    ctx.reset(zstd().ResetDirective.sessionOnly);
    return Buffer.concat(parts, total);
  } catch (err) {
    ctx.reset(zstd().ResetDirective.sessionOnly);
    throw new EsgzError('BAD_FORMAT', `${where}: corrupt zstd frame at offset ${at}: ${describeError(err)}`, {
      cause: err,
    });
  }
}

/**
 * Decompresses a run of whole frames: zstd frames are decoded (checksums checked when present),
 * skippable frames are skipped. Anything else, a truncated frame or a skippable frame whose
 * length runs past the bytes given, is BAD_FORMAT naming the offset (relative to `base`).
 */
export function decompressFrames(data: Buffer, where: string, base = 0, limit = MAX_MEMBER_PREFIX): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  let pos = 0;
  while (pos < data.length && total < limit) {
    const at = base + pos;
    if (data.length - pos < 4)
      throw new EsgzError(
        'BAD_FORMAT',
        `${where}: ${data.length - pos} stray bytes at offset ${at} are not a zstd frame (truncated?)`,
      );
    const magic = data.readUInt32LE(pos);
    if (isSkippableMagic(magic)) {
      if (data.length - pos < SKIPPABLE_HEADER_SIZE)
        throw new EsgzError('BAD_FORMAT', `${where}: skippable frame header at offset ${at} is truncated`);
      const size = data.readUInt32LE(pos + 4);
      const available = data.length - pos - SKIPPABLE_HEADER_SIZE;
      if (size > available) {
        throw new EsgzError(
          'BAD_FORMAT',
          `${where}: skippable frame at offset ${at} says ${size} bytes but only ${available} follow (lying length or truncated blob)`,
        );
      }
      pos += SKIPPABLE_HEADER_SIZE + size;
      continue;
    }
    if (magic !== ZSTD_FRAME_MAGIC) {
      throw new EsgzError(
        'BAD_FORMAT',
        `${where}: no zstd frame at offset ${at} (magic ${magic.toString(16).padStart(8, '0')})`,
      );
    }
    let frameSize: number;
    try {
      frameSize = zstd().findFrameCompressedSize(data.subarray(pos));
    } catch (err) {
      throw new EsgzError(
        'BAD_FORMAT',
        `${where}: zstd frame at offset ${at} is truncated or corrupt: ${describeError(err)}`,
        { cause: err },
      );
    }
    const out = decompressFrame(data.subarray(pos, pos + frameSize), at, where, limit - total);
    parts.push(out);
    total += out.length;
    pos += frameSize;
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total);
}
