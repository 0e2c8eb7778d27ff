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
  const result = await profileWorkload({ ...options, layers, config });
  return { ...result, manifestDigest: manifest.digest, layers: parsed.layers, record: recordEntriesOf(result, manifest.digest) };
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
