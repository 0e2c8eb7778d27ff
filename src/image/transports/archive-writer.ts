// Writes an image archive tar (docker-archive:, oci-archive:, `image export`): blobs stream in
// one entry after another as `blobs/sha256/<hex>` (tar is sequential; nothing is buffered whole),
// then the closing files; the tar is written at a temp path and renamed into place at the end.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { WriteStream } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { EsgzError } from '../../errors.js';
import { DigestVerifier, parseDigest } from '../../oci/digest.js';
import type { Descriptor, RawManifest } from '../../oci/types.js';
import type { ImageSink } from '../types.js';

const BLOCK = 512;

/** The tar entry name of a blob. */
export function blobEntryName(digest: string): string {
  return `blobs/sha256/${parseDigest(digest, 'digest').hex}`;
}

/** The `oci-layout` file of an OCI image layout. */
export const OCI_LAYOUT_FILE: readonly [string, Buffer] = [
  'oci-layout',
  Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })),
];

/** A ustar header for a regular file; fixed owner, mode and mtime so archives are reproducible. */
function fileHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new EsgzError('INTERNAL', `archive entry name too long: ${name}`);
  const buf = Buffer.alloc(BLOCK);
  const octal = (offset: number, width: number, value: number): void => {
    buf.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
  };
  buf.write(name, 0, 100, 'utf8');
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  if (size >= 8 ** 11) {
    // GNU base-256 size for blobs of 8 GiB and more.
    buf[124] = 0x80;
    let value = size;
    for (let i = 135; i > 124; i--) {
      buf[i] = value % 256;
      value = Math.floor(value / 256);
    }
  } else {
    octal(124, 12, size);
  }
  octal(136, 12, 0);
  buf.write('0', 156, 1, 'latin1');
  buf.write('ustar\x0000', 257, 8, 'latin1');
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of buf) sum += byte;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return buf;
}

function writeError(where: string, err: unknown): EsgzError {
  if (err instanceof EsgzError) return err;
  return new EsgzError('BAD_ARCHIVE', `${where}: writing failed: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

/**
 * The blob half of an archive sink: subclasses add `commit`, which names the images and calls
 * `finish`. Blobs are digest-checked as they are written; a digest written once is not written again.
 */
export class ArchiveWriter implements Omit<ImageSink, 'commit'> {
  private readonly tempPath: string;
  private out: WriteStream | undefined;
  private queue: Promise<void> = Promise.resolve();
  /** digest -> size of the blobs written: a descriptor naming a written digest with another size is not "already there". */
  private readonly written = new Map<string, number>();
  private failed = false;
  /** The first write error, rethrown to later writers so every layer reports the cause. */
  private firstFailure: unknown;

  constructor(
    private readonly file: string,
    readonly description: string,
  ) {
    this.tempPath = `${file}.tmp-${randomBytes(6).toString('hex')}`;
  }

  /** Opens the temp file on first use, so a missing directory or permission error is named. */
  private async stream(): Promise<WriteStream> {
    if (!this.out) {
      let handle: FileHandle;
      try {
        handle = await open(this.tempPath, 'wx');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const why = code === 'ENOENT' ? 'its directory does not exist' : (code ?? (err as Error).message);
        throw new EsgzError(
          code === 'ENOENT' ? 'NOT_FOUND' : 'BAD_ARCHIVE',
          `${this.description}: cannot create ${this.file}: ${why}`,
          { cause: err },
        );
      }
      this.out = handle.createWriteStream();
      this.out.on('error', (err) => {
        this.failed = true;
        this.firstFailure ??= writeError(this.description, err);
      });
    }
    return this.out;
  }

  private async write(chunk: Buffer): Promise<void> {
    const out = await this.stream();
    if (out.errored) throw writeError(this.description, out.errored);
    if (!out.write(chunk)) {
      // events.once rejects on 'error', so a failing disk cannot leave this waiting forever.
      await once(out, 'drain').catch((err: unknown) => {
        throw writeError(this.description, err);
      });
    }
  }

  /** Serialises tar writes: each call runs after the previous one finished. */
  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(() => {
      if (this.failed) {
        throw this.firstFailure instanceof EsgzError
          ? this.firstFailure
          : new EsgzError('BAD_ARCHIVE', `${this.description}: an earlier write failed`);
      }
      return task();
    });
    this.queue = run.catch((err: unknown) => {
      this.failed = true;
      this.firstFailure ??= err;
    });
    return run;
  }

  private async writeEntry(name: string, size: number, body: AsyncIterable<Buffer> | Buffer): Promise<void> {
    await this.write(fileHeader(name, size));
    if (Buffer.isBuffer(body)) {
      if (body.length > 0) await this.write(body);
    } else {
      for await (const chunk of body) await this.write(chunk);
    }
    const rest = size % BLOCK;
    if (rest !== 0) await this.write(Buffer.alloc(BLOCK - rest));
  }

  async hasBlob(desc: Descriptor): Promise<boolean> {
    return this.written.get(desc.digest) === desc.size;
  }

  putBlob(desc: Descriptor, openStream: () => Promise<Readable> | Readable): Promise<void> {
    const what = `${this.description} blob ${desc.digest}`;
    const { hex } = parseDigest(desc.digest, what);
    return this.enqueue(async () => {
      const size = this.written.get(desc.digest);
      if (size === desc.size) return;
      if (size !== undefined)
        throw new EsgzError('SIZE_MISMATCH', `${what}: written with ${size} bytes, but a descriptor says ${desc.size}`);
      await this.stream();
      const source = await openStream();
      const verified = source.pipe(new DigestVerifier(desc, what));
      source.on('error', (err) => verified.destroy(err));
      // The iteration below reports errors; this listener only keeps an error that arrives before
      // it starts (while the header is written) from being an unhandled 'error' event.
      verified.on('error', () => undefined);
      await this.writeEntry(`blobs/sha256/${hex}`, desc.size, verified as AsyncIterable<Buffer>);
      this.written.set(desc.digest, desc.size);
    });
  }

  async putManifest(manifest: RawManifest): Promise<void> {
    await this.putBlob({ mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length }, () =>
      Readable.from([manifest.bytes]),
    );
  }

  /**
   * Writes the closing files (index.json, manifest.json, oci-layout) and the end of the tar, then
   * renames the archive into place: before this the destination name holds nothing new.
   */
  async finish(files: ReadonlyArray<readonly [string, Buffer]>): Promise<void> {
    await this.enqueue(async () => {
      for (const [name, bytes] of files) await this.writeEntry(name, bytes.length, bytes);
      await this.write(Buffer.alloc(BLOCK * 2));
      const out = await this.stream();
      out.end();
      await once(out, 'close');
    });
    if (this.failed) throw new EsgzError('BAD_ARCHIVE', `${this.description}: writing ${this.tempPath} failed`);
    try {
      await rename(this.tempPath, this.file);
    } catch (err) {
      throw new EsgzError(
        'BAD_ARCHIVE',
        `${this.description}: cannot write ${this.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { cause: err },
      );
    }
  }

  async abort(): Promise<void> {
    this.failed = true;
    if (this.out && !this.out.closed) {
      this.out.destroy();
      await once(this.out, 'close').catch(() => undefined);
    }
    await rm(this.tempPath, { force: true });
  }
}
