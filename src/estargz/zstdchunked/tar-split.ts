/**
 * tar-split metadata (vbatts/tar-split tar/asm + tar/storage, read, not copied) built from a
 * layer's uncompressed tar stream as it is written: JSON lines, one entry each, where
 *   {"type":2,"payload":"<base64 raw bytes>","position":N}   is a segment: headers, PAX / GNU
 *        long-name records, padding and the end-of-archive blocks, byte for byte;
 *   {"type":1,"name":"<path>","size":S,"payload":"<base64 crc64>","position":N}   is a file
 *        payload of S bytes (its CRC-64/ISO, big-endian; null for S = 0), one per tar entry.
 * Segments and payloads concatenated in order give back the tar: containers/storage uses it to
 * rebuild the exact layer tar from a partially pulled tree. Entries are cut where Go's
 * archive/tar (tar-split's fork, RawAccounting) cuts them: the raw bytes of one Next() call are
 * one segment.
 */
import { isUtf8 } from 'node:buffer';
import { EsgzError } from '../../errors.js';
import { BLOCK, hasNoPayload, isZeroBlock, padding, parsePaxRecords, parseTarNumber } from '../tar.js';
import { goQuote } from '../toc.js';
import { Crc64 } from './crc64.js';

const FILE_TYPE = 1;
const SEGMENT_TYPE = 2;

/** Where ustar keeps the name prefix, and the magic + version that say a header has one. */
const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');

/** The name and size overrides a PAX or GNU long-name record sets for the next header. */
interface Pending {
  path?: Buffer;
  longName?: Buffer;
  size?: number;
}

function cString(block: Buffer, offset: number, length: number): Buffer {
  const end = block.indexOf(0, offset);
  return block.subarray(offset, end < 0 || end > offset + length ? offset + length : end);
}

/** The header's own name, with the ustar prefix when it has one (Go's reader, USTAR/PAX formats). */
function headerName(block: Buffer): Buffer {
  const name = cString(block, 0, 100);
  if (!block.subarray(257, 265).equals(USTAR_MAGIC)) return name;
  const prefix = cString(block, 345, 155);
  return prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), name]) : name;
}

export class TarSplitBuilder {
  private readonly lines: string[] = [];
  private position = 0;
  private raw: Buffer[] = [];
  private readonly block = Buffer.alloc(BLOCK);
  private blockFill = 0;
  /** Raw bytes (padding) before the next header block. */
  private skip = 0;
  /** A PAX / GNU long-name record being read (also raw). */
  private meta?: { type: string; name: Buffer; data: Buffer; fill: number };
  private pending: Pending = {};
  private file?: { name: Buffer; size: number; left: number };
  private readonly crc = new Crc64();
  /** After the first zero block every byte is raw (end-of-archive and any trailing padding). */
  private ended = false;

  constructor(private readonly where: string) {}

  /** The next bytes of the tar stream, in order. `data` may be reused by the caller afterwards. */
  update(data: Buffer): void {
    let pos = 0;
    while (pos < data.length) {
      const rest = data.length - pos;
      if (this.file && this.file.left > 0) {
        const n = Math.min(this.file.left, rest);
        this.crc.update(data.subarray(pos, pos + n));
        this.file.left -= n;
        pos += n;
        if (this.file.left === 0) this.endFile();
      } else if (this.ended) {
        this.addRaw(data.subarray(pos));
        pos = data.length;
      } else if (this.meta) {
        const meta = this.meta;
        const n = Math.min(meta.data.length - meta.fill, rest);
        data.copy(meta.data, meta.fill, pos, pos + n);
        this.addRaw(data.subarray(pos, pos + n));
        meta.fill += n;
        pos += n;
        if (meta.fill === meta.data.length) this.endMeta(meta);
      } else if (this.skip > 0) {
        const n = Math.min(this.skip, rest);
        this.addRaw(data.subarray(pos, pos + n));
        this.skip -= n;
        pos += n;
      } else {
        const n = Math.min(BLOCK - this.blockFill, rest);
        data.copy(this.block, this.blockFill, pos, pos + n);
        this.blockFill += n;
        pos += n;
        if (this.blockFill === BLOCK) this.headerBlock();
      }
    }
  }

  /** The JSON lines, once the whole stream went through `update`. */
  finish(): Buffer {
    if (this.file || this.meta || this.blockFill > 0)
      throw new EsgzError('INTERNAL', `${this.where}: tar-split: the tar stream ends inside an entry`);
    this.flushSegment();
    return Buffer.from(this.lines.join(''), 'utf8');
  }

  private addRaw(bytes: Buffer): void {
    if (bytes.length > 0) this.raw.push(Buffer.from(bytes));
  }

  private headerBlock(): void {
    const block = this.block;
    this.blockFill = 0;
    this.addRaw(block);
    if (isZeroBlock(block)) {
      this.ended = true;
      return;
    }
    const type = String.fromCharCode(block[156]!);
    const size = parseTarNumber(block, 124, 12, 'size', () => `${this.where}: tar-split`);
    if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
      this.meta = { type, name: headerName(block), data: Buffer.alloc(size), fill: 0 };
      if (size === 0) this.endMeta(this.meta);
      return;
    }
    const name = this.pending.path ?? this.pending.longName ?? headerName(block);
    const fileSize = this.pending.size ?? size;
    this.pending = {};
    this.flushSegment();
    const payload = hasNoPayload(type) ? 0 : fileSize;
    this.file = { name, size: fileSize, left: payload };
    this.skip = padding(payload);
    this.crc.reset();
    if (payload === 0) this.endFile();
  }

  private endMeta(meta: { type: string; name: Buffer; data: Buffer }): void {
    this.meta = undefined;
    this.skip = padding(meta.data.length);
    if (meta.type === 'L') this.pending.longName = cString(meta.data, 0, meta.data.length);
    if (meta.type !== 'x' && meta.type !== 'g') return;
    const records = parsePaxRecords(meta.data, `${this.where}: tar-split`);
    if (meta.type === 'g') {
      // Go's reader returns a global header as an entry of its own, without a payload.
      this.flushSegment();
      this.file = { name: meta.name, size: 0, left: 0 };
      this.endFile();
      return;
    }
    const path = records.get('path');
    if (path) this.pending.path = path;
    const size = records.get('size');
    if (size) this.pending.size = Number(size.toString('latin1'));
  }

  private endFile(): void {
    const file = this.file!;
    this.file = undefined;
    const name = isUtf8(file.name)
      ? `"name":${goQuote(file.name.toString('utf8'))}`
      : `"name_raw":"${file.name.toString('base64')}"`;
    const size = file.size > 0 ? `,"size":${file.size}` : '';
    const payload = file.size > 0 ? `"${this.crc.digest().toString('base64')}"` : 'null';
    this.push(`{"type":${FILE_TYPE},${name}${size},"payload":${payload},"position":${this.position}}\n`);
  }

  private flushSegment(): void {
    if (this.raw.length === 0) return;
    const bytes = Buffer.concat(this.raw);
    this.raw = [];
    this.push(`{"type":${SEGMENT_TYPE},"payload":"${bytes.toString('base64')}","position":${this.position}}\n`);
  }

  private push(line: string): void {
    this.lines.push(line);
    this.position++;
  }
}
