/**
 * A small streaming tar reader and a header encoder, written for eStargz's needs:
 *  - PAX values are kept as raw bytes (binary xattrs such as security.capability survive);
 *  - the payload is read in caller-sized pieces (chunks) without buffering the entry;
 *  - every malformed input (bad checksum, truncated payload, bad numbers) is an EsgzError
 *    naming the entry.
 * Formats read: POSIX ustar + PAX ('x', 'g'), GNU (long names 'L'/'K', base-256 numbers), v7.
 * Headers are written as ustar, with a PAX header when a field does not fit (like Go's archive/tar).
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { EsgzError } from '../errors.js';

export const BLOCK = 512;

export interface TarHeader {
  name: string;
  linkname: string;
  /** Single typeflag character ('0' reg, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, ...). */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Modification time in seconds since the epoch (may be fractional when PAX says so). */
  mtime: number;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** PAX records that apply to this entry (global ones merged first), values as raw bytes. */
  pax: Map<string, Buffer>;
}

/**
 * The header of a file esgz adds to a layer itself (the TOC, the landmarks): a regular file of
 * `size` bytes owned by root, mode 0, mtime 0, as stargz's writer makes them.
 */
export function syntheticFileHeader(name: string, size: number): TarHeader {
  return {
    name,
    linkname: '',
    typeflag: '0',
    mode: 0,
    uid: 0,
    gid: 0,
    size,
    mtime: 0,
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    pax: new Map(),
  };
}

export interface TarEntry {
  header: TarHeader;
  /**
   * With `raw: true`: the exact bytes between the end of the previous entry's payload and the
   * start of this one's (previous padding, PAX/GNU headers, this header).
   */
  raw?: Buffer;
  /** Reads exactly `length` more payload bytes (length ≤ bytes left). */
  read(length: number): Promise<Buffer>;
  /**
   * Reads between 1 and `max` payload bytes, without copying when the stream's buffer allows
   * (the large-payload path: pieces are hashed and queued, never joined here).
   */
  readSome(max: number): Promise<Buffer>;
  /** Payload bytes not read yet. */
  remaining(): number;
}

/** Where readTar takes its bytes from: a stream (ByteSource) or a file it can seek in (FileByteSource). */
export interface TarBytes {
  /** Bytes handed out or skipped so far: the offset of the next byte in the tar. */
  consumed: number;
  /** When set, every byte handed out is also kept here (lossless mode keeps raw tar headers). */
  recorded: Buffer[] | undefined;
  readSome(n: number): Promise<Buffer>;
  readAtMost(n: number): Promise<Buffer>;
  skip(n: number): Promise<number>;
  drain(): Promise<number>;
}

/** Pulls exact byte counts out of an async stream of buffers. */
export class ByteSource implements TarBytes {
  private buffers: Buffer[] = [];
  private buffered = 0;
  private done = false;
  consumed = 0;
  /** When set, every byte handed out is also kept here (lossless mode keeps raw tar headers). */
  recorded: Buffer[] | undefined;
  private readonly iterator: AsyncIterator<Buffer | Uint8Array | string>;

  constructor(stream: AsyncIterable<Buffer | Uint8Array | string>) {
    this.iterator =
      stream instanceof Readable && !stream.readableObjectMode
        ? readableChunks(stream)
        : stream[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const next = await this.iterator.next();
    if (next.done) {
      this.done = true;
      return false;
    }
    const value = next.value;
    const buf =
      typeof value === 'string'
        ? Buffer.from(value)
        : Buffer.isBuffer(value)
          ? value
          : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (buf.length > 0) {
      this.buffers.push(buf);
      this.buffered += buf.length;
    }
    return true;
  }

  /** Between 1 and `n` bytes from what is buffered (reads more only when nothing is); empty at end of stream. */
  async readSome(n: number): Promise<Buffer> {
    if (this.buffered === 0) await this.fill();
    while (this.buffered === 0 && !this.done) await this.fill();
    if (this.buffered === 0) return Buffer.alloc(0);
    const first = this.buffers[0]!;
    const take = Math.min(n, first.length);
    const out = first.subarray(0, take);
    if (take === first.length) this.buffers.shift();
    else this.buffers[0] = first.subarray(take);
    this.buffered -= take;
    this.consumed += take;
    this.recorded?.push(out);
    return out;
  }

  /** Up to `n` bytes (fewer only at end of stream: returns what is left, possibly empty). */
  async readAtMost(n: number): Promise<Buffer> {
    while (this.buffered < n && (await this.fill()));
    const take = Math.min(n, this.buffered);
    if (take === 0) return Buffer.alloc(0);
    let out: Buffer;
    const first = this.buffers[0]!;
    if (first.length >= take) {
      out = first.subarray(0, take);
      if (first.length === take) this.buffers.shift();
      else this.buffers[0] = first.subarray(take);
    } else {
      out = Buffer.allocUnsafe(take);
      let pos = 0;
      while (pos < take) {
        const b = this.buffers[0]!;
        const part = Math.min(b.length, take - pos);
        b.copy(out, pos, 0, part);
        pos += part;
        if (part === b.length) this.buffers.shift();
        else this.buffers[0] = b.subarray(part);
      }
    }
    this.buffered -= take;
    this.consumed += take;
    this.recorded?.push(out);
    return out;
  }

  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const got = await this.readAtMost(Math.min(left, 1 << 20));
      if (got.length === 0) break;
      left -= got.length;
    }
    return n - left;
  }

  /** Reads to the end (so upstream digest checks run) and returns how many bytes were left. */
  async drain(): Promise<number> {
    let total = this.buffered;
    this.buffers = [];
    this.buffered = 0;
    while (!this.done) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
      else total += (next.value as Buffer).length;
    }
    this.consumed += total;
    return total;
  }
}

/** Bytes a FileWindowReader reads at once (at least). */
export const FILE_WINDOW = 1 << 20;

/**
 * Reads a file by position through a window of FILE_WINDOW bytes: reading through a file in
 * small pieces (tar headers, small payloads in order) costs one read call per window. Returned
 * buffers are views of a window that is never reused.
 */
export class FileWindowReader {
  private window = Buffer.alloc(0);
  private windowStart = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly size: number,
  ) {}

  /** Exactly `length` bytes at `position` (which the caller keeps within the file's size). */
  async read(position: number, length: number, what: string): Promise<Buffer> {
    const offset = position - this.windowStart;
    if (offset >= 0 && offset + length <= this.window.length) return this.window.subarray(offset, offset + length);
    const want = Math.min(Math.max(length, FILE_WINDOW), this.size - position);
    const window = Buffer.allocUnsafe(want);
    for (let got = 0; got < want;) {
      const { bytesRead } = await this.handle.read(window, got, want - got, position + got);
      if (bytesRead === 0) throw new EsgzError('INTERNAL', `${what}: file ended early at byte ${position + got}`);
      got += bytesRead;
    }
    this.window = window;
    this.windowStart = position;
    return window.subarray(0, length);
  }
}

/**
 * A tar file on local disk read by position: skipping a payload is a seek, so listing the
 * entries of a big layer reads little more than its headers.
 */
export class FileByteSource implements TarBytes {
  consumed = 0;
  recorded: Buffer[] | undefined;
  private readonly reader: FileWindowReader;

  constructor(
    handle: FileHandle,
    private readonly size: number,
    private readonly what: string,
  ) {
    this.reader = new FileWindowReader(handle, size);
  }

  /** Up to `n` bytes (fewer only at the end of the file). */
  async readAtMost(n: number): Promise<Buffer> {
    const take = Math.min(n, this.size - this.consumed);
    if (take <= 0) return Buffer.alloc(0);
    const out = await this.reader.read(this.consumed, take, this.what);
    this.consumed += take;
    this.recorded?.push(out);
    return out;
  }

  /** Between 1 and `n` bytes, a window's worth at most; empty at the end of the file. */
  readSome(n: number): Promise<Buffer> {
    return this.readAtMost(Math.min(n, FILE_WINDOW));
  }

  async skip(n: number): Promise<number> {
    const skipped = Math.max(0, Math.min(n, this.size - this.consumed));
    this.consumed += skipped;
    return skipped;
  }

  async drain(): Promise<number> {
    return this.skip(this.size - this.consumed);
  }
}

/** Chunks a paused byte stream may buffer before it is paused again. */
const MAX_QUEUED_CHUNKS = 8;

/**
 * The chunks of a byte stream as they were pushed. (A Readable's own async iterator calls
 * `read()`, which joins everything buffered into a new Buffer: one more copy of every byte of a
 * layer.) Flow control: the stream pauses while MAX_QUEUED_CHUNKS wait, and resumes when they
 * are taken.
 */
function readableChunks(stream: Readable): AsyncIterator<Buffer> {
  const queue: Buffer[] = [];
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const resume = wake;
    wake = undefined;
    resume?.();
  };
  stream.on('data', (chunk: Buffer) => {
    queue.push(chunk);
    if (queue.length >= MAX_QUEUED_CHUNKS) stream.pause();
    notify();
  });
  stream.once('end', () => {
    ended = true;
    notify();
  });
  stream.once('error', (err) => {
    failure ??= err;
    notify();
  });
  stream.once('close', () => {
    if (!ended) failure ??= new EsgzError('BAD_LAYER', 'the layer stream closed before its end');
    notify();
  });
  return {
    async next(): Promise<IteratorResult<Buffer>> {
      for (;;) {
        const value = queue.shift();
        if (value !== undefined) {
          if (stream.isPaused() && queue.length < MAX_QUEUED_CHUNKS / 2) stream.resume();
          return { done: false, value };
        }
        if (failure !== undefined) throw failure;
        if (ended) return { done: true, value: undefined };
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

function parseString(block: Buffer, offset: number, length: number): string {
  let end = offset;
  while (end < offset + length && block[end] !== 0) end++;
  return block.toString('utf8', offset, end);
}

const isOctalPadding = (byte: number | undefined): boolean => byte === 0 || byte === 0x20;

/** A numeric header field: octal, NUL/space padded on either side, or GNU base-256. */
export function parseTarNumber(
  block: Buffer,
  offset: number,
  length: number,
  what: string,
  where: () => string,
): number {
  if (block[offset]! & 0x80) {
    // GNU base-256: big-endian two's complement with the top bit of the first byte as marker.
    if (block[offset] === 0xff) throw new EsgzError('BAD_LAYER', `${where()}: negative base-256 ${what}`);
    let value = block[offset]! & 0x7f;
    for (let i = offset + 1; i < offset + length; i++) value = value * 256 + block[i]!;
    if (!Number.isSafeInteger(value)) throw new EsgzError('BAD_LAYER', `${where()}: ${what} too large`);
    return value;
  }
  let start = offset;
  let end = offset + length;
  while (start < end && isOctalPadding(block[start])) start++;
  while (end > start && isOctalPadding(block[end - 1])) end--;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = block[i]! - 0x30;
    if (digit < 0 || digit > 7) {
      throw new EsgzError(
        'BAD_LAYER',
        `${where()}: invalid ${what} field ${JSON.stringify(block.toString('latin1', start, end))}`,
      );
    }
    value = value * 8 + digit;
  }
  return value;
}

export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function checksumOf(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum;
}

/** Parses PAX extended header records ("%d key=value\n"), values as raw bytes. */
export function parsePaxRecords(data: Buffer, where: string): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad with NULs
    const space = data.indexOf(0x20, pos);
    const length = space === -1 ? NaN : Number(data.subarray(pos, space).toString('latin1'));
    if (!Number.isInteger(length) || length <= 0 || pos + length > data.length || data[pos + length - 1] !== 0x0a) {
      throw new EsgzError('BAD_LAYER', `${where}: malformed PAX record at byte ${pos}`);
    }
    const record = data.subarray(space + 1, pos + length - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw new EsgzError('BAD_LAYER', `${where}: malformed PAX record at byte ${pos}`);
    const key = record.subarray(0, eq).toString('utf8');
    const value = record.subarray(eq + 1);
    // An empty value deletes the key (POSIX): keep the deletion so it overrides a global record.
    records.set(key, Buffer.from(value));
    pos += length;
  }
  return records;
}

export interface ReadTarOptions {
  /** Keep raw header bytes (`TarEntry.raw`) and report the bytes after the last payload. */
  raw?: boolean;
  /** With `raw`: the bytes from the end of the last payload to the end of the stream. */
  onTrailer?(bytes: Buffer): void;
}

/**
 * Reads tar entries from `input`. Each entry must be consumed (or abandoned) before asking for the
 * next; unread payload is skipped. After the end-of-archive marker the rest of the stream is
 * drained. `where` names the layer in error messages.
 */
export async function* readTar(
  input: AsyncIterable<Buffer | Uint8Array | string> | TarBytes,
  where: string,
  options: ReadTarOptions = {},
): AsyncGenerator<TarEntry> {
  const reader = new TarHeaderReader(Symbol.asyncIterator in input ? new ByteSource(input) : input, where, options);
  reader.record();
  for (;;) {
    const header = await reader.nextHeader();
    if (!header) return;
    const entry = new PayloadEntry(reader.src, header, where);
    if (options.raw) entry.raw = reader.takeRecorded();
    yield entry;
    reader.record();
    await entry.skipRest();
  }
}

/** Typeflags of the headers that describe the next entry rather than being one (PAX, GNU long names). */
function isExtensionHeader(typeflag: string): boolean {
  return typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K';
}

/** Hardlinks, symlinks, dirs and devices carry no payload whatever the size field says. */
export function hasNoPayload(typeflag: string): boolean {
  return (
    typeflag === '1' || typeflag === '2' || typeflag === '5' || typeflag === '3' || typeflag === '4' || typeflag === '6'
  );
}

/** Most bytes of one PAX or GNU long-name header esgz reads. */
const MAX_EXTENSION_HEADER = 64 << 20;

/** The header side of readTar: header blocks, the extension headers before them, the end. */
class TarHeaderReader {
  private readonly globals = new GlobalPax();
  private pendingPax: Map<string, Buffer> | undefined;
  private longName: string | undefined;
  private longLink: string | undefined;
  private lastName = '(start of archive)';
  /** Names the position in errors; one function for the whole stream (parseNumber takes it). */
  readonly at = (): string => `${this.where}: tar entry after ${JSON.stringify(this.lastName)}`;

  constructor(
    readonly src: TarBytes,
    private readonly where: string,
    private readonly options: ReadTarOptions,
  ) {}

  /** Raw mode: starts keeping the bytes handed out, for the next entry's `raw`. */
  record(): void {
    if (this.options.raw) this.src.recorded = [];
  }

  takeRecorded(): Buffer {
    const bytes = Buffer.concat(this.src.recorded ?? []);
    this.src.recorded = undefined;
    return bytes;
  }

  /** The next entry's header, its extension headers applied; undefined at the end of the archive. */
  async nextHeader(): Promise<TarHeader | undefined> {
    for (;;) {
      const block = await this.headerBlock();
      if (!block) return undefined;
      const typeflag = block[156] === 0 ? '0' : String.fromCharCode(block[156]!);
      let name = parseString(block, 0, 100);
      if (block.toString('latin1', 257, 263) === 'ustar\0') {
        const prefix = parseString(block, 345, 155);
        if (prefix !== '') name = `${prefix}/${name}`;
      }
      const size = parseTarNumber(block, 124, 12, 'size', this.at);
      if (isExtensionHeader(typeflag)) await this.readExtension(typeflag, size, name);
      else return this.entryHeader(block, typeflag, name, size);
    }
  }

  /** A header block with a valid checksum, or undefined at the end (after `finish`). */
  private async headerBlock(): Promise<Buffer | undefined> {
    const block = await this.src.readAtMost(BLOCK);
    // EOF on a header boundary is accepted, like Go's archive/tar.
    if (block.length === 0 || (block.length === BLOCK && isZeroBlock(block))) {
      await this.finish();
      return undefined;
    }
    if (block.length < BLOCK) {
      throw new EsgzError('BAD_LAYER', `${this.at()}: truncated tar header (${block.length} of 512 bytes)`);
    }
    const stored = parseTarNumber(block, 148, 8, 'checksum', this.at);
    if (stored !== checksumOf(block)) {
      throw new EsgzError('BAD_LAYER', `${this.at()}: tar header checksum mismatch (not a tar stream, or corrupt)`);
    }
    return block;
  }

  /** PAX (`x` for the next entry, `g` for all later ones) or a GNU long name/link (`L`/`K`). */
  private async readExtension(typeflag: string, size: number, name: string): Promise<void> {
    if (size > MAX_EXTENSION_HEADER) {
      throw new EsgzError('BAD_LAYER', `${this.at()}: ${typeflag} header of ${size} bytes is implausibly large`);
    }
    const body = await this.readBody(size, name);
    if (typeflag === 'x') this.pendingPax = parsePaxRecords(body, `${this.at()} (PAX header)`);
    else if (typeflag === 'g') this.globals.update(parsePaxRecords(body, `${this.at()} (global PAX header)`));
    else {
      const nul = body.indexOf(0);
      const text = (nul === -1 ? body : body.subarray(0, nul)).toString('utf8');
      if (typeflag === 'L') this.longName = text;
      else this.longLink = text;
    }
  }

  private async readBody(size: number, name: string): Promise<Buffer> {
    const data = await this.src.readAtMost(size);
    if (data.length < size) throw truncated(this.where, name, size, data.length);
    const pad = padding(size);
    if ((await this.src.skip(pad)) < pad) throw truncated(this.where, name, size + pad, size);
    return Buffer.from(data);
  }

  private entryHeader(block: Buffer, typeflag: string, name: string, size: number): TarHeader {
    const { at } = this;
    const pax = this.globals.forEntry(this.pendingPax, at);
    this.pendingPax = undefined;
    const header: TarHeader = {
      name: this.longName ?? name,
      linkname: this.longLink ?? parseString(block, 157, 100),
      typeflag,
      mode: parseTarNumber(block, 100, 8, 'mode', at),
      uid: parseTarNumber(block, 108, 8, 'uid', at),
      gid: parseTarNumber(block, 116, 8, 'gid', at),
      size,
      mtime: parseTarNumber(block, 136, 12, 'mtime', at),
      uname: parseString(block, 265, 32),
      gname: parseString(block, 297, 32),
      devmajor: typeflag === '3' || typeflag === '4' ? parseTarNumber(block, 329, 8, 'devmajor', at) : 0,
      devminor: typeflag === '3' || typeflag === '4' ? parseTarNumber(block, 337, 8, 'devminor', at) : 0,
      pax,
    };
    this.longName = undefined;
    this.longLink = undefined;
    applyPax(header, at);
    if (hasNoPayload(typeflag)) header.size = 0;
    this.lastName = header.name;
    return header;
  }

  /** After the end-of-archive marker: drains the stream (raw mode: keeps it as the trailer). */
  private async finish(): Promise<void> {
    if (this.options.raw) {
      // Lossless: the end-of-archive blocks and whatever follows are part of the layer.
      while ((await this.src.readAtMost(1 << 20)).length > 0);
      this.options.onTrailer?.(this.takeRecorded());
    } else {
      await this.src.drain();
    }
  }
}

/** One entry's payload, read from the tar stream; what is left unread is skipped afterwards. */
class PayloadEntry implements TarEntry {
  raw?: Buffer;
  private left: number;
  private readonly payloadSize: number;
  /** The name the entry was read under, for errors (the caller may change the header). */
  private readonly entryName: string;

  constructor(
    private readonly src: TarBytes,
    readonly header: TarHeader,
    private readonly where: string,
  ) {
    this.payloadSize = header.size;
    this.left = header.size;
    this.entryName = header.name;
  }

  remaining(): number {
    return this.left;
  }

  async read(length: number): Promise<Buffer> {
    if (length > this.left) {
      throw new EsgzError('INTERNAL', `read of ${length} bytes past the end of ${this.entryName}`);
    }
    const data = await this.src.readAtMost(length);
    if (data.length < length) throw this.truncated(data.length);
    this.left -= length;
    return data;
  }

  async readSome(max: number): Promise<Buffer> {
    const want = Math.min(max, this.left);
    if (want <= 0) throw new EsgzError('INTERNAL', `read past the end of ${this.entryName}`);
    const data = await this.src.readSome(want);
    if (data.length === 0) throw this.truncated(0);
    this.left -= data.length;
    return data;
  }

  /** Skips the unread payload and the padding after it. */
  async skipRest(): Promise<void> {
    if (this.left > 0) {
      const skipped = await this.src.skip(this.left);
      if (skipped < this.left) throw this.truncated(skipped);
      this.left = 0;
    }
    const pad = padding(this.payloadSize);
    if ((await this.src.skip(pad)) < pad) {
      throw truncated(this.where, this.entryName, this.payloadSize + pad, this.payloadSize);
    }
  }

  /** The stream ended `got` bytes after the payload bytes read so far. */
  private truncated(got: number): EsgzError {
    return truncated(this.where, this.entryName, this.payloadSize, this.payloadSize - this.left + got);
  }
}

/**
 * Bytes of global PAX records esgz copies into entries over a whole layer. Global records apply
 * to every later entry (POSIX), and the writer re-encodes them into each entry's own PAX header,
 * so a few kilobytes of globals ahead of many entries would multiply the output: this bounds it.
 * Real layers carry at most one small global header (`git archive`'s 52-byte commit comment).
 */
export const MAX_APPLIED_GLOBAL_PAX_BYTES = 16 << 20;

/**
 * The global PAX records in force (`g` headers, later ones overriding earlier keys). Kept in one
 * map updated in place, and the merged view without deletions is built once per change and
 * shared by the entries that follow: linear in the layer, however many `g` headers it has.
 */
class GlobalPax {
  private readonly records = new Map<string, Buffer>();
  /** Sum of key and value lengths of `records`. */
  private bytes = 0;
  /** Records minus deletions (empty values), shared by entries until the next `g` header. */
  private view: Map<string, Buffer> | undefined = new Map();
  private applied = 0;

  update(records: Map<string, Buffer>): void {
    for (const [key, value] of records) {
      const old = this.records.get(key);
      if (old !== undefined) this.bytes -= key.length + old.length;
      this.records.set(key, value);
      this.bytes += key.length + value.length;
    }
    this.view = undefined;
  }

  /** The PAX records of one entry: the globals, overridden by its own `x` records; deletions dropped. */
  forEntry(own: Map<string, Buffer> | undefined, at: () => string): Map<string, Buffer> {
    if (this.records.size > 0) {
      this.applied += this.bytes;
      if (this.applied > MAX_APPLIED_GLOBAL_PAX_BYTES) {
        throw new EsgzError(
          'BAD_LAYER',
          `${at()}: global PAX headers would be copied into the entries more than ${MAX_APPLIED_GLOBAL_PAX_BYTES >> 20} MiB over (${this.records.size} global records)`,
        );
      }
    }
    if (this.view === undefined) {
      this.view = new Map();
      for (const [k, v] of this.records) if (v.length > 0) this.view.set(k, v);
    }
    if (own === undefined) return this.view;
    const pax = this.records.size === 0 ? own : new Map([...this.view, ...own]);
    for (const [k, v] of pax) if (v.length === 0) pax.delete(k);
    return pax;
  }
}

function truncated(where: string, name: string, expected: number, got: number): EsgzError {
  return new EsgzError(
    'BAD_LAYER',
    `${where}: tar entry ${JSON.stringify(name)} is truncated: header says ${expected} bytes, stream ended after ${got}`,
  );
}

function applyPax(h: TarHeader, at: () => string): void {
  const num = (key: string): number | undefined => {
    const v = h.pax.get(key);
    if (v === undefined) return undefined;
    const n = Number(v.toString('latin1'));
    if (!Number.isFinite(n) || n < 0)
      throw new EsgzError('BAD_LAYER', `${at()}: invalid PAX ${key} ${JSON.stringify(v.toString('latin1'))}`);
    return n;
  };
  const path = h.pax.get('path');
  if (path) h.name = path.toString('utf8');
  const linkpath = h.pax.get('linkpath');
  if (linkpath) h.linkname = linkpath.toString('utf8');
  const uname = h.pax.get('uname');
  if (uname) h.uname = uname.toString('utf8');
  const gname = h.pax.get('gname');
  if (gname) h.gname = gname.toString('utf8');
  h.size = num('size') ?? h.size;
  h.uid = num('uid') ?? h.uid;
  h.gid = num('gid') ?? h.gid;
  const mtime = h.pax.get('mtime');
  if (mtime) {
    const n = Number(mtime.toString('latin1'));
    if (!Number.isFinite(n)) throw new EsgzError('BAD_LAYER', `${at()}: invalid PAX mtime`);
    h.mtime = n;
  }
}

// ---- writing ---------------------------------------------------------------------------------

/** PAX keys the encoder derives from the header fields itself. */
const DERIVED_PAX_KEYS = new Set(['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname']);
const MAX_OCTAL_8 = 0o7777777;
const MAX_OCTAL_12 = 0o77777777777;

function isAscii(s: string): boolean {
  return /^[\x01-\x7f]*$/.test(s);
}

function writeString(block: Buffer, offset: number, length: number, value: string): void {
  block.write(value, offset, length, 'utf8');
}

function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  const text = Math.max(0, Math.floor(value))
    .toString(8)
    .padStart(length - 1, '0');
  block.write(text, offset, length - 1, 'latin1');
  block[offset + length - 1] = 0;
}

/** Splits a long name into ustar prefix + name, or returns undefined when it cannot. */
function splitUstarName(name: string): [string, string] | undefined {
  if (Buffer.byteLength(name) <= 100) return ['', name];
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (rest.length > 0 && Buffer.byteLength(rest) <= 100 && Buffer.byteLength(prefix) <= 155) return [prefix, rest];
    if (Buffer.byteLength(rest) > 100) return undefined;
  }
  return undefined;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length), 'latin1'), body]);
}

function ustarBlock(fields: {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}): Buffer {
  const block = Buffer.alloc(BLOCK);
  writeString(block, 0, 100, fields.name);
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, fields.uid);
  writeOctal(block, 116, 8, fields.gid);
  writeOctal(block, 124, 12, fields.size);
  writeOctal(block, 136, 12, fields.mtime);
  block[156] = fields.typeflag.charCodeAt(0);
  writeString(block, 157, 100, fields.linkname);
  block.write('ustar\x0000', 257, 8, 'latin1');
  writeString(block, 265, 32, fields.uname);
  writeString(block, 297, 32, fields.gname);
  writeOctal(block, 329, 8, fields.devmajor);
  writeOctal(block, 337, 8, fields.devminor);
  writeString(block, 345, 155, fields.prefix);
  const sum = checksumOf(block);
  block.write(sum.toString(8).padStart(6, '0'), 148, 6, 'latin1');
  block[154] = 0;
  block[155] = 0x20;
  return block;
}

/**
 * Encodes a header as ustar, preceded by a PAX header when needed: input PAX records are kept
 * (xattrs, sub-second times, ...); path/linkpath/size/ids/names are re-derived and written as
 * PAX records only when they do not fit ustar.
 */
export function encodeTarHeader(h: TarHeader): Buffer {
  const records = new Map<string, Buffer>();
  for (const [k, v] of h.pax) if (!DERIVED_PAX_KEYS.has(k)) records.set(k, v);
  let split = isAscii(h.name) ? splitUstarName(h.name) : undefined;
  if (!split) {
    records.set('path', Buffer.from(h.name, 'utf8'));
    split = ['', truncateUtf8(h.name, 100)];
  }
  let linkname = h.linkname;
  if (!isAscii(linkname) || Buffer.byteLength(linkname) > 100) {
    records.set('linkpath', Buffer.from(linkname, 'utf8'));
    linkname = truncateUtf8(linkname, 100);
  }
  let size = h.size;
  if (size > MAX_OCTAL_12) {
    records.set('size', Buffer.from(String(size)));
    size = 0;
  }
  let uid = h.uid;
  if (uid > MAX_OCTAL_8) {
    records.set('uid', Buffer.from(String(uid)));
    uid = 0;
  }
  let gid = h.gid;
  if (gid > MAX_OCTAL_8) {
    records.set('gid', Buffer.from(String(gid)));
    gid = 0;
  }
  let uname = h.uname;
  if (!isAscii(uname) || Buffer.byteLength(uname) > 32) {
    records.set('uname', Buffer.from(uname, 'utf8'));
    uname = '';
  }
  let gname = h.gname;
  if (!isAscii(gname) || Buffer.byteLength(gname) > 32) {
    records.set('gname', Buffer.from(gname, 'utf8'));
    gname = '';
  }
  let mtime = Math.floor(h.mtime);
  if (mtime < 0 || mtime > MAX_OCTAL_12) {
    if (!records.has('mtime')) records.set('mtime', Buffer.from(String(h.mtime)));
    mtime = 0;
  }
  const main = ustarBlock({
    name: split[1],
    prefix: split[0],
    mode: h.mode & 0o7777777,
    uid,
    gid,
    size,
    mtime,
    typeflag: h.typeflag,
    linkname,
    uname,
    gname,
    devmajor: h.devmajor,
    devminor: h.devminor,
  });
  if (records.size === 0) return main;
  const body = Buffer.concat([...records.keys()].sort().map((k) => paxRecord(k, records.get(k)!)));
  const dir = h.name.replace(/\/+$/, '').split('/').slice(0, -1).join('/');
  const base = h.name.replace(/\/+$/, '').split('/').pop() ?? '';
  const paxName = truncateUtf8(`${dir === '' ? '' : `${dir}/`}PaxHeaders.0/${base}`, 100);
  const paxHeader = ustarBlock({
    name: isAscii(paxName) ? paxName : 'PaxHeaders.0/entry',
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: 0,
    typeflag: 'x',
    linkname: '',
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([paxHeader, body, Buffer.alloc(padding(body.length)), main]);
}

function truncateUtf8(s: string, bytes: number): string {
  const buf = Buffer.from(s, 'utf8');
  if (buf.length <= bytes) return s;
  return buf
    .subarray(0, bytes)
    .toString('utf8')
    .replace(/\uFFFD+$/, '');
}

/** Zero bytes after a payload of `size` bytes up to the next block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The end-of-archive marker: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
