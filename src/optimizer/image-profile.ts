import { constants, createWriteStream } from 'node:fs';
import { access, statfs } from 'node:fs/promises';
import { freemem } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { shortDigest } from '../oci/digest.js';
import { sweepStaleTempDirs } from '../tmp.js';
import { openDecompressed } from '../image/compression.js';
import { resolveManifest } from '../image/resolve.js';
import type { Descriptor, RawManifest } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';
import { profileWorkload, recordEntriesOf, type ProfileResult, type ProfileWorkloadOptions } from './optimize.js';
import type { LayerTar } from '../rootfs/overlay.js';
import type { RecordEntry } from './record.js';

/** Where the unpacked image goes when memory allows (see memoryBackedTempRoot). */
const DEFAULT_TMPFS = '/dev/shm';

export interface ImageProfile extends ProfileResult {
  manifestDigest: string;
  /** Layer descriptors of the profiled manifest, base first. */
  layers: Descriptor[];
  /** The trace in ctr-remote's record format. */
  record: RecordEntry[];
  /**
   * With `keepTarsIn`: each layer's uncompressed tar as unpacked (undefined where the unpack did
   * not read it to the end), so the conversion need not read and decompress it again.
   */
  tarFiles: Array<string | undefined>;
}

/**
 * Passes `stream` through while copying it into `path`. `complete` resolves true once the stream
 * ended and the file is written, false when the stream failed or was not read to its end (the
 * file is then partial and must not be used).
 */
function teeToFile(stream: Readable, path: string): { stream: Readable; complete: Promise<boolean> } {
  const file = createWriteStream(path, { highWaterMark: 1 << 20 });
  let settle: (ok: boolean) => void = () => {};
  const complete = new Promise<boolean>((resolve) => {
    settle = resolve;
  });
  let fileError = false;
  file.on('error', () => {
    fileError = true;
    settle(false);
  });
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (fileError || file.write(chunk)) callback(null, chunk);
      else file.once('drain', () => callback(null, chunk));
    },
    flush(callback) {
      file.end(() => settle(!fileError));
      callback();
    },
  });
  tee.on('close', () => {
    if (!tee.writableFinished) {
      file.destroy();
      settle(false);
    }
  });
  stream.on('error', (err) => tee.destroy(err));
  return { stream: stream.pipe(tee), complete };
}

/**
 * Profiles one platform manifest of `source`: reads its config, streams each layer blob
 * (decompressed, whatever its compression) into the unpacker and runs the workload.
 */
export async function profileImage(
  source: ImageSource,
  manifest: RawManifest,
  options: Omit<ProfileWorkloadOptions, 'layers' | 'config'> & {
    /** Keep each layer's uncompressed tar in this directory (see ImageProfile.tarFiles). */
    keepTarsIn?: string;
    /** With `keepTarsIn`: called as soon as a layer's tar is complete, before the workload ends. */
    onLayerTar?(layer: Descriptor, path: string): void;
    /** The memory-backed work dir setting (see memoryBackedTempRoot). */
    tmpfs?: string | false;
  },
): Promise<ImageProfile> {
  const { keepTarsIn, tmpfs, onLayerTar, ...workloadOptions } = options;
  const { manifest: parsed, config } = await resolveManifest(source, manifest);
  const tees: Array<ReturnType<typeof teeToFile> | undefined> = [];
  const blobs: Array<Readable | undefined> = [];
  const tarFiles = parsed.layers.map((_, index) =>
    keepTarsIn === undefined ? undefined : join(keepTarsIn, `layer-${index}.tar`),
  );
  const layers: LayerTar[] = parsed.layers.map((desc, index) => {
    const name = `layer ${index} (${shortDigest(desc.digest)})`;
    return {
      name,
      open: async (): Promise<Readable> => {
        // The source checks the blob digest as it is read, so the copy is of verified bytes.
        const blob = await source.openBlob(desc);
        blobs[index] = blob;
        const { stream } = await openDecompressed(blob, name);
        const path = tarFiles[index];
        if (path === undefined) return stream;
        const tee = teeToFile(stream, path);
        tees[index] = tee;
        if (onLayerTar) void tee.complete.then((complete) => complete && onLayerTar(desc, path));
        return tee.stream;
      },
    };
  });
  const compressedBytes = parsed.layers.reduce((sum, l) => sum + l.size, 0);
  const memoryBacked = () => memoryBackedTempRoot(compressedBytes, { tmpfs, runc: workloadOptions.runc });
  const tempRoot = workloadOptions.tempRoot ?? (await memoryBacked());
  const result = await profileWorkload({ ...workloadOptions, layers, config, ...(tempRoot ? { tempRoot } : {}) });
  // A tee read to its end has its file written (or failed) shortly; one the unpack left early is
  // dropped.
  const complete = await Promise.all(
    tarFiles.map((_, index) => {
      const tee = tees[index];
      // The blob itself must have ended too: only then did the source check its size and digest.
      if (tee?.stream.readableEnded && blobs[index]?.readableEnded) return tee.complete;
      tee?.stream.destroy();
      return false;
    }),
  );
  return {
    ...result,
    manifestDigest: manifest.digest,
    layers: parsed.layers,
    record: recordEntriesOf(result, manifest.digest),
    tarFiles: tarFiles.map((path, index) => (complete[index] ? path : undefined)),
  };
}

export interface MemoryBackedTempRootOptions {
  /** `false`: never use a tmpfs; a path: always use that directory (the CLI's ESGZ_TMPFS). */
  tmpfs?: string | false;
  /** The directory tried when `tmpfs` is unset (default /dev/shm). */
  candidate?: string;
  /** The runc binary, to delete a killed optimize's containers when sweeping the directory. */
  runc?: string;
}

/**
 * The unpacked image is thrown away after the run, so when this machine has memory to spare it
 * goes to a tmpfs: on a busy disk that made the Debian profile 3x faster. Only when /dev/shm has
 * room for 5x the compressed layers and there is twice that in available memory; `tmpfs: false`
 * turns it off, `tmpfs: '/path'` names the directory to use instead (always used), and an
 * explicit temp dir (the caller's tempRoot) always wins.
 */
export async function memoryBackedTempRoot(
  compressedBytes: number,
  options: MemoryBackedTempRootOptions = {},
): Promise<string | undefined> {
  const { tmpfs, candidate = DEFAULT_TMPFS, runc } = options;
  if (tmpfs === false) return undefined;
  if (tmpfs !== undefined && isAbsolute(tmpfs)) {
    await sweepStaleTempDirs(tmpfs, { runc });
    return tmpfs;
  }
  // What a killed optimize left in the tmpfs goes even when this run does not use it.
  await sweepStaleTempDirs(candidate, { runc });
  if (process.env.TMPDIR) return undefined;
  const estimate = Math.max(compressedBytes * 5, 64 << 20);
  try {
    const fs = await statfs(candidate);
    await access(candidate, constants.W_OK);
    if (fs.bavail * fs.bsize < estimate || freemem() < estimate * 2) return undefined;
    return candidate;
  } catch {
    return undefined;
  }
}
