/**
 * The eStargz / zstd:chunked reader: footer → TOC (digest-verified) → files by name → chunks by
 * file offset → verified chunk bytes. Everything goes through a `BlobReader`, so the same code
 * reads a local blob file and a registry blob by Range requests (lazy pull builds on this).
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { EsgzError } from '../errors.js';
import type { Codec, FooterInfo } from './codec.js';
import { readerCodecs } from './codecs.js';
import { MAX_CHUNK_SIZE, MAX_TOC_SIZE, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_SLACK } from './constants.js';
import { cleanEntryName, climbsAboveRoot, type JTOC, type TOCEntry } from './toc.js';

/**
 * Thrown by EstargzReader.open when the footer says the TOC is external (STARGZEXTERNALTOC) and
 * no `externalTOC` was given: a caller that can find the TOC image tests for it with
 * `instanceof` and opens the layer again with the TOC.
 */
export class ExternalTOCRequiredError extends EsgzError {
  constructor(where: string) {
    super(
      'UNSUPPORTED',
      `${where}: the TOC of this layer is external (STARGZEXTERNALTOC); it lives in the IMAGE-esgztoc image`,
    );
    this.name = 'ExternalTOCRequiredError';
  }
}

/** Random access to a blob's compressed bytes. */
export interface BlobReader {
  readonly size: number;
  /** Exactly `length` bytes at `offset` (offset + length ≤ size). */
  read(offset: number, length: number): Promise<Buffer>;
  close?(): Promise<void>;
}

/** A BlobReader over a local file. */
export async function openFileBlobReader(path: string): Promise<BlobReader & { close(): Promise<void> }> {
  const handle = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new EsgzError(err.code === 'ENOENT' ? 'NOT_FOUND' : 'BAD_LAYER', `cannot open blob ${path}: ${err.message}`, {
      cause: err,
    });
  });
  const { size } = await handle.stat();
  return {
    size,
    async read(offset, length) {
      checkRange(offset, length, size, path);
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await handle.read(buf, got, length - got, offset + got);
        if (bytesRead === 0)
          throw new EsgzError('SIZE_MISMATCH', `${path}: blob ended at ${offset + got}, expected ${offset + length}`);
        got += bytesRead;
      }
      return buf;
    },
    close: () => handle.close(),
  };
}

/** A BlobReader over an in-memory buffer (tests, small blobs). */
export function bufferBlobReader(data: Buffer): BlobReader {
  return {
    size: data.length,
    async read(offset, length) {
      checkRange(offset, length, data.length, 'buffer');
      return data.subarray(offset, offset + length);
    },
  };
}

export function checkRange(offset: number, length: number, size: number, what: string): void {
  if (offset < 0 || length < 0 || offset + length > size) {
    throw new EsgzError(
      'BAD_FORMAT',
      `${what}: read of ${length} bytes at ${offset} is outside the blob (${size} bytes)`,
    );
  }
}

/** One chunk of a regular file, with where its bytes are in the blob. */
export interface ChunkRef {
  /** Cleaned name of the file (hardlinks resolved to the file that holds the data). */
  name: string;
  /** The TOC entry (`reg` for the first chunk, `chunk` for the others). */
  entry: TOCEntry;
  /** Offset of the chunk in the file. */
  fileOffset: number;
  /** Uncompressed length of the chunk. */
  length: number;
  /** Blob offset of the member holding the chunk. */
  compressedOffset: number;
  /** Blob offset where the next member starts (end of what must be fetched). */
  compressedEnd: number;
  /** Offset of the chunk inside the decompressed member(s). */
  innerOffset: number;
  /**
   * `sha256:` of the chunk's bytes: its `chunkDigest`, or the file's `digest` for a file in one
   * chunk. Every chunk has one: the reader refuses a TOC that leaves a chunk unverifiable.
   */
  chunkDigest?: string;
}

/** Largest compressed TOC read from a blob: what a TOC of MAX_TOC_SIZE could compress to at worst. */
const MAX_COMPRESSED_TOC = MAX_TOC_SIZE + TOC_TAR_SLACK;
/** A digest the TOC may carry: the sha256 the writers put there. */
const SHA256_DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * The codec with its `decompress` bounded by default to what the TOC says any member of this
 * blob holds (`limit`), for callers that decompress whole members themselves.
 */
function boundedCodec(codec: Codec, limit: number): Codec {
  const bounded = Object.create(codec) as Codec;
  return Object.defineProperty(bounded, 'decompress', {
    value: (compressed: Buffer, maxOutput?: number) =>
      codec.decompress(compressed, Math.min(maxOutput ?? limit, limit)),
  });
}

export interface OpenOptions {
  /** Expected TOC digest (descriptor annotation); a mismatch is DIGEST_MISMATCH. */
  expectedTOCDigest?: string;
  /** Expected digest of the TOC as stored (zstd:chunked manifest-checksum annotation); a mismatch is DIGEST_MISMATCH. */
  expectedStoredTOCDigest?: string;
  /** Names the blob in messages. */
  where?: string;
  /** Codecs to try (default: every available one). */
  codecs?: Codec[];
  /**
   * For external-TOC blobs: the TOC blob (as the codec stores it) from the TOC image, or a
   * function fetching it (called only when the footer says the TOC is external).
   */
  externalTOC?: Buffer | (() => Promise<Buffer>);
}

export class EstargzReader {
  private readonly byName = new Map<string, TOCEntry>();
  private readonly chunksByName = new Map<string, ChunkRef[]>();
  /** Per member (blob offset): how many of its uncompressed bytes its chunks reach. */
  private readonly memberPrefix = new Map<number, number>();
  /** The codec; its `decompress` never inflates a member beyond what the TOC says it holds. */
  readonly codec: Codec;

  private constructor(
    readonly blob: BlobReader,
    codec: Codec,
    readonly footer: FooterInfo,
    readonly toc: JTOC,
    readonly tocDigest: string,
    readonly tocJSON: Buffer,
    readonly where: string,
  ) {
    this.index();
    this.codec = boundedCodec(codec, Math.max(0, ...this.memberPrefix.values()));
  }

  /** Reads the footer and the TOC, verifies the TOC digest, builds the chunk index. */
  static async open(blob: BlobReader, options: OpenOptions = {}): Promise<EstargzReader> {
    const where = options.where ?? 'blob';
    const codecs = options.codecs ?? readerCodecs();
    const maxFooter = Math.max(...codecs.map((c) => c.maxFooterSize));
    if (blob.size < 10) throw new EsgzError('BAD_FORMAT', `${where}: ${blob.size} bytes is too small to be eStargz`);
    const tailLength = Math.min(maxFooter, blob.size);
    const tail = await blob.read(blob.size - tailLength, tailLength);
    let found: { codec: Codec; footer: FooterInfo } | undefined;
    for (const codec of codecs) {
      let footer: FooterInfo | undefined;
      try {
        footer = codec.parseFooter(tail, blob.size);
      } catch (err) {
        throw err instanceof EsgzError ? new EsgzError(err.code, `${where}: ${err.message}`, { cause: err }) : err;
      }
      if (footer) {
        found = { codec, footer };
        break;
      }
    }
    if (!found)
      throw new EsgzError(
        'BAD_FORMAT',
        `${where}: no eStargz or zstd:chunked footer at the end of the blob (not an eStargz layer, or truncated)`,
      );
    const { codec, footer } = found;

    let tocBytes: Buffer;
    if (footer.externalTOC) {
      if (!options.externalTOC) throw new ExternalTOCRequiredError(where);
      tocBytes = typeof options.externalTOC === 'function' ? await options.externalTOC() : options.externalTOC;
      if (tocBytes.length > MAX_COMPRESSED_TOC)
        throw new EsgzError(
          'BAD_FORMAT',
          `${where}: external TOC of ${tocBytes.length} bytes is larger than esgz reads (${MAX_TOC_SIZE >> 20} MiB)`,
        );
    } else {
      const tocEnd = footer.tocSize !== undefined ? footer.tocOffset + footer.tocSize : blob.size - footer.footerSize;
      if (tocEnd <= footer.tocOffset || tocEnd > blob.size - footer.footerSize)
        throw new EsgzError(
          'BAD_FORMAT',
          `${where}: footer points at an empty or out-of-range TOC (${footer.tocOffset}..${tocEnd})`,
        );
      if (tocEnd - footer.tocOffset > MAX_COMPRESSED_TOC) {
        throw new EsgzError(
          'BAD_FORMAT',
          `${where}: footer points at a TOC of ${tocEnd - footer.tocOffset} compressed bytes, more than esgz reads (${MAX_TOC_SIZE >> 20} MiB)`,
        );
      }
      tocBytes = await blob.read(footer.tocOffset, tocEnd - footer.tocOffset);
    }
    let parsed;
    try {
      parsed = await codec.parseTOC(tocBytes);
    } catch (err) {
      throw err instanceof EsgzError ? new EsgzError(err.code, `${where}: ${err.message}`, { cause: err }) : err;
    }
    if (options.expectedTOCDigest && options.expectedTOCDigest !== parsed.tocDigest) {
      throw new EsgzError(
        'DIGEST_MISMATCH',
        `${where}: TOC digest ${parsed.tocDigest} does not match the expected ${options.expectedTOCDigest}`,
      );
    }
    if (options.expectedStoredTOCDigest && options.expectedStoredTOCDigest !== parsed.storedTOCDigest) {
      throw new EsgzError(
        'DIGEST_MISMATCH',
        `${where}: compressed TOC digest ${parsed.storedTOCDigest ?? '(none: not zstd:chunked)'} does not match the manifest checksum ${options.expectedStoredTOCDigest}`,
      );
    }
    return new EstargzReader(blob, codec, footer, parsed.toc, parsed.tocDigest, parsed.tocJSON, where);
  }

  /** Where data members end: the TOC (or footer, for external TOCs). */
  private get dataEnd(): number {
    return this.footer.externalTOC ? this.blob.size - this.footer.footerSize : this.footer.tocOffset;
  }

  private index(): void {
    const starts = new Set<number>([this.dataEnd]);
    for (const e of this.toc.entries) {
      if (
        (e.type === 'reg' || e.type === 'chunk') &&
        (e.innerOffset ?? 0) === 0 &&
        (e.type === 'chunk' || (e.size ?? 0) > 0)
      )
        starts.add(e.offset ?? 0);
    }
    const sortedStarts = [...starts].sort((a, b) => a - b);
    const nextStart = (offset: number): number => {
      let lo = 0;
      let hi = sortedStarts.length - 1;
      let best = this.dataEnd;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (sortedStarts[mid]! > offset) {
          best = sortedStarts[mid]!;
          hi = mid - 1;
        } else lo = mid + 1;
      }
      return best;
    };

    let currentFile: TOCEntry | undefined;
    let currentName = '';
    /** (offset, innerOffset) of every data chunk: stargz's VerifyTOC refuses one found twice. */
    const chunkStarts = new Set<string>();
    for (const e of this.toc.entries) {
      const name = cleanEntryName(e.name);
      if (e.type === 'chunk') {
        if (!currentFile || currentName !== name) {
          throw new EsgzError(
            'BAD_FORMAT',
            `${this.where}: TOC chunk entry ${JSON.stringify(e.name)} does not follow its regular file`,
          );
        }
      } else {
        this.checkName(e);
        // A name listed twice: the later entry wins (as in stargz's reader and in a tar), and the
        // earlier one's chunks are dropped so they never join the later file's.
        this.byName.set(name, e);
        this.chunksByName.delete(name);
        currentFile = e.type === 'reg' ? e : undefined;
        currentName = name;
        if (e.type !== 'reg' || (e.size ?? 0) === 0) continue;
      }
      const file = currentFile!;
      const fileSize = file.size ?? 0;
      const fileOffset = e.chunkOffset ?? 0;
      const length = e.chunkSize && e.chunkSize > 0 ? e.chunkSize : fileSize - fileOffset;
      const offset = e.offset ?? 0;
      const innerOffset = e.innerOffset ?? 0;
      const what = `TOC chunk of ${JSON.stringify(e.name)} at ${fileOffset}`;
      if (fileOffset + length > fileSize || length <= 0) {
        throw new EsgzError(
          'BAD_FORMAT',
          `${this.where}: ${what} (+${length}) lies outside the file (${fileSize} bytes)`,
        );
      }
      if (length > MAX_CHUNK_SIZE || innerOffset > MAX_CHUNK_SIZE) {
        throw new EsgzError(
          'BAD_FORMAT',
          `${this.where}: ${what} is ${length} bytes at inner offset ${innerOffset}; esgz reads chunks of at most ${MAX_CHUNK_SIZE >> 20} MiB`,
        );
      }
      if (offset >= this.dataEnd)
        throw new EsgzError(
          'BAD_FORMAT',
          `${this.where}: TOC entry ${JSON.stringify(e.name)} points past the data (offset ${offset})`,
        );
      const start = `${offset}+${innerOffset}`;
      if (chunkStarts.has(start))
        throw new EsgzError(
          'BAD_FORMAT',
          `${this.where}: ${what}: blob offset ${offset} (inner ${innerOffset}) is used twice in the TOC`,
        );
      chunkStarts.add(start);
      const chunkDigest = this.chunkDigestOf(e, file, length, what);
      this.memberPrefix.set(offset, Math.max(this.memberPrefix.get(offset) ?? 0, innerOffset + length));
      const list = this.chunksByName.get(name) ?? [];
      list.push({
        name,
        entry: e,
        fileOffset,
        length,
        compressedOffset: offset,
        compressedEnd: nextStart(offset),
        innerOffset,
        chunkDigest,
      });
      this.chunksByName.set(name, list);
    }
    for (const [name, list] of this.chunksByName) {
      let expected = 0;
      for (const c of list) {
        if (c.fileOffset !== expected)
          throw new EsgzError(
            'BAD_FORMAT',
            `${this.where}: TOC chunks of ${JSON.stringify(name)} leave a gap or overlap at ${expected}`,
          );
        expected += c.length;
      }
      const size = this.byName.get(name)?.size ?? 0;
      if (expected !== size)
        throw new EsgzError(
          'BAD_FORMAT',
          `${this.where}: TOC chunks of ${JSON.stringify(name)} cover ${expected} of ${size} bytes`,
        );
    }
    this.checkMembersDisjoint();
  }

  /** Names (and hardlink targets) climbing above the root are refused; the rest are re-rooted. */
  private checkName(e: TOCEntry): void {
    if (climbsAboveRoot(e.name) || e.name.includes('\0'))
      throw new EsgzError(
        'UNSAFE_PATH',
        `${this.where}: TOC entry ${JSON.stringify(e.name)} climbs above the layer root`,
      );
    if (e.type === 'hardlink' && climbsAboveRoot(e.linkName ?? '')) {
      throw new EsgzError(
        'UNSAFE_PATH',
        `${this.where}: TOC hardlink ${JSON.stringify(e.name)} points above the layer root (${JSON.stringify(e.linkName)})`,
      );
    }
  }

  /**
   * The digest a chunk is verified against: its chunkDigest, or the file digest for a file in
   * one chunk (stargz's VerifyTOC accepts that too). A chunk with neither is refused, so no byte
   * is ever served unverified.
   */
  private chunkDigestOf(e: TOCEntry, file: TOCEntry, length: number, what: string): string {
    const digest = e.chunkDigest ?? (length === (file.size ?? 0) ? file.digest : undefined);
    if (digest === undefined)
      throw new EsgzError('BAD_FORMAT', `${this.where}: ${what} has no chunkDigest: its content could not be verified`);
    if (!SHA256_DIGEST.test(digest))
      throw new EsgzError('BAD_FORMAT', `${this.where}: ${what} has an invalid digest ${JSON.stringify(digest)}`);
    return digest;
  }

  /** Chunks sharing a member (innerOffset) must not overlap inside it. */
  private checkMembersDisjoint(): void {
    const byMember = new Map<number, ChunkRef[]>();
    for (const list of this.chunksByName.values()) {
      for (const c of list) {
        const shared = byMember.get(c.compressedOffset);
        if (shared) shared.push(c);
        else byMember.set(c.compressedOffset, [c]);
      }
    }
    for (const [offset, chunks] of byMember) {
      chunks.sort((a, b) => a.innerOffset - b.innerOffset);
      for (let i = 1; i < chunks.length; i++) {
        const prev = chunks[i - 1]!;
        if (chunks[i]!.innerOffset < prev.innerOffset + prev.length) {
          throw new EsgzError(
            'BAD_FORMAT',
            `${this.where}: TOC chunks of ${JSON.stringify(prev.name)} and ${JSON.stringify(chunks[i]!.name)} overlap in the member at ${offset}`,
          );
        }
      }
    }
  }

  /**
   * The non-chunk TOC entries in force, in blob order: of a name listed twice (a layer made with
   * `tar --append`) only the later entry, as applying the tar leaves it. The TOC keeps both
   * (`toc.entries`); what a name reads as (lookup, chunks) is always the later one, so an earlier
   * entry listed here would describe a file that is not there, or a regular file whose name is
   * now a directory.
   */
  entries(): TOCEntry[] {
    return this.toc.entries.filter((e) => e.type !== 'chunk' && this.byName.get(cleanEntryName(e.name)) === e);
  }

  /** The entry for `name` ("./a/", "/a" and "a" are the same name). Hardlinks are returned as they are. */
  lookup(name: string): TOCEntry | undefined {
    return this.byName.get(cleanEntryName(name));
  }

  /** Follows hardlinks to the entry that holds the data. */
  resolve(name: string): TOCEntry | undefined {
    let entry = this.lookup(name);
    for (let hops = 0; entry?.type === 'hardlink' && hops < 64; hops++) entry = this.lookup(entry.linkName ?? '');
    return entry;
  }

  /** Chunks of a regular file (empty for empty files), hardlinks resolved. */
  chunks(name: string): ChunkRef[] {
    const entry = this.resolve(name);
    if (!entry) throw new EsgzError('NOT_FOUND', `${this.where}: no entry ${JSON.stringify(name)} in the TOC`);
    if (entry.type !== 'reg')
      throw new EsgzError('BAD_FLAG', `${this.where}: ${JSON.stringify(name)} is a ${entry.type}, not a regular file`);
    return this.chunksByName.get(cleanEntryName(entry.name)) ?? [];
  }

  /** The chunk holding byte `fileOffset` of `name`, or undefined past the end. */
  chunkAt(name: string, fileOffset: number): ChunkRef | undefined {
    const list = this.chunks(name);
    let lo = 0;
    let hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = list[mid]!;
      if (fileOffset < c.fileOffset) hi = mid - 1;
      else if (fileOffset >= c.fileOffset + c.length) lo = mid + 1;
      else return c;
    }
    return undefined;
  }

  /** Fetches, decompresses and digest-checks one chunk. */
  async readChunk(chunk: ChunkRef): Promise<Buffer> {
    const compressed = await this.blob.read(chunk.compressedOffset, chunk.compressedEnd - chunk.compressedOffset);
    return this.decodeChunk(chunk, compressed);
  }

  /**
   * Decompresses and digest-checks a chunk from bytes the caller fetched itself (e.g. one merged
   * range request for several chunks): `compressed` must start at `chunk.compressedOffset` and
   * reach at least `chunk.compressedEnd` (anything beyond is ignored: a partial next member would
   * not decompress).
   */
  async decodeChunk(chunk: ChunkRef, compressed: Buffer): Promise<Buffer> {
    const span = chunk.compressedEnd - chunk.compressedOffset;
    return verifyChunk(
      await this.decompressAt(chunk, compressed.length > span ? compressed.subarray(0, span) : compressed),
      chunk,
      this.where,
    );
  }

  private async decompressAt(chunk: ChunkRef, compressed: Buffer): Promise<Buffer> {
    let data: Buffer;
    try {
      data = await this.codec.decompress(compressed, chunk.innerOffset + chunk.length);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new EsgzError('BAD_FORMAT', `${this.where}: ${chunk.name} at ${chunk.fileOffset}: ${message}`, {
        cause: err,
      });
    }
    if (data.length < chunk.innerOffset + chunk.length) {
      throw new EsgzError(
        'BAD_FORMAT',
        `${this.where}: ${chunk.name} at ${chunk.fileOffset}: member holds ${data.length} bytes, chunk needs ${chunk.innerOffset + chunk.length}`,
      );
    }
    return data.subarray(chunk.innerOffset, chunk.innerOffset + chunk.length);
  }

  /** Reads a whole regular file, every chunk verified, and the file digest when present. */
  async readFile(name: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const part of this.fileChunks(name)) parts.push(part);
    const data = Buffer.concat(parts);
    const entry = this.resolve(name)!;
    if (entry.digest) {
      const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      if (actual !== entry.digest)
        throw new EsgzError(
          'DIGEST_MISMATCH',
          `${this.where}: ${name}: file digest ${actual} does not match the TOC (${entry.digest})`,
        );
    }
    return data;
  }

  /** Verified chunks of a file, in order. */
  async *fileChunks(name: string): AsyncGenerator<Buffer> {
    for (const chunk of this.chunks(name)) yield await this.readChunk(chunk);
  }

  /** Which landmark the blob has: prefetch (prioritized files before it), no-prefetch, or none. */
  landmark(): { kind: 'prefetch' | 'no-prefetch' | 'none'; offset?: number } {
    const p = this.byName.get(PREFETCH_LANDMARK);
    if (p) return { kind: 'prefetch', offset: p.offset };
    const n = this.byName.get(NO_PREFETCH_LANDMARK);
    if (n) return { kind: 'no-prefetch', offset: n.offset };
    return { kind: 'none' };
  }

  /**
   * Reads every member once, front to back, checking every chunk digest (and file digests).
   * Returns counts; throws on the first mismatch.
   */
  async verifyAll(onProgress?: (bytes: number) => void): Promise<{ files: number; chunks: number; bytes: number }> {
    let files = 0;
    let chunks = 0;
    let bytes = 0;
    for (const [name, list] of this.chunksByName) {
      files++;
      const entry = this.byName.get(name)!;
      const hash = createHash('sha256');
      // Consecutive chunks sharing a member (innerOffset) are decompressed once.
      let cacheKey = -1;
      let cache: Buffer | undefined;
      for (const chunk of list) {
        let data: Buffer;
        if (chunk.innerOffset > 0 || chunk.compressedOffset === cacheKey) {
          if (cacheKey !== chunk.compressedOffset) {
            const compressed = await this.blob.read(
              chunk.compressedOffset,
              chunk.compressedEnd - chunk.compressedOffset,
            );
            cache = await this.codec.decompress(compressed, this.memberPrefix.get(chunk.compressedOffset));
            cacheKey = chunk.compressedOffset;
          }
          if (cache!.length < chunk.innerOffset + chunk.length)
            throw new EsgzError(
              'BAD_FORMAT',
              `${this.where}: ${name}: member too short for chunk at ${chunk.fileOffset}`,
            );
          data = verifyChunk(cache!.subarray(chunk.innerOffset, chunk.innerOffset + chunk.length), chunk, this.where);
        } else {
          data = await this.readChunk(chunk);
        }
        hash.update(data);
        chunks++;
        bytes += data.length;
        onProgress?.(data.length);
      }
      if (entry.digest) {
        const actual = `sha256:${hash.digest('hex')}`;
        if (actual !== entry.digest)
          throw new EsgzError(
            'DIGEST_MISMATCH',
            `${this.where}: ${name}: file digest ${actual} does not match the TOC (${entry.digest})`,
          );
      }
    }
    return { files, chunks, bytes };
  }
}

/** Checks a chunk's bytes against its `chunkDigest`; returns them. */
export function verifyChunk(data: Buffer, chunk: ChunkRef, where: string): Buffer {
  if (chunk.chunkDigest) {
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== chunk.chunkDigest) {
      throw new EsgzError(
        'DIGEST_MISMATCH',
        `${where}: ${chunk.name}: chunk at ${chunk.fileOffset} has digest ${actual}, TOC says ${chunk.chunkDigest}`,
      );
    }
  }
  return data;
}

/** Convenience: open an eStargz blob from a local file. */
export async function openEstargzFile(path: string, options: OpenOptions = {}): Promise<EstargzReader> {
  const blob = await openFileBlobReader(path);
  try {
    return await EstargzReader.open(blob, { where: path, ...options });
  } catch (err) {
    await blob.close();
    throw err;
  }
}
