// podman (Debian 12: podman 4.3.1 on containers/storage 1.43) pulls an esgz zstd:chunked image
// from the test registry with partial images enabled, and runs it. Gated on podman being
// installed and on running as root (overlay graph driver in a private graph root).
//
// The image is assembled here (blobs, config, manifest with the layer annotations) and pushed
// with skopeo --preserve-digests, so podman sees exactly the bytes and annotations esgz wrote.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../../../src/estargz/constants.js';
import { openEstargzFile } from '../../../src/estargz/reader.js';
import {
  MANIFEST_CHECKSUM_ANNOTATION,
  MANIFEST_POSITION_ANNOTATION,
  parseManifestPosition,
} from '../../../src/estargz/zstdchunked/codec.js';
import { createLayerTransform } from '../../../src/convert/transform.js';
import { transferImage } from '../../../src/image/pipeline.js';
import { openSink, openSource } from '../../../src/image/transports/index.js';
import { busyboxRootfs, writeOciImage } from '../../fixtures/oci-image.js';
import { layoutBlobPath, readOciLayout } from '../../fixtures/oci-layout.js';
import { buildTar, dir, file, generatedBuffer, hardlink, symlink, type TarEntry } from '../../fixtures/tar.js';
import { registryAddress } from '../../harness/registry.js';
import { convertZstd, sha256 } from './helpers.js';
import { podmanAvailable, startPodman, type PodmanEnv } from './podman-env.js';

const BIG = generatedBuffer(5 * 1024 * 1024 + 123, 'podman-big');
const layers: TarEntry[][] = [
  busyboxRootfs(),
  [
    dir('data'),
    file('data/big', BIG),
    file('data/note', 'zstd:chunked via esgz\n'),
    hardlink('data/note-link', 'data/note'),
    symlink('data/big-link', 'big'),
    file('data/empty', ''),
  ],
];

interface Pushed {
  reference: string;
  layerDigests: string[];
}

/** Converts the layers, writes an OCI layout and pushes it to the test registry. */
async function pushZstdChunkedImage(work: string, registry: string): Promise<Pushed> {
  const layout = path.join(work, 'layout');
  const prepared = [];
  for (const entries of layers) {
    const { blob, result } = await convertZstd(await buildTar(entries));
    prepared.push({
      blob,
      mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd',
      diffID: result.diffID,
      annotations: {
        ...result.codecAnnotations,
        [TOC_DIGEST_ANNOTATION]: result.tocDigest,
        [UNCOMPRESSED_SIZE_ANNOTATION]: String(result.uncompressedSize),
      },
    });
  }
  const image = await writeOciImage(layout, {
    tag: 'zstd',
    layers: prepared,
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
  });
  const reference = `${registry}/esgz-test/zstdchunked-podman:${Date.now()}`;
  await execa('skopeo', [
    'copy',
    '--quiet',
    '--preserve-digests',
    '--dest-tls-verify=false',
    `oci:${layout}:zstd`,
    `docker://${reference}`,
  ]);
  return { reference, layerDigests: image.manifests[0]!.layers.map((l) => l.digest) };
}

/** The container command and what it must print, for the image built from `layers`. */
const CHECK_COMMAND =
  'cat /etc/hello /data/note /data/note-link; busybox sha256sum /data/big /data/big-link; busybox wc -c /data/empty';
function checkOutput(out: string): void {
  const expectedBig = sha256(BIG).slice(7);
  expect(out).toContain('hello from an esgz fixture');
  expect(out.match(/zstd:chunked via esgz/g)).toHaveLength(2);
  expect(out).toContain(`${expectedBig}  /data/big\n${expectedBig}  /data/big-link`);
  expect(out).toMatch(/^0 \/data\/empty$/m);
}

describe.skipIf(!podmanAvailable)('podman pulls and runs an esgz zstd:chunked image', () => {
  let work: string;
  let env: PodmanEnv;
  const podman = (args: string[]) => env.podman(args);
  const pullPartially = (reference: string, digests: string[], logName: string) =>
    env.pullPartially(reference, digests, logName);
  const runCheck = (reference: string) => env.runIn(reference, CHECK_COMMAND);

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'esgz-podman-'));
    env = await startPodman(work);
  });

  afterAll(async () => {
    await env?.close();
  });

  it('takes the zstd:chunked partial-pull path for every layer, then runs the image', async () => {
    const pushed = await pushZstdChunkedImage(work, registryAddress());
    await pullPartially(pushed.reference, pushed.layerDigests, 'pull.log');
    checkOutput(await runCheck(pushed.reference));
  });

  it('the same for an image converted by the esgz pipeline (gzip Docker image in oci: → --zstdchunked --oci → registry)', async () => {
    const layoutDir = path.join(work, 'pipeline-src');
    await writeOciImage(layoutDir, { tag: 'src', mediaTypes: 'docker', layers });
    const reference = `${registryAddress()}/esgz-test/zstdchunked-pipeline:${Date.now()}`;
    const transform = createLayerTransform('zstdchunked', { oci: true });
    const source = await openSource(`oci:${layoutDir}:src`);
    try {
      await transferImage({ source, sink: await openSink(reference, { plainHttp: true }), transform, oci: true });
    } finally {
      await transform.close?.();
      await source.close();
    }
    const { stdout } = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reference}`]);
    const manifest = JSON.parse(stdout) as {
      mediaType: string;
      layers: Array<{ digest: string; mediaType: string; annotations?: Record<string, string> }>;
    };
    expect(manifest.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    for (const layer of manifest.layers) {
      expect(layer.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
      expect(layer.annotations?.[MANIFEST_CHECKSUM_ANNOTATION]).toMatch(/^sha256:/);
    }
    // Same layer tars, same codec: the pipeline's blobs are byte-identical to the hand-assembled image's.
    const handBuilt = await pushZstdChunkedImage(work, registryAddress());
    expect(manifest.layers.map((l) => l.digest)).toEqual(handBuilt.layerDigests);
    // Start from empty storage so podman cannot reuse layers an earlier test pulled.
    await podman(['rmi', '--all', '--force']);
    await pullPartially(
      reference,
      manifest.layers.map((l) => l.digest),
      'pull-pipeline.log',
    );
    checkOutput(await runCheck(reference));
  });

  it('the pushed layers carry the annotations containers/storage 1.43 keys its zstd:chunked path on', async () => {
    const pushed = await pushZstdChunkedImage(work, registryAddress());
    const { stdout } = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${pushed.reference}`,
    ]);
    const manifest = JSON.parse(stdout) as { layers: Array<{ digest: string; annotations?: Record<string, string> }> };
    expect(manifest.layers.map((l) => l.digest)).toEqual(pushed.layerDigests);
    for (const layer of manifest.layers) {
      expect(layer.annotations?.[MANIFEST_CHECKSUM_ANNOTATION]).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(layer.annotations?.[TOC_DIGEST_ANNOTATION]).toMatch(/^sha256:[0-9a-f]{64}$/);
    }
  });

  it("esgz's reader reads the zstd:chunked layers podman's own writer produces", async () => {
    // An imported tar has no compressed form yet, so the push compresses it with containers/storage's writer.
    const tarPath = path.join(work, 'data-layer.tar');
    await writeFile(tarPath, await buildTar(layers[1]!));
    const reference = `${registryAddress()}/esgz-test/podman-written:${Date.now()}`;
    await env.pushZstdChunked(tarPath, reference);
    const layout = path.join(work, 'podman-written');
    await execa('skopeo', [
      'copy',
      '--quiet',
      '--preserve-digests',
      '--src-tls-verify=false',
      `docker://${reference}`,
      `oci:${layout}:x`,
    ]);
    const [{ layers: manifestLayers }] = readOciLayout(layout).manifests;
    expect(manifestLayers).toHaveLength(1);
    const dataLayer = manifestLayers[0]!;
    expect(dataLayer.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
    const reader = await openEstargzFile(layoutBlobPath(layout, dataLayer.digest));
    try {
      expect(reader.codec.name).toBe('zstd');
      const position = parseManifestPosition(dataLayer.annotations![MANIFEST_POSITION_ANNOTATION]!);
      expect(reader.footer.tocOffset).toBe(position.offset - 8);
      expect(reader.tocJSON.length).toBe(position.uncompressedSize);
      expect((await reader.readFile('data/big')).equals(BIG)).toBe(true);
      expect((await reader.readFile('data/note')).toString()).toBe('zstd:chunked via esgz\n');
      await reader.verifyAll();
    } finally {
      await reader.blob.close?.();
    }
  });
});
