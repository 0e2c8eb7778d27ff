/**
 * Layer-level checks behind `esgz get-toc-digest` and `esgz image verify`: find an image's
 * layers (platform-resolved), read a layer's TOC by range reads, and fully verify an eStargz layer
 * (TOC digest vs annotation, every chunk digest, diffID vs config, landmark).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError } from '../errors.js';
import { openDecompressed } from '../image/compression.js';
import { isAttestationManifest, isIndexMediaType } from '../oci/media-types.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform, RawManifest } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';
import { MAX_TOC_SIZE, TOC_DIGEST_ANNOTATION, TOC_LAYER_DIGEST_ANNOTATION, TOC_TAR_SLACK, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/constants.js';
import { EstargzReader, openFileBlobReader } from '../estargz/reader.js';
import { sourceBlobReader } from './source-reader.js';

export interface ResolvedImage {
  platform?: string;
  manifest: ImageManifest;
  manifestDigest: string;
  config: ImageConfig;
}

function parse<T>(raw: RawManifest | Buffer, what: string): T {
  const bytes = Buffer.isBuffer(raw) ? raw : raw.bytes;
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${what} is not valid JSON`, { cause: err });
  }
}

async function readAll(source: ImageSource, desc: Descriptor): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of await source.openBlob(desc)) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** The platform manifests of an image: one (this machine's or `platform`) or all of an index. */
export async function resolveImages(source: ImageSource, options: { platform?: Platform; allPlatforms?: boolean } = {}): Promise<ResolvedImage[]> {
  const root = await source.fetchRoot();
  const manifests: Array<{ raw: RawManifest; platform?: string }> = [];
  if (isIndexMediaType(root.mediaType) || (parse<{ manifests?: unknown }>(root, 'root manifest').manifests !== undefined)) {
    const index = parse<ImageIndex>(root, `${source.description} index`);
    const wanted = options.platform ?? hostPlatform();
    const picked = options.allPlatforms
      ? index.manifests.filter((m) => !isAttestationManifest(m))
      : index.manifests.filter((m) => m.platform !== undefined && platformMatches(wanted, m.platform)).slice(0, 1);
    if (picked.length === 0) throw new EsgzError('NOT_FOUND', `${source.description}: no manifest for platform ${formatPlatform(wanted)}`);
    for (const desc of picked) manifests.push({ raw: await source.fetchManifest(desc), platform: desc.platform && formatPlatform(desc.platform) });
  } else {
    manifests.push({ raw: root });
  }
  const out: ResolvedImage[] = [];
  for (const { raw, platform } of manifests) {
    const manifest = parse<ImageManifest>(raw, `${source.description} manifest ${raw.digest}`);
    if (!manifest.config || !Array.isArray(manifest.layers)) throw new EsgzError('BAD_MANIFEST', `${source.description} manifest ${raw.digest} has no config or layers`);
    const config = parse<ImageConfig>(await readAll(source, manifest.config), `${source.description} config ${manifest.config.digest}`);
    out.push({ platform, manifest, manifestDigest: raw.digest, config });
  }
  return out;
}

/** Fetches an external TOC blob for `layerDigest` from the TOC image (`IMAGE-esgztoc`). */
export async function fetchExternalTOC(tocImage: ImageSource, layerDigest: string): Promise<Buffer> {
  const [image] = await resolveImages(tocImage);
  const desc = image?.manifest.layers.find((l) => l.annotations?.[TOC_LAYER_DIGEST_ANNOTATION] === layerDigest);
  if (!desc) throw new EsgzError('NOT_FOUND', `${tocImage.description}: no TOC for layer ${layerDigest}`);
  if (desc.size > MAX_TOC_SIZE + TOC_TAR_SLACK) {
    throw new EsgzError('BAD_FORMAT', `${tocImage.description}: TOC blob for layer ${layerDigest} is ${desc.size} bytes, larger than esgz reads (${MAX_TOC_SIZE >> 20} MiB)`);
  }
  return readAll(tocImage, desc);
}

/** Opens a layer's TOC by range reads (registry Range requests), checking the annotation when present. */
export async function readLayerTOC(source: ImageSource, layer: Descriptor, externalTOC?: () => Promise<Buffer>): Promise<EstargzReader> {
  return EstargzReader.open(sourceBlobReader(source, layer), {
    where: `layer ${layer.digest}`,
    expectedTOCDigest: layer.annotations?.[TOC_DIGEST_ANNOTATION],
    externalTOC,
  });
}

export type CheckStatus = 'ok' | 'failed' | 'skipped';

export interface LayerVerification {
  index: number;
  digest: string;
  mediaType: string;
  size: number;
  status: CheckStatus;
  format?: string;
  tocDigest?: string;
  chunks?: number;
  files?: number;
  landmark?: string;
  diffID?: string;
  /** One line per failed check. */
  problems: string[];
  /** Things worth knowing that do not fail verification. */
  notes: string[];
}

/**
 * Verifies one layer: streams the blob once (digest-checked by the source) into a temp file while
 * computing the diffID of its decompressed bytes, then checks the TOC and every chunk locally.
 */
export async function verifyLayer(
  source: ImageSource,
  layer: Descriptor,
  index: number,
  expectedDiffID: string | undefined,
  options: { tmpDir?: string; externalTOC?: () => Promise<Buffer> } = {},
): Promise<LayerVerification> {
  const tmpDir = options.tmpDir;
  const result: LayerVerification = { index, digest: layer.digest, mediaType: layer.mediaType, size: layer.size, status: 'ok', problems: [], notes: [] };
  const annotated = layer.annotations?.[TOC_DIGEST_ANNOTATION];
  const dir = await makeTempDir('verify', tmpDir);
  try {
    const path = join(dir, 'blob');
    const blob = await source.openBlob(layer);
    const toFile = new PassThrough();
    const toHash = new PassThrough();
    // Tee with backpressure: pause the source until both branches drained.
    blob.on('data', (chunk: Buffer) => {
      const waits = [toFile, toHash].filter((branch) => !branch.write(chunk));
      if (waits.length === 0) return;
      blob.pause();
      let left = waits.length;
      for (const branch of waits) branch.once('drain', () => --left === 0 && blob.resume());
    });
    blob.on('end', () => {
      toFile.end();
      toHash.end();
    });
    blob.on('error', (err) => {
      toFile.destroy(err);
      toHash.destroy(err);
    });
    const file = createWriteStream(path);
    const fileDone = new Promise<void>((resolve, reject) => {
      file.on('finish', resolve);
      file.on('error', reject);
      toFile.on('error', reject);
    });
    toFile.pipe(file);
    const hashDone = (async () => {
      const { stream } = await openDecompressed(toHash, `layer ${layer.digest}`);
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of stream) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
      return { diffID: `sha256:${hash.digest('hex')}`, size };
    })();
    const [, uncompressed] = await Promise.all([fileDone, hashDone]);
    result.diffID = uncompressed.diffID;
    if (expectedDiffID !== undefined && expectedDiffID !== uncompressed.diffID) {
      result.problems.push(`diffID ${uncompressed.diffID} does not match the config (${expectedDiffID})`);
    }
    const sizeAnnotation = layer.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION];
    if (sizeAnnotation !== undefined && Number(sizeAnnotation) !== uncompressed.size) {
      result.problems.push(`uncompressed size ${uncompressed.size} does not match the annotation (${sizeAnnotation})`);
    }

    const reader = await openFileBlobReader(path);
    try {
      let esgz: EstargzReader;
      try {
        esgz = await EstargzReader.open(reader, { where: `layer ${layer.digest}`, expectedTOCDigest: annotated, externalTOC: options.externalTOC });
      } catch (err) {
        if (!annotated && err instanceof EsgzError && err.code === 'BAD_FORMAT' && /no eStargz or zstd:chunked footer/.test(err.message)) {
          result.status = result.problems.length > 0 ? 'failed' : 'skipped';
          result.format = 'not eStargz';
          return result;
        }
        result.problems.push(err instanceof Error ? err.message : String(err));
        result.status = 'failed';
        return result;
      }
      result.format = esgz.footer.kind;
      result.tocDigest = esgz.tocDigest;
      if (!annotated) result.problems.push(`no ${TOC_DIGEST_ANNOTATION} annotation (content cannot be verified by a lazy puller)`);
      const landmark = esgz.landmark();
      result.landmark = landmark.kind;
      // Lossless (--estargz-keep-diff-id) layers have none, and lazy pullers then skip prefetch.
      if (landmark.kind === 'none') result.notes.push('no landmark entry (.prefetch.landmark / .no.prefetch.landmark): no prefetch');
      try {
        const counts = await esgz.verifyAll();
        result.chunks = counts.chunks;
        result.files = counts.files;
      } catch (err) {
        result.problems.push(err instanceof Error ? err.message : String(err));
      }
    } finally {
      await reader.close();
    }
    if (result.problems.length > 0) result.status = 'failed';
    return result;
  } catch (err) {
    result.status = 'failed';
    result.problems.push(err instanceof Error ? err.message : String(err));
    return result;
  } finally {
    await removeTempDir(dir);
  }
}
