// External TOCs in one place: the TOC image's name, writing it, and reading a layer's TOC back,
// over a real OCI layout; and the typed signal the reader gives for a footer-only layer.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import {
  ExternalTOCImage,
  fetchExternalTOC,
  tocImageReference,
  writeExternalTOCImage,
} from '../../src/convert/external-toc.js';
import { MAX_TOC_SIZE, TOC_LAYER_DIGEST_ANNOTATION, TOC_TAR_SLACK } from '../../src/estargz/constants.js';
import { bufferBlobReader, EstargzReader, ExternalTOCRequiredError } from '../../src/estargz/reader.js';
import { openSink, openSource } from '../../src/image/transports/index.js';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { buildTar, file } from '../fixtures/tar.js';
import { toEstargz } from '../snapshotter/helpers.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-external-toc-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const layout = join(scratch, 'layout');
const layers: Array<{ blob: Buffer; digest: string; toc: Buffer }> = [];

beforeAll(async () => {
  for (const name of ['a', 'b']) {
    const { blob, result } = await toEstargz(await buildTar([file(name, `${name}\n`.repeat(1000))]), {
      externalTOC: true,
    });
    layers.push({ blob, digest: digestOf(blob), toc: result.externalTOC! });
  }
  await writeExternalTOCImage(
    await openSink(`oci:${layout}:v1-esgztoc`),
    new Map(layers.map((l) => [l.digest, l.toc])),
  );
});

describe('tocImageReference', () => {
  it('appends -esgztoc to the tag; refuses untagged destinations, digests and docker archives', () => {
    expect(tocImageReference('registry.test/app:v1')).toBe('registry.test/app:v1-esgztoc');
    expect(() => tocImageReference('registry.test:5000/app')).toThrow(/needs a tagged destination/);
    expect(tocImageReference('oci:/tmp/x:v1')).toBe('oci:/tmp/x:v1-esgztoc');
    expect(() => tocImageReference('oci:/tmp/x')).toThrow(expect.objectContaining({ code: 'BAD_FLAG' }));
    expect(() => tocImageReference(`registry.test/app@sha256:${'0'.repeat(64)}`)).toThrow(
      expect.objectContaining({ code: 'BAD_FLAG' }),
    );
    expect(() => tocImageReference('docker-archive:/tmp/a.tar')).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED' }),
    );
  });
});

describe('reading TOCs back from the TOC image', () => {
  it('gives each layer its TOC, and the reader accepts it for the footer-only blob', async () => {
    const source = await openSource(tocImageReference(`oci:${layout}:v1`));
    try {
      for (const layer of layers) {
        const toc = await fetchExternalTOC(source, layer.digest);
        expect(toc.equals(layer.toc)).toBe(true);
        const reader = await EstargzReader.open(bufferBlobReader(layer.blob), { externalTOC: toc });
        expect(reader.entries().map((e) => e.name)).toContain(layer === layers[0] ? 'a' : 'b');
      }
      await expect(fetchExternalTOC(source, `sha256:${'f'.repeat(64)}`)).rejects.toMatchObject({
        code: 'NOT_FOUND',
        message: expect.stringContaining('no TOC for layer'),
      });
    } finally {
      await source.close();
    }
  });

  it('opens the TOC image once for all layers, and closes it', async () => {
    let opened = 0;
    let closed = 0;
    const tocs = new ExternalTOCImage(async () => {
      opened++;
      const source = await openSource(`oci:${layout}:v1-esgztoc`);
      const close = source.close.bind(source);
      source.close = async () => {
        closed++;
        await close();
      };
      return source;
    });
    for (const layer of layers) expect((await tocs.tocFor(layer.digest)).equals(layer.toc)).toBe(true);
    await tocs.close();
    expect([opened, closed]).toEqual([1, 1]);
  });

  it('refuses a TOC blob larger than esgz reads, before reading it', async () => {
    const manifest = JSON.parse((await readFile(join(layout, 'index.json'), 'utf8')) as string) as {
      manifests: Array<{ digest: string }>;
    };
    const tocManifest = JSON.parse(
      (await readFile(join(layout, 'blobs', 'sha256', manifest.manifests[0]!.digest.slice(7)))).toString(),
    ) as {
      layers: Array<{ size: number; annotations: Record<string, string> }>;
    };
    tocManifest.layers[0]!.size = MAX_TOC_SIZE + TOC_TAR_SLACK + 1;
    const bytes = Buffer.from(JSON.stringify(tocManifest));
    const hex = createHash('sha256').update(bytes).digest('hex');
    await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
    const entry = {
      mediaType: MediaType.ociManifest,
      digest: `sha256:${hex}`,
      size: bytes.length,
      annotations: { 'org.opencontainers.image.ref.name': 'huge-esgztoc' },
    };
    await writeFile(
      join(layout, 'index.json'),
      JSON.stringify({ ...manifest, manifests: [...manifest.manifests, entry] }),
    );
    const source = await openSource(`oci:${layout}:huge-esgztoc`);
    try {
      await expect(
        fetchExternalTOC(source, tocManifest.layers[0]!.annotations[TOC_LAYER_DIGEST_ANNOTATION]!),
      ).rejects.toMatchObject({
        code: 'BAD_FORMAT',
        message: expect.stringContaining('larger than esgz reads'),
      });
    } finally {
      await source.close();
    }
  });
});

describe('a footer-only layer without its TOC', () => {
  it('is a typed ExternalTOCRequiredError (an UNSUPPORTED EsgzError), not a message to match', async () => {
    const err = await EstargzReader.open(bufferBlobReader(layers[0]!.blob), { where: 'layer 0' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ExternalTOCRequiredError);
    expect(err).toBeInstanceOf(EsgzError);
    expect(err).toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringContaining('layer 0: the TOC of this layer is external'),
    });
  });
});
