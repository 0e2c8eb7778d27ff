/**
 * Layer-level checks behind `esgz get-toc-digest` and `esgz image verify` (which find an image's
 * layers with image/resolve.ts): read a layer's TOC by range reads, and fully verify an eStargz
 * layer (TOC digest vs annotation, every chunk digest, diffID vs config, landmark).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { makeTempDir, removeTempDir } from '../tmp.js';
import { EsgzError } from '../errors.js';
import { openDecompressed } from '../image/compression.js';
import type { Descriptor } from '../oci/types.js';
import type { ImageSource } from '../image/types.js';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../estargz/constants.js';
import { EstargzReader, openFileBlobReader } from '../estargz/reader.js';
import { announcesTOC, tocVerification, zstdChunkedDialect } from '../estargz/zstdchunked/dialect.js';
import { sourceBlobReader } from './source-reader.js';

/**
 * Opens a layer's TOC by range reads (registry Range requests), checking it against the
 * annotations when present: toc.digest and/or the zstd:chunked manifest checksum (either key family).
 */
export async function readLayerTOC(
  source: ImageSource,
  layer: Descriptor,
  externalTOC?: () => Promise<Buffer>,
): Promise<EstargzReader> {
  return EstargzReader.open(sourceBlobReader(source, layer), {
    where: `layer ${layer.digest}`,
    ...tocVerification(layer.annotations),
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
  /** Which writer's layout: 'estargz', or the zstd:chunked dialect ('stargz', 'containers', 'containers-legacy'). */
  dialect?: string;
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
  const result: LayerVerification = {
    index,
    digest: layer.digest,
    mediaType: layer.mediaType,
    size: layer.size,
    status: 'ok',
    problems: [],
    notes: [],
  };
  const annotated = announcesTOC(layer.annotations);
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
        esgz = await EstargzReader.open(reader, {
          where: `layer ${layer.digest}`,
          ...tocVerification(layer.annotations),
          externalTOC: options.externalTOC,
        });
      } catch (err) {
        if (
          !annotated &&
          err instanceof EsgzError &&
          err.code === 'BAD_FORMAT' &&
          /no eStargz or zstd:chunked footer/.test(err.message)
        ) {
          result.status = result.problems.length > 0 ? 'failed' : 'skipped';
          result.format = 'not eStargz';
          return result;
        }
        result.problems.push(err instanceof Error ? err.message : String(err));
        result.status = 'failed';
        return result;
      }
      result.format = esgz.footer.kind;
      result.dialect = esgz.codec.name === 'zstd' ? zstdChunkedDialect(layer.annotations, esgz.footer.kind) : 'estargz';
      result.tocDigest = esgz.tocDigest;
      if (!annotated)
        result.problems.push(
          `no ${TOC_DIGEST_ANNOTATION} or zstd:chunked manifest-checksum annotation (content cannot be verified by a lazy puller)`,
        );
      const landmark = esgz.landmark();
      result.landmark = landmark.kind;
      // Lossless (--estargz-keep-diff-id) layers have none, and lazy pullers then skip prefetch.
      if (landmark.kind === 'none')
        result.notes.push('no landmark entry (.prefetch.landmark / .no.prefetch.landmark): no prefetch');
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
