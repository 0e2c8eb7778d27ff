// Random access to the files of a tar (docker-archive:, oci-archive:): the headers are read once
// to learn where each regular file's data sits, then files are read or streamed in place, so a
// blob of any size is never held in memory.
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import { DigestVerifier } from '../../oci/digest.js';
import type { Descriptor } from '../../oci/types.js';

export interface TarEntryLocation {
  offset: number;
  size: number;
}

const BLOCK = 512;
/** Metadata files (manifest.json, index.json, configs) are read whole; never past this. */
const MAX_METADATA_BYTES = 64 * 1024 * 1024;

export function normalizeEntryName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
}

function parseOctal(buf: Buffer, offset: number, length: number): number {
  const field = buf.subarray(offset, offset + length);
  // GNU base-256 for sizes past 8 GiB.
  if ((field[0]! & 0x80) !== 0) {
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return text.length === 0 ? 0 : parseInt(text, 8);
}

function cString(buf: Buffer, offset: number, length: number): string {
  const field = buf.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const length = parseInt(data.subarray(pos, space).toString('latin1'), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = data.subarray(space + 1, pos + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    pos += length;
  }
  return out;
}

/** Reads every header once and records where each regular file's data starts (random access later). */
export async function indexTar(handle: FileHandle, where: string): Promise<Map<string, TarEntryLocation>> {
  const entries = new Map<string, TarEntryLocation>();
  const { size: fileSize } = await handle.stat();
  const header = Buffer.alloc(BLOCK);
  let offset = 0;
  let pending: { path?: string; size?: number } = {};
  const readExactly = async (buf: Buffer, position: number): Promise<void> => {
    const { bytesRead } = await handle.read(buf, 0, buf.length, position);
    if (bytesRead !== buf.length) throw new EsgzError('BAD_ARCHIVE', `${where}: truncated tar at byte ${position}`);
  };
  while (offset + BLOCK <= fileSize) {
    await readExactly(header, offset);
    if (header.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
    if (sum !== parseOctal(header, 148, 8))
      throw new EsgzError('BAD_ARCHIVE', `${where}: not a tar file (bad header checksum at byte ${offset})`);
    const type = String.fromCharCode(header[156]!);
    const size = pending.size ?? parseOctal(header, 124, 12);
    const dataOffset = offset + BLOCK;
    if (dataOffset + size > fileSize)
      throw new EsgzError('BAD_ARCHIVE', `${where}: truncated tar (entry at byte ${offset} runs past the end)`);
    const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'x' || type === 'L') {
      const data = Buffer.alloc(size);
      await readExactly(data, dataOffset);
      if (type === 'x') {
        const pax = parsePax(data);
        pending = {
          ...pending,
          ...(pax.path !== undefined ? { path: pax.path } : {}),
          ...(pax.size !== undefined ? { size: Number(pax.size) } : {}),
        };
      } else {
        pending = { ...pending, path: data.toString('utf8').replace(/\0+$/, '') };
      }
    } else if (type === 'g') {
      // global PAX header: nothing esgz needs
    } else {
      const prefix = cString(header, 345, 155);
      const name = pending.path ?? (prefix ? `${prefix}/${cString(header, 0, 100)}` : cString(header, 0, 100));
      if (type === '0' || type === '\0' || type === '7')
        entries.set(normalizeEntryName(name), { offset: dataOffset, size });
      pending = {};
    }
    offset = next;
  }
  return entries;
}

/** An open tar and where its files are; `description` names it in messages. */
export class TarFileReader {
  private constructor(
    private readonly handle: FileHandle,
    readonly entries: Map<string, TarEntryLocation>,
    private readonly description: string,
  ) {}

  /** Opens and indexes `file`; NOT_FOUND when it is missing, BAD_ARCHIVE when it is no tar. */
  static async open(file: string, description: string): Promise<TarFileReader> {
    let handle: FileHandle;
    try {
      handle = await open(file, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new EsgzError('NOT_FOUND', `${description}: no such file ${file}`, { cause: err });
      throw new EsgzError('BAD_ARCHIVE', `${description}: cannot open ${file}: ${code ?? (err as Error).message}`, {
        cause: err,
      });
    }
    try {
      return new TarFileReader(handle, await indexTar(handle, description), description);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Where a file is; BAD_ARCHIVE naming `what` when the tar has no such file. */
  entry(name: string, what: string): TarEntryLocation {
    const found = this.entries.get(normalizeEntryName(name));
    if (!found) throw new EsgzError('BAD_ARCHIVE', `${this.description}: ${what} "${name}" is not in the archive`);
    return found;
  }

  async readEntry(location: TarEntryLocation, limit = MAX_METADATA_BYTES): Promise<Buffer> {
    if (location.size > limit)
      throw new EsgzError('BAD_ARCHIVE', `${this.description}: metadata file of ${location.size} bytes is too large`);
    return this.readRange(location, 0, location.size);
  }

  async readRange(location: TarEntryLocation, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await this.handle.read(buf, 0, length, location.offset + offset);
    if (bytesRead !== length) throw new EsgzError('BAD_ARCHIVE', `${this.description}: truncated archive`);
    return buf;
  }

  /** The raw bytes of a file, streamed. */
  stream(location: TarEntryLocation): Readable {
    return this.handle.createReadStream({
      start: location.offset,
      end: location.offset + location.size - 1,
      autoClose: false,
      highWaterMark: 1 << 20,
    });
  }

  /** Streams a file as the blob `desc`: its length is checked first, its digest as it goes. */
  openVerified(location: TarEntryLocation, desc: Descriptor, what: string): Readable {
    // Refused before a byte is used, as containers/image does: the entry's length is known here.
    checkEntrySize(location, desc, what);
    const verifier = new DigestVerifier(desc, what);
    if (location.size === 0) {
      verifier.end();
      return verifier;
    }
    const stream = this.stream(location);
    stream.on('error', (err) =>
      verifier.destroy(new EsgzError('BAD_ARCHIVE', `${what}: ${err.message}`, { cause: err })),
    );
    return stream.pipe(verifier);
  }

  /** `length` bytes at `offset` of the blob `desc` stored at `location` (not digest-checked: callers verify). */
  async readBlobRange(location: TarEntryLocation, desc: Descriptor, offset: number, length: number, what: string) {
    checkEntrySize(location, desc, what);
    if (offset < 0 || length < 0 || offset + length > location.size)
      throw new EsgzError('SIZE_MISMATCH', `${what}: range ${offset}+${length} is past the end of the blob`);
    return this.readRange(location, offset, length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function checkEntrySize(location: TarEntryLocation, desc: Descriptor, what: string): void {
  if (location.size !== desc.size)
    throw new EsgzError(
      'SIZE_MISMATCH',
      `${what}: the blob has ${location.size} bytes but its descriptor says ${desc.size}`,
    );
}
