import { constants } from 'node:fs';
import { access, statfs } from 'node:fs/promises';
import { freemem } from 'node:os';
import type { Readable } from 'node:stream';
import { EsgzError } from '../errors.js';
import { openDecompressed } from '../image/compression.js';
import type { Descriptor, ImageConfig, ImageManifest, ImageSource, RawManifest } from '../image/types.js';
import { profileWorkload, recordEntriesOf, type ProfileResult, type ProfileWorkloadOptions } from './optimize.js';
import type { LayerTar } from './overlay.js';
import type { RecordEntry } from './record.js';

/** Config blobs are small JSON documents; anything bigger is not a config. */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

export interface ImageProfile extends ProfileResult {
  manifestDigest: string;
  /** Layer descriptors of the profiled manifest, base first. */
  layers: Descriptor[];
  /** The trace in ctr-remote's record format. */
  record: RecordEntry[];
}

/**
 * Profiles one platform manifest of `source`: reads its config, streams each layer blob
 * (decompressed, whatever its compression) into the unpacker and runs the workload.
 */
export async function profileImage(
  source: ImageSource,
  manifest: RawManifest,
  options: Omit<ProfileWorkloadOptions, 'layers' | 'config'>,
): Promise<ImageProfile> {
  const parsed = parseManifest(manifest, source.description);
  const config = await readConfig(source, parsed.config);
  const layers: LayerTar[] = parsed.layers.map((desc, index) => {
    const name = `layer ${index} (${desc.digest.replace(/^sha256:/, '').slice(0, 12)})`;
    return { name, open: async (): Promise<Readable> => (await openDecompressed(await source.openBlob(desc), name)).stream };
  });
  const tempRoot = options.tempRoot ?? (await memoryBackedTempRoot(parsed.layers.reduce((sum, l) => sum + l.size, 0)));
  const result = await profileWorkload({ ...options, layers, config, ...(tempRoot ? { tempRoot } : {}) });
  return { ...result, manifestDigest: manifest.digest, layers: parsed.layers, record: recordEntriesOf(result, manifest.digest) };
}

/**
 * The unpacked image is thrown away after the run, so when this machine has memory to spare it
 * goes to a tmpfs: on a busy disk that made the Debian profile 3x faster. Only when /dev/shm has
 * room for 5x the compressed layers and there is twice that in available memory; ESGZ_TMPFS=0
 * turns it off, and an explicit temp dir always wins.
 */
export async function memoryBackedTempRoot(compressedBytes: number, candidate = '/dev/shm'): Promise<string | undefined> {
  if (process.env.ESGZ_TMPFS === '0' || process.env.TMPDIR) return undefined;
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

function parseManifest(manifest: RawManifest, where: string): ImageManifest {
  let parsed: ImageManifest;
  try {
    parsed = JSON.parse(manifest.bytes.toString('utf8')) as ImageManifest;
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${where}: manifest ${manifest.digest} is not JSON`, { cause: err });
  }
  if (!parsed.config?.digest || !Array.isArray(parsed.layers)) {
    throw new EsgzError('BAD_MANIFEST', `${where}: manifest ${manifest.digest} is not an image manifest (no config or layers)`);
  }
  return parsed;
}

/** Reads and parses the image config blob (digest-verified by the source). */
export async function readConfig(source: ImageSource, desc: Descriptor): Promise<ImageConfig> {
  if (desc.size > MAX_CONFIG_BYTES) {
    throw new EsgzError('BAD_MANIFEST', `${source.description}: config ${desc.digest} is ${desc.size} bytes, too big for an image config`);
  }
  const stream = await source.openBlob(desc);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as ImageConfig;
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${source.description}: config ${desc.digest} is not JSON`, { cause: err });
  }
}
