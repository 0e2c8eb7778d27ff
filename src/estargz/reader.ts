/**
 * The eStargz / zstd:chunked reader: footer → TOC (digest-verified) → files by name → chunks by
 * file offset → verified chunk bytes. Everything goes through a `BlobReader`, so the same code
 * reads a local blob file and a registry blob by Range requests (lazy pull builds on this).
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { EsgzError } from '../errors.js';
import type { Descriptor, ImageSource } from '../image/types.js';
import type { Codec, FooterInfo } from './codec.js';
import { readerCodecs } from './codecs.js';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from './constants.js';
import { cleanEntryName, type JTOC, type TOCEntry } from './toc.js';

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
    throw new EsgzError(err.code === 'ENOENT' ? 'NOT_FOUND' : 'BAD_LAYER', `cannot open blob ${path}: ${err.message}`, { cause: err });
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
        if (bytesRead === 0) throw new EsgzError('SIZE_MISMATCH', `${path}: blob ended at ${offset + got}, expected ${offset + length}`);
        got += bytesRead;
      }
      return buf;
    },
    close: () => handle.close(),
  };
}

/** A BlobReader over `ImageSource.readBlobRange` (registry Range requests, OCI layout files, ...). */
export function sourceBlobReader(source: ImageSource, desc: Descriptor): BlobReader {
  return {
    size: desc.size,
    async read(offset, length) {
      checkRange(offset, length, desc.size, desc.digest);
      const buf = await source.readBlobRange(desc, offset, length);
      if (buf.length !== length) {
        throw new EsgzError('SIZE_MISMATCH', `${source.description} ${desc.digest}: range read at ${offset} returned ${buf.length} bytes, expected ${length}`);
      }
      return buf;
    },
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

function checkRange(offset: number, length: number, size: number, what: string): void {
  if (offset < 0 || length < 0 || offset + length > size) {
    throw new EsgzError('BAD_FORMAT', `${what}: read of ${length} bytes at ${offset} is outside the blob (${size} bytes)`);
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
  /** `sha256:` of the chunk's bytes, when the TOC has one. */
  chunkDigest?: string;
}

export interface OpenOptions {
  /** Expected TOC digest (descriptor annotation); a mismatch is DIGEST_MISMATCH. */
  expectedTOCDigest?: string;
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

  private constructor(
    readonly blob: BlobReader,
    readonly codec: Codec,
    readonly footer: FooterInfo,
    readonly toc: JTOC,
    readonly tocDigest: string,
    readonly tocJSON: Buffer,
    readonly where: string,
  ) {
    this.index();
  }

  /** Reads the footer and the TOC, verifies the TOC digest, builds the chunk index. */
  static async open(blob: BlobReader, options: OpenOptions = {}): Promise<EstargzReader> {
    const where = options.where ?? 'blob';
    const codecs = options.codecs ?? (await readerCodecs());
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
    if (!found) throw new EsgzError('BAD_FORMAT', `${where}: no eStargz or zstd:chunked footer at the end of the blob (not an eStargz layer, or truncated)`);
    const { codec, footer } = found;

    let tocBytes: Buffer;
    if (footer.externalTOC) {
      if (!options.externalTOC) throw new EsgzError('UNSUPPORTED', `${where}: the TOC of this layer is external (STARGZEXTERNALTOC); it lives in the IMAGE-esgztoc image`);
      tocBytes = typeof options.externalTOC === 'function' ? await options.externalTOC() : options.externalTOC;
    } else {
      const tocEnd = footer.tocSize !== undefined ? footer.tocOffset + footer.tocSize : blob.size - footer.footerSize;
      if (tocEnd <= footer.tocOffset || tocEnd > blob.size) throw new EsgzError('BAD_FORMAT', `${where}: footer points at an empty or out-of-range TOC (${footer.tocOffset}..${tocEnd})`);
      tocBytes = await blob.read(footer.tocOffset, tocEnd - footer.tocOffset);
    }
    let parsed;
    try {
      parsed = await codec.parseTOC(tocBytes);
    } catch (err) {
      throw err instanceof EsgzError ? new EsgzError(err.code, `${where}: ${err.message}`, { cause: err }) : err;
    }
    if (options.expectedTOCDigest && options.expectedTOCDigest !== parsed.tocDigest) {
      throw new EsgzError('DIGEST_MISMATCH', `${where}: TOC digest ${parsed.tocDigest} does not match the expected ${options.expectedTOCDigest}`);
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
      if ((e.type === 'reg' || e.type === 'chunk') && (e.innerOffset ?? 0) === 0 && (e.type === 'chunk' || (e.size ?? 0) > 0)) starts.add(e.offset ?? 0);
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
    for (const e of this.toc.entries) {
      const name = cleanEntryName(e.name);
      if (e.type === 'chunk') {
        if (!currentFile || currentName !== name) {
          throw new EsgzError('BAD_FORMAT', `${this.where}: TOC chunk entry ${JSON.stringify(e.name)} does not follow its regular file`);
        }
      } else {
        this.byName.set(name, e);
        currentFile = e.type === 'reg' ? e : undefined;
        currentName = name;
        if (e.type !== 'reg' || (e.size ?? 0) === 0) continue;
      }
      const file = currentFile!;
      const fileSize = file.size ?? 0;
      const fileOffset = e.chunkOffset ?? 0;
      const length = e.chunkSize && e.chunkSize > 0 ? e.chunkSize : fileSize - fileOffset;
      const offset = e.offset ?? 0;
      if (fileOffset + length > fileSize || length <= 0) {
        throw new EsgzError('BAD_FORMAT', `${this.where}: TOC chunk of ${JSON.stringify(e.name)} at ${fileOffset} (+${length}) lies outside the file (${fileSize} bytes)`);
      }
      if (offset >= this.dataEnd) throw new EsgzError('BAD_FORMAT', `${this.where}: TOC entry ${JSON.stringify(e.name)} points past the data (offset ${offset})`);
      const list = this.chunksByName.get(name) ?? [];
      list.push({
        name, entry: e, fileOffset, length, compressedOffset: offset, compressedEnd: nextStart(offset),
        innerOffset: e.innerOffset ?? 0, chunkDigest: e.chunkDigest,
      });
      this.chunksByName.set(name, list);
    }
    for (const [name, list] of this.chunksByName) {
      let expected = 0;
      for (const c of list) {
        if (c.fileOffset !== expected) throw new EsgzError('BAD_FORMAT', `${this.where}: TOC chunks of ${JSON.stringify(name)} leave a gap at ${expected}`);
        expected += c.length;
      }
      const size = this.byName.get(name)?.size ?? 0;
      if (expected !== size) throw new EsgzError('BAD_FORMAT', `${this.where}: TOC chunks of ${JSON.stringify(name)} cover ${expected} of ${size} bytes`);
    }
  }

  /** Every non-chunk TOC entry in blob order. */
  entries(): TOCEntry[] {
    return this.toc.entries.filter((e) => e.type !== 'chunk');
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
    if (entry.type !== 'reg') throw new EsgzError('BAD_FLAG', `${this.where}: ${JSON.stringify(name)} is a ${entry.type}, not a regular file`);
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
    return verifyChunk(await this.decompressAt(chunk, compressed.length > span ? compressed.subarray(0, span) : compressed), chunk, this.where);
  }

  private async decompressAt(chunk: ChunkRef, compressed: Buffer): Promise<Buffer> {
    let data: Buffer;
    try {
      data = await this.codec.decompress(compressed);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new EsgzError('BAD_FORMAT', `${this.where}: ${chunk.name} at ${chunk.fileOffset}: ${message}`, { cause: err });
    }
    if (data.length < chunk.innerOffset + chunk.length) {
      throw new EsgzError('BAD_FORMAT', `${this.where}: ${chunk.name} at ${chunk.fileOffset}: member holds ${data.length} bytes, chunk needs ${chunk.innerOffset + chunk.length}`);
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
      if (actual !== entry.digest) throw new EsgzError('DIGEST_MISMATCH', `${this.where}: ${name}: file digest ${actual} does not match the TOC (${entry.digest})`);
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
            const compressed = await this.blob.read(chunk.compressedOffset, chunk.compressedEnd - chunk.compressedOffset);
            cache = await this.codec.decompress(compressed);
            cacheKey = chunk.compressedOffset;
          }
          if (cache!.length < chunk.innerOffset + chunk.length) throw new EsgzError('BAD_FORMAT', `${this.where}: ${name}: member too short for chunk at ${chunk.fileOffset}`);
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
        if (actual !== entry.digest) throw new EsgzError('DIGEST_MISMATCH', `${this.where}: ${name}: file digest ${actual} does not match the TOC (${entry.digest})`);
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
      throw new EsgzError('DIGEST_MISMATCH', `${where}: ${chunk.name}: chunk at ${chunk.fileOffset} has digest ${actual}, TOC says ${chunk.chunkDigest}`);
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
