/**
 * Opens a layer blob as its uncompressed tar stream, whatever it is stored as: the compression
 * is sniffed from the magic bytes (gzip 1f8b, zstd 28b52ffd, else plain tar), not trusted from
 * the media type. Decompression errors surface as one-line EsgzErrors naming `where`.
 */
import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { EsgzError } from '../errors.js';
import type { LayerCompression } from '../oci/media-types.js';

const GZIP_MAGIC = [0x1f, 0x8b];
const GUNZIP_CHUNK = 1 << 20;
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function sniffCompression(head: Uint8Array): LayerCompression {
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return 'gzip';
  if (head.length >= 4 && ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return 'none';
}

export interface Decompressed {
  stream: Readable;
  compression: LayerCompression;
}

/** External gzip decompressors (`--estargz-gzip-helper`), run as `CMD ARGS` with stdin → stdout. */
export const GZIP_HELPERS = ['pigz', 'igzip', 'unpigz', 'gzip'] as const;
export type GzipHelper = (typeof GZIP_HELPERS)[number];
const HELPER_COMMANDS: Record<GzipHelper, { args: string[]; debianPackage: string }> = {
  pigz: { args: ['-d', '-c'], debianPackage: 'pigz' },
  unpigz: { args: ['-c'], debianPackage: 'pigz' },
  igzip: { args: ['-d', '-c'], debianPackage: 'isal' },
  // ctr-remote's third choice; single-threaded, so mostly for scripts that name it.
  gzip: { args: ['-d', '-c'], debianPackage: 'gzip' },
};

export interface DecompressOptions {
  /** Decompress gzip with this external command instead of in-process (zstd and plain tar unchanged). */
  gzipHelper?: GzipHelper;
  /** Kills the helper process when it fires (a stopped or failed conversion). */
  signal?: AbortSignal;
}

/**
 * Checks a `--estargz-gzip-helper` value: one of GZIP_HELPERS (else BAD_FLAG) and installed
 * on PATH (else UNSUPPORTED), so a missing helper fails before anything is read or written.
 */
export async function resolveGzipHelper(value: string): Promise<GzipHelper> {
  const helper = GZIP_HELPERS.find((h) => h === value);
  if (!helper)
    throw new EsgzError('BAD_FLAG', `--estargz-gzip-helper "${value}": expected one of ${GZIP_HELPERS.join(', ')}`);
  if (!(await onPath(helper))) {
    throw new EsgzError(
      'UNSUPPORTED',
      `--estargz-gzip-helper ${helper}: ${helper} is not installed (apt-get install ${HELPER_COMMANDS[helper].debianPackage})`,
    );
  }
  return helper;
}

async function onPath(command: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, command);
    try {
      await access(candidate, fsConstants.X_OK);
      if ((await stat(candidate)).isFile()) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * Peeks at the first bytes of `input` and returns the decompressed stream. Errors of the
 * input or the decoder are re-emitted on the returned stream as EsgzError('BAD_LAYER').
 */
export async function openDecompressed(
  input: Readable,
  where = 'layer',
  options: DecompressOptions = {},
): Promise<Decompressed> {
  const head = await peek(input, 4);
  const compression = sniffCompression(head);
  // Put the peeked bytes back in front of the rest of the stream.
  const replay = new PassThrough({ highWaterMark: 1 << 20 });
  if (head.length > 0) replay.write(head);
  input.on('error', (err) => replay.destroy(wrap(err, where, 'reading')));
  input.pipe(replay);
  if (compression === 'none') return { stream: replay, compression };
  if (compression === 'gzip' && options.gzipHelper)
    return { stream: await decompressWithHelper(replay, options.gzipHelper, where, options.signal), compression };

  // 1 MiB per zlib call: fewer thread-pool round trips, each of which waits for a free core
  // while the compression workers run.
  // zstd-napi is loaded only for zstd layers (its native binding costs every start-up ~12 ms).
  if (compression === 'zstd') {
    const out = Readable.from(zstdFrames(replay, where), { objectMode: false, highWaterMark: 1 << 20 });
    replay.on('error', (err) => out.destroy(err instanceof EsgzError ? err : wrap(err, where, 'zstd')));
    return { stream: out, compression };
  }
  const decoder = zlib.createGunzip({ chunkSize: GUNZIP_CHUNK });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  replay.on('error', (err) => out.destroy(err instanceof EsgzError ? err : wrap(err, where, 'gzip')));
  decoder.on('error', (err) => out.destroy(wrap(err, where, 'gzip')));
  replay.pipe(decoder).pipe(out);
  return { stream: out, compression };
}

/** Output of one zstd decompression step: zstd's recommended streaming output size. */
const ZSTD_OUT_PIECE = 1 << 20;

/**
 * Decompresses a zstd stream one output piece at a time, only as fast as the consumer takes the
 * pieces. (zstd-napi's DecompressStream turns each input chunk into all of its output at once, so
 * a few kilobytes of a crafted frame became hundreds of megabytes in memory.)
 */
async function* zstdFrames(input: Readable, where: string): AsyncGenerator<Buffer> {
  const { DCtx } = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;
  const ctx = new DCtx();
  let frameOpen = false;
  for await (const chunk of input) {
    let pending = chunk as Buffer;
    // A full output buffer may mean zstd holds more: call again with no new input to flush it.
    let flushing = false;
    while (pending.length > 0 || flushing) {
      const out = Buffer.allocUnsafe(ZSTD_OUT_PIECE);
      let step: [number, number, number];
      try {
        step = ctx.decompressStream(out, pending);
      } catch (err) {
        throw wrap(err, where, 'zstd');
      }
      const [remaining, produced, consumed] = step;
      // (A call that moved nothing reports the next frame's header size, not an open frame.)
      if (consumed > 0 || produced > 0) frameOpen = remaining !== 0;
      pending = pending.subarray(consumed);
      flushing = produced === out.length;
      if (produced > 0) yield out.subarray(0, produced);
    }
  }
  if (frameOpen)
    throw new EsgzError(
      'BAD_LAYER',
      `${where}: corrupt zstd data: unexpected end of file (the stream ended in middle of a frame)`,
    );
}

/**
 * Pipes `input` through the helper command. The output ends only once the helper exited 0, so a
 * consumer never takes a truncated stream for a complete one; a non-zero exit becomes a
 * BAD_LAYER error naming `where`. The helper is killed when the output is destroyed early, the
 * input fails or `signal` fires.
 */
async function decompressWithHelper(
  input: Readable,
  helper: GzipHelper,
  where: string,
  signal: AbortSignal | undefined,
): Promise<Readable> {
  // Loaded on demand: only this option runs a child process here, and execa is slow to load.
  const { execa } = await import('execa');
  const { args } = HELPER_COMMANDS[helper];
  const commandLine = [helper, ...args].join(' ');
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  const child = execa(helper, args, {
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: { stdout: false },
    reject: false,
    stripFinalNewline: false,
  });
  let exited = false;
  let stdoutEnded = false;
  let failure: EsgzError | undefined;
  const kill = (): void => {
    if (!exited) child.kill('SIGKILL');
  };
  const fail = (err: EsgzError): void => {
    failure ??= err;
    kill();
    out.destroy(failure);
  };
  const onAbort = (): void => fail(new EsgzError('INTERRUPTED', 'interrupted'));
  if (signal?.aborted) queueMicrotask(onAbort);
  else signal?.addEventListener('abort', onAbort, { once: true });

  input.on('error', (err) => fail(err instanceof EsgzError ? err : wrap(err, where, 'gzip')));
  // EPIPE when the helper stops reading (it exits on bad data): its exit status says why.
  child.stdin.on('error', () => undefined);
  input.pipe(child.stdin);
  child.stdout.pipe(out, { end: false });
  let result: Awaited<typeof child> | undefined;
  // Ends or fails the output once the helper exited and its stdout is drained.
  const settle = (): void => {
    if (result === undefined || !stdoutEnded || failure || out.destroyed) return;
    if (result.exitCode === 0) {
      out.end();
    } else if (result.code === 'ENOENT') {
      fail(
        new EsgzError(
          'UNSUPPORTED',
          `--estargz-gzip-helper ${helper}: ${helper} is not installed (apt-get install ${HELPER_COMMANDS[helper].debianPackage})`,
        ),
      );
    } else {
      const status =
        result.exitCode !== undefined
          ? `exited with code ${result.exitCode}`
          : `was killed by ${result.signal ?? 'a signal'}`;
      const detail = result.stderr.trim().split('\n')[0]?.trim();
      fail(
        new EsgzError(
          'BAD_LAYER',
          `${where}: corrupt gzip data: ${commandLine} ${status}${detail ? ` (${detail})` : ''}`,
        ),
      );
    }
  };
  child.stdout.once('end', () => {
    stdoutEnded = true;
    settle();
  });
  void child.then((done) => {
    exited = true;
    result = done;
    signal?.removeEventListener('abort', onAbort);
    // A command that could not start never opens stdout: settle without waiting for its end.
    if (done.code === 'ENOENT') stdoutEnded = true;
    settle();
  });
  out.once('close', () => {
    signal?.removeEventListener('abort', onAbort);
    input.unpipe(child.stdin);
    kill();
  });
  return out;
}

function wrap(err: unknown, where: string, what: string): EsgzError {
  if (err instanceof EsgzError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new EsgzError('BAD_LAYER', `${where}: corrupt ${what} data: ${message}`, { cause: err });
}

/** Reads up to `n` bytes from the start of a paused stream and returns them (stream stays usable). */
function peek(input: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = () => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      input.off('error', onError);
    };
    const finish = () => {
      cleanup();
      // Usually one chunk (a whole read of the source): handed back as it is, not copied.
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while (total < n && (chunk = input.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        total += chunk.length;
      }
      if (total >= n) finish();
    };
    const onEnd = () => finish();
    const onError = (err: Error) => {
      cleanup();
      reject(wrap(err, 'layer', 'stream'));
    };
    input.on('readable', onReadable);
    input.on('end', onEnd);
    input.on('error', onError);
    onReadable();
  });
}

/** Convenience for tests and tools: a Readable from a buffer. */
export function readableOf(data: Buffer): Readable {
  return Readable.from([data]);
}

/** nerdctl's default level for `image convert --zstd` (zstd's own default). */
export const DEFAULT_PLAIN_ZSTD_LEVEL = 3;
/** Output of one zstd compression step: zstd's recommended streaming output size. */
const ZSTD_COMPRESS_OUT = 128 * 1024 + 512;

/**
 * A one-frame zstd compressor fed a stream piece by piece (`image convert --zstd`): the same
 * input and level give the same bytes on any machine (single-threaded, no content-dependent
 * options), so conversions stay reproducible.
 */
export class ZstdStreamCompressor {
  private readonly ctx: ZstdBinding.CCtx;
  private readonly binding: typeof ZstdBinding;

  constructor(level: number) {
    this.binding = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof ZstdBinding;
    this.ctx = new this.binding.CCtx();
    this.ctx.setParameter(this.binding.CParameter.compressionLevel, level);
    this.ctx.setParameter(this.binding.CParameter.checksumFlag, 1);
  }

  /** Compresses `input` (all of it), returning what zstd produced so far. */
  update(input: Buffer): Buffer[] {
    return this.step(input, this.binding.EndDirective.continue);
  }

  /** Ends the frame. */
  finish(): Buffer[] {
    return this.step(Buffer.alloc(0), this.binding.EndDirective.end);
  }

  private step(input: Buffer, directive: ZstdBinding.EndDirective): Buffer[] {
    const out: Buffer[] = [];
    let rest = input;
    for (;;) {
      const buffer = Buffer.allocUnsafe(ZSTD_COMPRESS_OUT);
      const [remaining, produced, consumed] = this.ctx.compressStream2(buffer, rest, directive);
      if (produced > 0) out.push(buffer.subarray(0, produced));
      rest = rest.subarray(consumed);
      // continue: done once the input is taken; end: once zstd says nothing is left to flush.
      if (directive === this.binding.EndDirective.continue ? rest.length === 0 : remaining === 0) return out;
    }
  }
}
