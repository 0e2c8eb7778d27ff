import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import type { Descriptor, RawManifest } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';

/**
 * An ImageSource that keeps a local copy of the layer blobs it streams, so the optimizer reads
 * each layer from the registry once: the first read (unpacking for the workload) fills the
 * cache, a second one (the conversion of a layer it cannot convert from the tar the profile
 * kept) reads the file. The source verifies the digest while the first
 * read streams; a copy is kept only when that stream ended without error, under a temporary name
 * renamed at the end.
 */
export class CachingSource implements ImageSource {
  readonly description: string;
  /** One promise, so layers opened at once share one directory (two mkdtemps left one behind). */
  private dir: Promise<string> | undefined;
  private closed = false;
  private readonly cached = new Set<string>();

  constructor(
    private readonly source: ImageSource,
    private readonly options: { tempRoot?: string; digests: ReadonlySet<string> },
  ) {
    this.description = source.description;
  }

  fetchRoot(): Promise<RawManifest> {
    return this.source.fetchRoot();
  }

  fetchManifest(desc: Descriptor): Promise<RawManifest> {
    return this.source.fetchManifest(desc);
  }

  readBlobRange(desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    return this.source.readBlobRange(desc, offset, length);
  }

  async openBlob(desc: Descriptor): Promise<Readable> {
    if (!this.options.digests.has(desc.digest) || this.closed) return this.source.openBlob(desc);
    const dir = await this.cacheDir();
    const path = join(dir, desc.digest.replace(/[^a-z0-9]/gi, '_'));
    if (this.cached.has(desc.digest) && (await stat(path).catch(() => undefined))?.size === desc.size) {
      return createReadStream(path, { highWaterMark: 1 << 20 });
    }
    const upstream = await this.source.openBlob(desc);
    const temp = `${path}.part-${process.hrtime.bigint()}`;
    const file = createWriteStream(temp);
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    let failed = false;
    const discard = () => {
      failed = true;
      file.destroy();
      void rm(temp, { force: true });
    };
    upstream.on('error', (err) => {
      discard();
      out.destroy(err);
    });
    out.on('close', () => {
      // The consumer stopped early (or failed): the copy is incomplete.
      if (!upstream.readableEnded) {
        discard();
        upstream.destroy();
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!failed) file.write(chunk);
      if (!out.write(chunk)) {
        upstream.pause();
        out.once('drain', () => upstream.resume());
      }
    });
    upstream.on('end', () => {
      out.end();
      if (failed) return;
      file.end(() => {
        rename(temp, path).then(
          () => this.cached.add(desc.digest),
          () => void rm(temp, { force: true }),
        );
      });
    });
    file.on('error', () => discard());
    return out;
  }

  /** Removes the cached copies; the wrapped source is closed by its owner. */
  async close(): Promise<void> {
    this.closed = true;
    const dir = await this.dir?.catch(() => undefined);
    if (dir !== undefined) await removeTempDir(dir);
    this.dir = undefined;
    this.cached.clear();
  }

  private cacheDir(): Promise<string> {
    this.dir ??= makeTempDir('blobs', this.options.tempRoot);
    return this.dir;
  }
}
