// Small builders for registry tests: random blobs and a minimal image whose digests are computed here.
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { MediaType } from '../../src/oci/media-types.js';
import type { Descriptor, RawManifest } from '../../src/oci/types.js';

export interface TestBlob {
  bytes: Buffer;
  desc: Descriptor;
}

export function randomBlob(size: number, mediaType: string = MediaType.ociLayerGzip): TestBlob {
  const bytes = randomBytes(size);
  return { bytes, desc: { mediaType, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size } };
}

export function blobOf(bytes: Buffer, mediaType: string): TestBlob {
  return {
    bytes,
    desc: { mediaType, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size: bytes.length },
  };
}

/** Streams `bytes` in small pieces, so consumers see many chunks like from a socket. */
export function streamOf(bytes: Buffer, pieceSize = 7_919): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= bytes.length) {
        this.push(null);
        return;
      }
      this.push(bytes.subarray(offset, offset + pieceSize));
      offset += pieceSize;
    },
  });
}

export function rawManifest(value: object, mediaType: string): RawManifest {
  const bytes = Buffer.from(JSON.stringify(value));
  return { bytes, mediaType, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
}

/**
 * An image with one layer of random bytes, gzip-compressed (so tools like skopeo leave it as is;
 * the layer is at least `layerSize` bytes): the blobs to push and the manifest naming them.
 */
export function tinyImage(layerSize = 50_000): { config: TestBlob; layer: TestBlob; manifest: RawManifest } {
  const content = randomBytes(layerSize);
  const layer = blobOf(gzipSync(content), MediaType.ociLayerGzip);
  const diffId = `sha256:${createHash('sha256').update(content).digest('hex')}`;
  const config = blobOf(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [diffId] } })),
    MediaType.ociConfig,
  );
  const manifest = rawManifest(
    { schemaVersion: 2, mediaType: MediaType.ociManifest, config: config.desc, layers: [layer.desc] },
    MediaType.ociManifest,
  );
  return { config, layer, manifest };
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The EsgzError (or other error) a promise rejects with; fails the test when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection, but the promise resolved');
}

let counter = 0;
/** A repository name unique to this test run. */
export function uniqueRepo(prefix: string): string {
  counter += 1;
  return `esgz-test/${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}
