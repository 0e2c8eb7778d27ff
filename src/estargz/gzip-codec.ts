/**
 * The eStargz codec: every member is a gzip member; the blob ends with the TOC member
 * (`stargz.index.json` tar entry + end-of-archive) and a 51-byte footer whose gzip extra field
 * says where the TOC member starts (stargz-snapshotter docs/estargz.md "Footer").
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { EsgzError } from '../errors.js';
import type { Codec, CodecTail, FooterInfo, MemberCompressor, ParsedTOC } from './codec.js';
import {
  FOOTER_SIZE,
  LEGACY_FOOTER_SIZE,
  MAX_MEMBER_PREFIX,
  MAX_TOC_SIZE,
  TOC_TAR_NAME,
  TOC_TAR_SLACK,
} from './constants.js';
export { DEFAULT_GZIP_LEVEL } from './gzip-pool.js';
import { BLOCK, END_OF_ARCHIVE, encodeTarHeader, padding, syntheticFileHeader } from './tar.js';
import { marshalTOC, parseTOCJSON, sha256Digest, type JTOC } from './toc.js';
import { MediaType } from '../oci/media-types.js';

const gunzip = promisify(zlib.gunzip);

/**
 * Footer of a blob whose TOC lives in a separate image (external-TOC mode): an empty gzip
 * member whose extra field is SI1='S' SI2='G' LEN=17 "STARGZEXTERNALTOC" (no offset).
 */
export const EXTERNAL_TOC_FOOTER_SIZE = 46;
const STARGZ_MAGIC = 'STARGZ';
const EXTERNAL_MAGIC = 'STARGZEXTERNALTOC';

/**
 * A gzip member with an empty payload whose FEXTRA field holds `extra`: exactly what Go's
 * gzip.Writer at NoCompression writes for the stargz footer (mtime 0, XFL 0, OS 255, one empty
 * final stored block, CRC32 0, ISIZE 0).
 */
function emptyGzipMemberWithExtra(extra: Buffer): Buffer {
  const header = Buffer.from([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0x00, 0xff, extra.length & 0xff, extra.length >> 8]);
  const emptyStoredBlock = Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]);
  return Buffer.concat([header, extra, emptyStoredBlock, Buffer.alloc(8)]);
}

function subfield(payload: string): Buffer {
  const head = Buffer.from([0x53 /* S */, 0x47 /* G */, payload.length & 0xff, payload.length >> 8]);
  return Buffer.concat([head, Buffer.from(payload, 'latin1')]);
}

/** The 51-byte eStargz footer pointing at the TOC member. */
export function estargzFooter(tocOffset: number): Buffer {
  const footer = emptyGzipMemberWithExtra(subfield(`${tocOffset.toString(16).padStart(16, '0')}${STARGZ_MAGIC}`));
  if (footer.length !== FOOTER_SIZE)
    throw new EsgzError('INTERNAL', `footer is ${footer.length} bytes, not ${FOOTER_SIZE}`);
  return footer;
}

/** The 46-byte footer of a blob whose TOC is stored outside it. */
export function externalTOCFooter(): Buffer {
  const footer = emptyGzipMemberWithExtra(subfield(EXTERNAL_MAGIC));
  if (footer.length !== EXTERNAL_TOC_FOOTER_SIZE)
    throw new EsgzError('INTERNAL', `external-TOC footer is ${footer.length} bytes`);
  return footer;
}

/** The uncompressed tar bytes of the TOC entry plus the end-of-archive marker. */
export function tocTarBytes(tocJSON: Buffer): Buffer {
  const header = encodeTarHeader(syntheticFileHeader(TOC_TAR_NAME, tocJSON.length));
  return Buffer.concat([header, tocJSON, Buffer.alloc(padding(tocJSON.length)), END_OF_ARCHIVE]);
}

/** Reads the FEXTRA field of a gzip member header, or undefined when `buf` is not one. */
function gzipExtra(buf: Buffer): Buffer | undefined {
  if (buf.length < 12 || buf[0] !== 0x1f || buf[1] !== 0x8b || buf[2] !== 0x08 || (buf[3]! & 0x04) === 0)
    return undefined;
  const xlen = buf.readUInt16LE(10);
  if (12 + xlen > buf.length) return undefined;
  return buf.subarray(12, 12 + xlen);
}

function parseOffset(hex: string, what: string): number {
  if (!/^[0-9a-fA-F]{16}$/.test(hex))
    throw new EsgzError('BAD_FORMAT', `${what}: TOC offset ${JSON.stringify(hex)} is not 16 hex digits`);
  const value = parseInt(hex, 16);
  if (!Number.isSafeInteger(value)) throw new EsgzError('BAD_FORMAT', `${what}: TOC offset ${hex} is too large`);
  return value;
}

/** Checks that the footer is a complete, empty gzip member (catches bit flips in the tail). */
function checkEmptyMember(footer: Buffer, kind: string): void {
  let out: Buffer;
  try {
    out = zlib.gunzipSync(footer);
  } catch (err) {
    throw new EsgzError('BAD_FORMAT', `${kind} footer is not a valid gzip member: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (out.length !== 0) throw new EsgzError('BAD_FORMAT', `${kind} footer has a non-empty payload`);
}

/** Parses eStargz footers: current (51 bytes), external-TOC (62), legacy stargz (47). */
export function parseGzipFooter(tail: Buffer, blobSize: number): FooterInfo | undefined {
  const last = (n: number) => (tail.length >= n ? tail.subarray(tail.length - n) : undefined);

  const f51 = last(FOOTER_SIZE);
  const extra51 = f51 && gzipExtra(f51);
  if (extra51 && extra51.length === 4 + 16 + STARGZ_MAGIC.length && extra51[0] === 0x53 && extra51[1] === 0x47) {
    if (extra51.readUInt16LE(2) !== 22 || extra51.subarray(20).toString('latin1') !== STARGZ_MAGIC) {
      throw new EsgzError('BAD_FORMAT', 'eStargz footer: STARGZ magic missing from the gzip extra field');
    }
    checkEmptyMember(f51!, 'eStargz');
    const tocOffset = parseOffset(extra51.subarray(4, 20).toString('latin1'), 'eStargz footer');
    if (tocOffset >= blobSize - FOOTER_SIZE)
      throw new EsgzError(
        'BAD_FORMAT',
        `eStargz footer: TOC offset ${tocOffset} is beyond the blob (${blobSize} bytes)`,
      );
    return { footerSize: FOOTER_SIZE, tocOffset, externalTOC: false, kind: 'estargz' };
  }

  const f46 = last(EXTERNAL_TOC_FOOTER_SIZE);
  const extra46 = f46 && gzipExtra(f46);
  if (
    extra46 &&
    extra46.length === 4 + EXTERNAL_MAGIC.length &&
    extra46[0] === 0x53 &&
    extra46[1] === 0x47 &&
    extra46.subarray(4).toString('latin1') === EXTERNAL_MAGIC
  ) {
    checkEmptyMember(f46!, 'eStargz external-TOC');
    return {
      footerSize: EXTERNAL_TOC_FOOTER_SIZE,
      tocOffset: blobSize - EXTERNAL_TOC_FOOTER_SIZE,
      tocSize: 0,
      externalTOC: true,
      kind: 'estargz-external',
    };
  }

  const f47 = last(LEGACY_FOOTER_SIZE);
  const extra47 = f47 && gzipExtra(f47);
  if (
    extra47 &&
    extra47.length === 16 + STARGZ_MAGIC.length &&
    extra47.subarray(16).toString('latin1') === STARGZ_MAGIC
  ) {
    checkEmptyMember(f47!, 'legacy stargz');
    const tocOffset = parseOffset(extra47.subarray(0, 16).toString('latin1'), 'legacy stargz footer');
    if (tocOffset >= blobSize - LEGACY_FOOTER_SIZE)
      throw new EsgzError('BAD_FORMAT', `legacy stargz footer: TOC offset ${tocOffset} is beyond the blob`);
    return { footerSize: LEGACY_FOOTER_SIZE, tocOffset, externalTOC: false, kind: 'estargz-legacy' };
  }
  if (f51 && f51[0] === 0x1f && f51[1] === 0x8b) {
    // A gzip member at the end, but not a footer we know: say so instead of "not eStargz".
    if (extra51) throw new EsgzError('BAD_FORMAT', 'eStargz footer: gzip extra field is not an eStargz footer');
  }
  return undefined;
}

/** Output zlib hands over at once while inflating a member prefix. */
const INFLATE_CHUNK = 256 << 10;

/**
 * The first `limit` bytes that the gzip member(s) in `compressed` inflate to (all of them when
 * fewer): inflating stops as soon as it has them, so a member that would inflate to gigabytes
 * costs `limit` bytes of memory and the time to produce them.
 */
export function gunzipPrefix(compressed: Buffer, limit: number): Promise<Buffer> {
  if (limit <= 0) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const inflater = zlib.createGunzip({ chunkSize: Math.min(INFLATE_CHUNK, Math.max(limit, 64)) });
    const parts: Buffer[] = [];
    let total = 0;
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      inflater.destroy();
      const out = Buffer.concat(parts, total);
      resolve(total > limit ? out.subarray(0, limit) : out);
    };
    inflater.on('data', (piece: Buffer) => {
      if (settled) return;
      parts.push(piece);
      total += piece.length;
      if (total >= limit) finish();
    });
    inflater.on('end', finish);
    inflater.on('error', (err) => {
      if (settled) return;
      settled = true;
      reject(err);
    });
    inflater.end(compressed);
  });
}

/** Gunzips a TOC member and returns the JSON of its `stargz.index.json` tar entry. */
export async function extractTOCJSON(tocMember: Buffer, where: string): Promise<Buffer> {
  let tar: Buffer;
  try {
    tar = await gunzip(tocMember, { maxOutputLength: MAX_TOC_SIZE + TOC_TAR_SLACK });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new EsgzError(
        'BAD_FORMAT',
        `${where}: TOC member inflates to more than ${MAX_TOC_SIZE >> 20} MiB (the most esgz reads)`,
        { cause: err },
      );
    }
    throw new EsgzError('BAD_FORMAT', `${where}: TOC member does not decompress: ${(err as Error).message}`, {
      cause: err,
    });
  }
  // The entry may be preceded by a PAX header written by other tools; walk headers until the TOC.
  let pos = 0;
  let paxPath: string | undefined;
  while (pos + BLOCK <= tar.length) {
    const block = tar.subarray(pos, pos + BLOCK);
    const nul = block.indexOf(0);
    const name = paxPath ?? block.subarray(0, nul === -1 || nul > 100 ? 100 : nul).toString('utf8');
    const size = parseInt(block.subarray(124, 136).toString('latin1').replace(/[\0 ]/g, '') || '0', 8);
    const type = String.fromCharCode(block[156]!);
    if (!Number.isFinite(size)) break;
    const body = tar.subarray(pos + BLOCK, pos + BLOCK + size);
    if (type === 'x') {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
      paxPath = m?.[1];
    } else {
      if (name.replace(/^\.?\//, '') === TOC_TAR_NAME) {
        if (size > MAX_TOC_SIZE)
          throw new EsgzError(
            'BAD_FORMAT',
            `${where}: TOC of ${size} bytes is larger than the ${MAX_TOC_SIZE >> 20} MiB esgz reads`,
          );
        if (body.length !== size) throw new EsgzError('BAD_FORMAT', `${where}: TOC entry is truncated`);
        return body;
      }
      paxPath = undefined;
    }
    pos += BLOCK + size + padding(size);
  }
  throw new EsgzError('BAD_FORMAT', `${where}: TOC member holds no ${TOC_TAR_NAME} entry`);
}

export interface GzipCodecOptions {
  /**
   * Write no TOC into the blob, only the external-TOC footer; the TOC member is returned as
   * `CodecTail.externalTOC` for the TOC image.
   */
  externalTOC?: boolean;
}

export class GzipCodec implements Codec {
  readonly name = 'gzip' as const;
  readonly mediaType = MediaType.ociLayerGzip;
  /** The largest of its footers: 51 (STARGZ), 47 (legacy), 46 (external TOC). */
  readonly maxFooterSize = Math.max(FOOTER_SIZE, LEGACY_FOOTER_SIZE, EXTERNAL_TOC_FOOTER_SIZE);
  readonly externalTOC: boolean;

  constructor(options: GzipCodecOptions = {}) {
    this.externalTOC = options.externalTOC ?? false;
  }

  async buildTail(toc: JTOC, tocOffset: number, compressor: MemberCompressor): Promise<CodecTail> {
    const tocJSON = marshalTOC(toc);
    const tocTar = tocTarBytes(tocJSON);
    const member = await compressor.compress(tocTar);
    const tocDigest = sha256Digest(tocJSON);
    if (this.externalTOC) {
      // As stargz's externaltoc compressor: the layer ends with the footer alone (no TOC, no
      // end-of-archive blocks); the TOC member becomes a layer of the TOC image.
      return { bytes: externalTOCFooter(), tocDigest, uncompressedTail: Buffer.alloc(0), externalTOC: member };
    }
    return { bytes: Buffer.concat([member, estargzFooter(tocOffset)]), tocDigest, uncompressedTail: tocTar };
  }

  parseFooter(tail: Buffer, blobSize: number): FooterInfo | undefined {
    return parseGzipFooter(tail, blobSize);
  }

  async parseTOC(tocBytes: Buffer): Promise<ParsedTOC> {
    const tocJSON = await extractTOCJSON(tocBytes, 'eStargz blob');
    return { toc: parseTOCJSON(tocJSON, 'eStargz TOC'), tocJSON, tocDigest: sha256Digest(tocJSON) };
  }

  async decompress(compressed: Buffer, maxOutput = MAX_MEMBER_PREFIX): Promise<Buffer> {
    try {
      return await gunzipPrefix(compressed, maxOutput);
    } catch (err) {
      throw new EsgzError('BAD_FORMAT', `gzip member does not decompress: ${(err as Error).message}`, { cause: err });
    }
  }
}

export function createGzipCodec(options: GzipCodecOptions = {}): GzipCodec {
  return new GzipCodec(options);
}
