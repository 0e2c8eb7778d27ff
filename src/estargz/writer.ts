/**
 * The one eStargz / zstd:chunked writer (stargz-snapshotter docs/estargz.md, estargz/build.go).
 *
 * Layout it produces, member by member (a member is one gzip member or one zstd frame):
 *  - tar headers go into the member that is open when they are met, so a regular file's header
 *    ends the previous member and its payload starts a new one (as stargz's Writer does);
 *  - every payload chunk (`chunkSize`, default 4 MiB) starts a new member, unless `minChunkSize`
 *    lets it share the open member (then its TOC entry carries `innerOffset`);
 *  - the landmark file (`.prefetch.landmark` after the prioritized files, or
 *    `.no.prefetch.landmark` first when there are none) always starts its own member;
 *  - then the codec's tail: TOC + footer.
 * Members are compressed concurrently by the compressor (the conversion's worker pool) and written
 * strictly in order; offsets are taken from the ordered output, so the bytes never depend on scheduling.
 */
import { createHash, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError } from '../errors.js';
import type { BlobObserver, Codec, CompressedMembers, MemberCompressor } from './codec.js';
import {
  DEFAULT_CHUNK_SIZE,
  LANDMARK_CONTENTS,
  MAX_CHUNK_SIZE,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  TOC_TAR_NAME,
} from './constants.js';
import { expandPriorities, type PriorityItem } from './priority.js';
import {
  BLOCK,
  encodeTarHeader,
  FILE_WINDOW,
  FileByteSource,
  FileWindowReader,
  padding,
  readTar,
  syntheticFileHeader,
  type TarHeader,
} from './tar.js';
import { cleanEntryName, climbsAboveRoot, formatModtime, type JTOC, type TOCEntry, type TOCEntryType } from './toc.js';

export interface EstargzWriterOptions {
  /** The format: footer, TOC encoding. */
  codec: Codec;
  /**
   * Compresses the members (the conversion's worker pool, shared by the layers it converts);
   * its format must be the codec's.
   */
  compressor: MemberCompressor;
  /** Maximum payload bytes per chunk (default 4 MiB). */
  chunkSize?: number;
  /** Chunks start a new member only once the open member holds this many bytes (default 0: always). */
  minChunkSize?: number;
  /**
   * Files to place first, in this order (their parent directories and hardlink targets before
   * them). Globs (`GlobPattern`) expand to the matching entries in layer order.
   */
  prioritizedFiles?: PriorityItem[];
  /** Names the layer in error messages, e.g. `layer sha256:abcd…`. */
  where?: string;
  /** Directory for the spool file used when reordering prioritized files. */
  tmpDir?: string;
  /**
   * The layer's uncompressed tar as a local file, when the caller has one (the optimizer keeps
   * the tar it unpacked): reordering then reads payloads from it by offset instead of spooling a
   * copy. The `tar` stream must hold the same bytes (it is used when nothing is prioritized).
   */
  tarFile?: string;
  signal?: AbortSignal;
  /**
   * Bytes of batch buffers compressing at once before the writer waits for the oldest batch (the
   * memory bound). Default: a chunk per worker plus a few batches (see inFlightWindow).
   */
  maxInFlightBytes?: number;
  /**
   * Keep the uncompressed tar byte for byte (lossless mode, with an external-TOC codec): raw
   * headers, padding and trailer are kept, no landmark is added, nothing is reordered.
   */
  lossless?: boolean;
}

export interface EstargzWriteResult {
  toc: JTOC;
  /** `sha256:` of the TOC JSON: the `containerd.io/snapshot/stargz/toc.digest` annotation. */
  tocDigest: string;
  /** `sha256:` of the uncompressed tar stream the blob decompresses to. */
  diffID: string;
  uncompressedSize: number;
  /** Size of the blob written to the output. */
  compressedSize: number;
  /** Blob offset of the TOC (= footer's TOC offset). */
  tocOffset: number;
  /** Number of tar entries written (including the landmark). */
  entryCount: number;
  memberCount: number;
  /** Prioritized files that are not in the layer (ctr-remote ignores them too). */
  missedPrioritizedFiles: string[];
  /** Annotations the codec defines (e.g. zstd:chunked manifest position). */
  codecAnnotations: Record<string, string>;
  /** External-TOC mode: the TOC blob for the TOC image. */
  externalTOC?: Buffer;
}

/** A tar entry whose payload can be read in pieces, from the stream or from the spool file. */
interface SourceEntry {
  header: TarHeader;
  /** Lossless mode: the raw bytes before the payload (see TarEntry.raw). */
  raw?: Buffer;
  /** Between 1 and `max` payload bytes. */
  readSome(max: number): Promise<Buffer>;
}

/** Source of the zero padding after payloads (never written to). */
const ZERO_BLOCK = Buffer.alloc(BLOCK);

const TYPE_OF: Record<string, TOCEntryType> = {
  '0': 'reg',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

/** Writes `buf` honouring backpressure; rejects when the output fails. */
async function writeOut(output: Writable, buf: Buffer): Promise<void> {
  if (output.destroyed) throw new EsgzError('INTERRUPTED', 'output stream closed');
  if (output.write(buf)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      output.off('drain', onDrain);
      output.off('error', onError);
      output.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onError = (err: Error) => done(err);
    const onClose = () => done(new EsgzError('INTERRUPTED', 'output stream closed'));
    output.on('drain', onDrain);
    output.on('error', onError);
    output.on('close', onClose);
  });
}

/**
 * A batch of closed members goes to the compressor once it holds this many bytes (or when the next
 * member does not fit its buffer): big enough that one worker message carries many small files,
 * small enough that every core always has a batch to work on.
 */
const BATCH_TARGET = 512 * 1024;

/**
 * Default bound on the member bytes compressing at once. Results are written in order, so the
 * oldest batch holds up the window: when it is a whole chunk (a big file), each other worker needs
 * about a chunk's worth of batches queued behind it to keep busy meanwhile (counting batches
 * instead left one core idle for ~100 ms per 4 MiB chunk). Chunk sizes above the default count as
 * the default, so memory stays bounded; batch buffers are recycled.
 */
function inFlightWindow(workers: number, chunkSize: number): number {
  // Batch buffers come in 1 MiB steps (twice the target) from the compressor's pool.
  return workers * Math.min(chunkSize, DEFAULT_CHUNK_SIZE) + (workers + 2) * 2 * BATCH_TARGET;
}

/** Closed members waiting to be sent to the compressor together: laid end to end in one buffer. */
interface OpenBatch {
  buffer: Buffer;
  length: number;
  ends: number[];
  /** Index of the batch's first member (its members are consecutive). */
  firstIndex: number;
}

/** Buffers member bytes, hands closed members to the compressor in batches, writes results in order. */
class MemberSequencer {
  private parts: Buffer[] = [];
  private openLength = 0;
  private openIndex = -1;
  private memberCount = 0;
  private batch: OpenBatch | undefined;
  private readonly inFlight: Array<{ firstIndex: number; bytes: number; result: Promise<CompressedMembers> }> = [];
  private inFlightBytes = 0;
  readonly memberOffsets: number[] = [];
  written = 0;
  uncompressed = 0;
  readonly diffHash: Hash = createHash('sha256');

  constructor(
    private readonly compressor: MemberCompressor,
    private readonly output: Writable,
    private readonly maxInFlightBytes: number,
    private readonly observer?: BlobObserver,
  ) {}

  get members(): number {
    return this.memberCount;
  }

  /** Bytes in the open member (0 when none is open). */
  get openSize(): number {
    return this.openLength;
  }

  /** Index of the open member, opening one if needed. */
  ensureOpen(): number {
    if (this.openIndex < 0) this.openIndex = this.memberCount++;
    return this.openIndex;
  }

  append(buf: Buffer): void {
    if (buf.length === 0) return;
    this.ensureOpen();
    this.parts.push(buf);
    this.openLength += buf.length;
    this.uncompressed += buf.length;
  }

  async closeMember(): Promise<void> {
    if (this.openIndex < 0) return;
    if (this.batch && this.batch.length + this.openLength > this.batch.buffer.length) {
      // A batch under target grows to take the member (a big chunk after a few small files, or
      // empty members before one) rather than leaving as a message of its own.
      if (this.batch.length >= BATCH_TARGET) await this.sendBatch();
      else this.growBatch(this.batch.length + this.openLength);
    }
    const batch = (this.batch ??= {
      buffer: this.compressor.allocate(Math.max(this.openLength, BATCH_TARGET)),
      length: 0,
      ends: [],
      firstIndex: this.openIndex,
    });
    for (const part of this.parts) batch.length += part.copy(batch.buffer, batch.length);
    batch.ends.push(batch.length);
    this.parts = [];
    this.openLength = 0;
    this.openIndex = -1;
    if (batch.length >= BATCH_TARGET) await this.sendBatch();
  }

  private growBatch(size: number): void {
    const batch = this.batch!;
    const bigger = this.compressor.allocate(size);
    batch.buffer.copy(bigger, 0, 0, batch.length);
    batch.buffer = bigger;
  }

  private async sendBatch(): Promise<void> {
    const batch = this.batch;
    if (!batch) return;
    this.batch = undefined;
    const members = batch.buffer.subarray(0, batch.length);
    // Counted by buffer, the memory it holds until its result is written (read now: the buffer
    // is detached once it moves to a worker).
    const bytes = batch.buffer.length;
    // Batches hold every member byte in stream order: the diffID hashes them here, in one call
    // per batch, before the buffer moves to a worker.
    this.diffHash.update(members);
    this.observer?.update(members);
    const result = this.compressor.compressMembers(members, Uint32Array.from(batch.ends));
    result.catch(() => {}); // observed when its turn comes; avoid an unhandled-rejection warning meanwhile
    this.inFlight.push({ firstIndex: batch.firstIndex, bytes, result });
    this.inFlightBytes += bytes;
    while (this.inFlightBytes > this.maxInFlightBytes) await this.writeOldest();
  }

  private async writeOldest(): Promise<void> {
    const next = this.inFlight.shift()!;
    this.inFlightBytes -= next.bytes;
    const { data, sizes } = await next.result;
    let index = next.firstIndex;
    for (const size of sizes) {
      this.memberOffsets[index++] = this.written;
      this.written += size;
    }
    await writeOut(this.output, data);
  }

  async flush(): Promise<void> {
    await this.closeMember();
    await this.sendBatch();
    while (this.inFlight.length > 0) await this.writeOldest();
  }

  /** Waits for (and discards) batches still compressing, after a failure. */
  async abandon(): Promise<void> {
    await Promise.allSettled(this.inFlight.map((m) => m.result));
    this.inFlight.length = 0;
    this.inFlightBytes = 0;
    this.batch = undefined;
  }

  async writeRaw(buf: Buffer): Promise<void> {
    this.written += buf.length;
    await writeOut(this.output, buf);
  }
}

/**
 * Throws UNSAFE_PATH for names that climb above the layer root. Absolute names and ".." that stay
 * inside are kept as they are, as stargz's writer does: every reader re-roots them (climbsAboveRoot).
 */
function checkSafeName(name: string, what: string, where: string): void {
  if (climbsAboveRoot(name))
    throw new EsgzError(
      'UNSAFE_PATH',
      `${where}: tar entry ${JSON.stringify(name)} has a ${what} with ".." above the layer root`,
    );
  if (name.includes('\0'))
    throw new EsgzError('UNSAFE_PATH', `${where}: tar entry ${JSON.stringify(name)} has a NUL byte in its ${what}`);
}

function landmarkEntry(name: string): SourceEntry {
  let served = false;
  return {
    header: syntheticFileHeader(name, LANDMARK_CONTENTS.length),
    async readSome() {
      if (served) throw new EsgzError('INTERNAL', 'landmark read out of range');
      served = true;
      return Buffer.from(LANDMARK_CONTENTS);
    },
  };
}

/** Entries of the input the writer keeps: not the TOC, not old landmarks (they are re-made). */
function isReservedName(name: string): boolean {
  const clean = cleanEntryName(name);
  return clean === TOC_TAR_NAME || clean === PREFETCH_LANDMARK || clean === NO_PREFETCH_LANDMARK;
}

/** Lossless mode: the input's entries exactly as they are, raw header bytes included. */
async function* losslessEntries(
  tar: AsyncIterable<Buffer>,
  where: string,
  onTrailer: (raw: Buffer) => void,
): AsyncGenerator<SourceEntry> {
  for await (const entry of readTar(tar, where, { raw: true, onTrailer })) {
    if (cleanEntryName(entry.header.name) === TOC_TAR_NAME) {
      throw new EsgzError(
        'BAD_LAYER',
        `${where}: the layer already has a ${TOC_TAR_NAME}, which a lossless (diffID-keeping) conversion cannot keep (convert the uncompressed layer)`,
      );
    }
    yield entry;
  }
}

/**
 * Streams the input's entries in order, with the no-prefetch landmark first.
 *
 * A path found twice in the layer (`tar --append`, some builders) keeps both entries, in the tar
 * and in the TOC; readers follow the last one, as applying the tar does. stargz's converter
 * (build.go importTar) drops the earlier one instead; esgz does not, because: the lossless mode
 * must keep every input byte, so readers have to handle the repeated name anyway and one writer
 * behaviour serves both modes; every layer converts to the same bytes (and so the same diffID
 * and digests) as before; and dropping changes what the layer means when a hardlink between the
 * two entries names the earlier file (applied as written it keeps the old content, with the
 * earlier entry gone it points at a file that does not exist yet).
 */
async function* streamedEntries(tar: AsyncIterable<Buffer>, where: string): AsyncGenerator<SourceEntry> {
  yield landmarkEntry(NO_PREFETCH_LANDMARK);
  for await (const entry of readTar(tar, where)) {
    if (isReservedName(entry.header.name)) continue;
    yield entry;
  }
}

interface SpooledEntry {
  header: TarHeader;
  offset: number;
}

/**
 * Reorders for prioritized files: payloads are spooled to a temp file (headers stay in memory),
 * then entries are replayed in the new order reading payloads back by offset.
 */
async function* reorderedEntries(
  tar: AsyncIterable<Buffer>,
  prioritized: PriorityItem[],
  where: string,
  tmpDir: string | undefined,
  missed: string[],
  tarFile: string | undefined,
): AsyncGenerator<SourceEntry> {
  let dir: string | undefined;
  let handle: FileHandle | undefined;
  try {
    const spooled: SpooledEntry[] = [];
    let position = 0;
    if (tarFile !== undefined) {
      // The whole tar is on disk already: list its entries (payloads are skipped by seeking) and
      // read the payloads from it by offset.
      handle = await open(tarFile, 'r');
      position = (await handle.stat()).size;
      const source = new FileByteSource(handle, position, `${where}: ${tarFile}`);
      for await (const entry of readTar(source, where)) {
        if (!isReservedName(entry.header.name)) spooled.push({ header: entry.header, offset: source.consumed });
      }
    } else {
      dir = await makeTempDir('spool', tmpDir);
      const spoolPath = join(dir, 'payloads');
      const sink = createWriteStream(spoolPath, { highWaterMark: FILE_WINDOW });
      try {
        for await (const entry of readTar(tar, where)) {
          if (isReservedName(entry.header.name)) continue;
          spooled.push({ header: entry.header, offset: position });
          while (entry.remaining() > 0) {
            const piece = await entry.readSome(entry.remaining());
            position += piece.length;
            await writeOut(sink, piece);
          }
        }
      } finally {
        await new Promise<void>((resolve, reject) => sink.end((err?: Error | null) => (err ? reject(err) : resolve())));
      }
      handle = await open(spoolPath, 'r');
    }

    const headers = spooled.map((e) => e.header);
    const names = expandPriorities(
      prioritized,
      headers.map((h) => h.name),
      missed,
    );
    const order = priorityOrder(headers, names, missed);
    // Replaying entries in input order (all but the few prioritized ones) reads the file a window
    // at a time instead of once per small file.
    const spool = new FileWindowReader(handle, position);
    for (const item of order) {
      if (item === 'landmark') {
        yield landmarkEntry(PREFETCH_LANDMARK);
        continue;
      }
      const e = spooled[item]!;
      let pos = e.offset;
      const end = e.offset + (e.header.typeflag === '0' || e.header.typeflag === '7' ? e.header.size : 0);
      yield {
        header: e.header,
        async readSome(max: number) {
          const length = Math.min(max, end - pos, FILE_WINDOW);
          if (length <= 0) throw new EsgzError('INTERNAL', `spool read past the end of ${e.header.name}`);
          const piece = await spool.read(pos, length, `${where}: spool of ${e.header.name}`);
          pos += length;
          return piece;
        },
      };
    }
  } finally {
    await handle?.close();
    if (dir !== undefined) await removeTempDir(dir);
  }
}

/**
 * stargz's sortEntries/moveRec: each prioritized name (cleaned) moves to the front after its
 * parent directories (recursively) and, for hardlinks, after its target; then the landmark;
 * then everything else in input order. Names not in the layer are collected in `missed`.
 */
export function priorityOrder(
  headers: TarHeader[],
  prioritized: string[],
  missed: string[],
): Array<number | 'landmark'> {
  const byName = new Map<string, number[]>();
  headers.forEach((h, i) => {
    const name = cleanEntryName(h.name);
    const list = byName.get(name);
    if (list) list.push(i);
    else byName.set(name, [i]);
  });
  const moved = new Set<number>();
  const front: number[] = [];
  const move = (name: string) => {
    for (const i of byName.get(name) ?? []) {
      if (!moved.has(i)) {
        moved.add(i);
        front.push(i);
      }
    }
  };
  const visiting = new Set<string>();
  const moveRec = (rawName: string): boolean => {
    const name = cleanEntryName(rawName);
    if (name === '') {
      move('');
      return true;
    }
    if (!byName.has(name)) return false;
    if (visiting.has(name)) return true; // hardlink cycles
    visiting.add(name);
    const parent = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
    moveRec(parent);
    for (const i of byName.get(name)!) {
      const h = headers[i]!;
      if (h.typeflag === '1' && !moved.has(i)) moveRec(h.linkname);
    }
    move(name);
    visiting.delete(name);
    return true;
  };
  for (const p of prioritized) if (!moveRec(p)) missed.push(p);
  const rest = headers.map((_, i) => i).filter((i) => !moved.has(i));
  return [...front, 'landmark', ...rest];
}

/** The writer's checked chunking options. */
interface Chunking {
  chunkSize: number;
  minChunkSize: number;
}

function checkOptions(options: EstargzWriterOptions): Chunking {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const minChunkSize = options.minChunkSize ?? 0;
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0 || chunkSize > MAX_CHUNK_SIZE) {
    throw new EsgzError(
      'BAD_FLAG',
      `chunk size must be a positive integer up to ${MAX_CHUNK_SIZE} (what readers accept), got ${chunkSize}`,
    );
  }
  if (!Number.isSafeInteger(minChunkSize) || minChunkSize < 0)
    throw new EsgzError('BAD_FLAG', `min chunk size must be a non-negative integer, got ${minChunkSize}`);
  if (options.lossless && (options.prioritizedFiles?.length ?? 0) > 0) {
    throw new EsgzError('BAD_FLAG', 'prioritized files cannot be used when the diffID is kept (lossless mode)');
  }
  if (options.compressor.format !== options.codec.name) {
    const { compressor, codec } = options;
    throw new EsgzError('INTERNAL', `a ${compressor.format} compressor cannot write ${codec.name} members`);
  }
  return { chunkSize, minChunkSize };
}

/** The entries to write, in order: as they are (lossless), reordered (prioritized) or streamed. */
function sourceEntries(
  tar: AsyncIterable<Buffer>,
  options: EstargzWriterOptions,
  where: string,
  missed: string[],
  onTrailer: (raw: Buffer) => void,
): AsyncGenerator<SourceEntry> {
  const prioritized = options.prioritizedFiles ?? [];
  if (options.lossless) return losslessEntries(tar, where, onTrailer);
  if (prioritized.length > 0) return reorderedEntries(tar, prioritized, where, options.tmpDir, missed, options.tarFile);
  return streamedEntries(tar, where);
}

/**
 * Writes entries one by one into members and collects their TOC entries. A class rather than
 * closures so the per-entry path allocates nothing beyond the entries themselves.
 */
class LayerWriter {
  readonly tocEntries: TOCEntry[] = [];
  /** TOC entries whose `offset` is a member index until the end, when it becomes a blob offset. */
  private readonly memberOf = new Map<TOCEntry, number>();
  private readonly lastUserName = new Map<number, string>();
  private readonly lastGroupName = new Map<number, string>();
  entryCount = 0;
  /** Where in the input we are, to name it when the input stream itself fails (corrupt gzip, ...). */
  private currentEntry: string | undefined;
  private lastEntry: string | undefined;

  constructor(
    private readonly seq: MemberSequencer,
    private readonly chunking: Chunking,
    private readonly where: string,
    private readonly lossless: boolean,
  ) {}

  async add(source: SourceEntry): Promise<void> {
    const h = source.header;
    const isLandmark = h.name === NO_PREFETCH_LANDMARK || h.name === PREFETCH_LANDMARK;
    if (!isLandmark) this.currentEntry = h.name;
    const type = this.checkEntry(h);
    this.entryCount++;
    const entry = this.tocEntry(h, type);
    if (source.raw) {
      this.seq.append(source.raw);
    } else {
      const outHeader: TarHeader = {
        ...h,
        typeflag: h.typeflag === '7' ? '0' : h.typeflag,
        size: type === 'reg' ? h.size : 0,
      };
      this.seq.append(encodeTarHeader(outHeader));
    }
    if (type === 'reg') await this.addPayload(source, entry, isLandmark);
    else this.tocEntries.push(entry);
    if (!isLandmark) this.lastEntry = this.currentEntry;
    this.currentEntry = undefined;
  }

  /** The entry's TOC type, once its type and names are known to be safe to write. */
  private checkEntry(h: TarHeader): TOCEntryType {
    const type = TYPE_OF[h.typeflag === '7' ? '0' : h.typeflag];
    if (!type) {
      throw new EsgzError(
        'UNSUPPORTED',
        `${this.where}: tar entry ${JSON.stringify(h.name)} has unsupported type ${JSON.stringify(h.typeflag)}`,
      );
    }
    checkSafeName(h.name, 'name', this.where);
    if (type === 'hardlink') checkSafeName(h.linkname, 'link target', this.where);
    if (cleanEntryName(h.name) === '' && type !== 'dir') {
      throw new EsgzError(
        'BAD_LAYER',
        `${this.where}: tar entry ${JSON.stringify(h.name)} names the root but is not a directory`,
      );
    }
    return type;
  }

  private tocEntry(h: TarHeader, type: TOCEntryType): TOCEntry {
    const xattrs: Record<string, string> = {};
    for (const [key, value] of h.pax) {
      if (key.startsWith(XATTR_PREFIX)) xattrs[key.slice(XATTR_PREFIX.length)] = value.toString('base64');
    }
    const entry: TOCEntry = {
      name: h.name,
      type,
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      userName: nameIfChanged(this.lastUserName, h.uid, h.uname),
      groupName: nameIfChanged(this.lastGroupName, h.gid, h.gname),
      modtime: formatModtime(new Date(h.mtime * 1000)),
      xattrs,
    };
    if (type === 'hardlink' || type === 'symlink') entry.linkName = h.linkname;
    if (type === 'char' || type === 'block') {
      entry.devMajor = h.devmajor;
      entry.devMinor = h.devminor;
    }
    return entry;
  }

  /** A regular file's payload, chunk by chunk: each chunk's member, TOC entry and digest. */
  private async addPayload(source: SourceEntry, entry: TOCEntry, isLandmark: boolean): Promise<void> {
    const { seq } = this;
    const { chunkSize, minChunkSize } = this.chunking;
    const size = source.header.size;
    entry.size = size;
    if (size === 0) this.tocEntries.push(entry);
    const fileHash = createHash('sha256');
    let fileDigest: string | undefined;
    let written = 0;
    let current = entry;
    while (written < size) {
      const length = Math.min(chunkSize, size - written);
      if (length === chunkSize) current.chunkSize = length;
      if (isLandmark || minChunkSize === 0 || seq.openSize >= minChunkSize) {
        await seq.closeMember();
        this.memberOf.set(current, seq.ensureOpen());
      } else {
        this.memberOf.set(current, seq.ensureOpen());
        if (seq.openSize > 0) current.innerOffset = seq.openSize;
      }
      current.chunkOffset = written;
      // Read the chunk in the pieces the stream has: hashed and queued as they are, joined
      // once when the member closes.
      const chunkHash = createHash('sha256');
      for (let got = 0; got < length;) {
        const piece = await source.readSome(length - got);
        chunkHash.update(piece);
        if (length !== size) fileHash.update(piece);
        seq.append(piece);
        got += piece.length;
      }
      const chunkDigest = `sha256:${chunkHash.digest('hex')}`;
      // A single-chunk file's digest is its chunk's digest: the bytes are hashed once.
      if (length === size) fileDigest = chunkDigest;
      current.chunkDigest = chunkDigest;
      this.tocEntries.push(current);
      written += length;
      current = { name: entry.name, type: 'chunk' };
    }
    entry.digest = fileDigest ?? `sha256:${fileHash.digest('hex')}`;
    // Lossless mode keeps the input's own padding bytes (they come with the next raw header).
    if (!this.lossless) seq.append(ZERO_BLOCK.subarray(0, padding(size)));
  }

  /** The TOC, its member indexes turned into the blob offsets the members were written at. */
  toc(): JTOC {
    for (const [entry, index] of this.memberOf) entry.offset = this.seq.memberOffsets[index]!;
    return { version: 1, entries: this.tocEntries };
  }

  /** A failure of the input stream, told where in the tar it happened. */
  located(err: unknown): EsgzError {
    if (err instanceof EsgzError && err.code === 'BAD_LAYER' && !err.message.includes('tar entry')) {
      const position =
        this.currentEntry !== undefined
          ? `while reading tar entry ${JSON.stringify(this.currentEntry)}`
          : this.lastEntry !== undefined
            ? `after tar entry ${JSON.stringify(this.lastEntry)}`
            : 'before the first tar entry';
      return new EsgzError(err.code, `${err.message} (${position})`, { cause: err });
    }
    if (err instanceof EsgzError) return err;
    return new EsgzError('INTERNAL', `${this.where}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

/** Prefix of the PAX records that carry extended attributes. */
const XATTR_PREFIX = 'SCHILY.xattr.';

/** `name` when it differs from the last one seen for `id` (stargz writes owner names once). */
function nameIfChanged(map: Map<number, string>, id: number, name: string): string | undefined {
  if (name === '' || map.get(id) === name) return undefined;
  map.set(id, name);
  return name;
}

/**
 * Converts an uncompressed tar stream into an eStargz (or zstd:chunked, by codec) blob written
 * to `output`, its members compressed by `options.compressor`. Does not end `output`, and does
 * not close the compressor (the caller owns it).
 */
export async function writeEstargz(
  tar: AsyncIterable<Buffer>,
  output: Writable,
  options: EstargzWriterOptions,
): Promise<EstargzWriteResult> {
  const where = options.where ?? 'layer';
  const chunking = checkOptions(options);
  const { codec, compressor } = options;
  const window = options.maxInFlightBytes ?? inFlightWindow(compressor.size, chunking.chunkSize);
  const observer = codec.startBlob?.(where);
  const seq = new MemberSequencer(compressor, output, window, observer);
  const layer = new LayerWriter(seq, chunking, where, options.lossless ?? false);
  const missed: string[] = [];
  let trailer: Buffer | undefined;
  const entries = sourceEntries(tar, options, where, missed, (raw) => (trailer = raw));
  try {
    for await (const source of entries) {
      options.signal?.throwIfAborted();
      await layer.add(source);
    }
    if (trailer) seq.append(trailer);
    await seq.flush();
  } catch (err) {
    await seq.abandon();
    throw layer.located(err);
  }

  const toc = layer.toc();
  const tocOffset = seq.written;
  const tail = await codec.buildTail(toc, tocOffset, compressor, observer);
  await seq.writeRaw(tail.bytes);
  seq.diffHash.update(tail.uncompressedTail);
  return {
    toc,
    tocDigest: tail.tocDigest,
    diffID: `sha256:${seq.diffHash.digest('hex')}`,
    uncompressedSize: seq.uncompressed + tail.uncompressedTail.length,
    compressedSize: seq.written,
    tocOffset,
    entryCount: layer.entryCount,
    memberCount: seq.members + 1,
    missedPrioritizedFiles: missed,
    codecAnnotations: tail.annotations ?? {},
    ...(tail.externalTOC ? { externalTOC: tail.externalTOC } : {}),
  };
}
