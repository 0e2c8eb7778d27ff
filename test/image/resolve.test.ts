// The one image resolver over real OCI layouts and the harness registry: platform choice (host
// default, --platform list, --all-platforms), the attestation rule, child manifests checked
// against their index entry, and the bounded, digest-verified config read.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transferImage } from '../../src/image/pipeline.js';
import {
  choosePlatformManifests,
  fetchImageRoot,
  resolveImages,
  type PlatformChoice,
} from '../../src/image/resolve.js';
import { openSink, openSource } from '../../src/image/transports/index.js';
import { MAX_CONFIG_BYTES } from '../../src/oci/limits.js';
import { MediaType, REFERENCE_TYPE_ANNOTATION, ATTESTATION_REFERENCE_TYPE } from '../../src/oci/media-types.js';
import { formatPlatform, hostPlatform, platformMatches } from '../../src/oci/platform.js';
import type { Descriptor, ImageIndex } from '../../src/oci/types.js';
import { registryAddress } from '../harness/registry.js';
import { file } from '../fixtures/tar.js';
import { twoPlatformImages, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-resolve-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const REF_NAME = 'org.opencontainers.image.ref.name';
const ARM64 = { os: 'linux', architecture: 'arm64' };
const AMD64 = { os: 'linux', architecture: 'amd64' };

let single: WrittenImage;
let multi: WrittenImage;
let multiIndex: ImageIndex;

beforeAll(async () => {
  single = await writeOciImage(join(scratch, 'layout'), {
    tag: 'single',
    layers: [[file('hello', 'hello\n')]],
    config: { Cmd: ['/hello'] },
  });
  multi = await writeOciImage(join(scratch, 'layout'), { tag: 'multi', platforms: twoPlatformImages() });
  multiIndex = JSON.parse((await blobOf(multi.dir, multi.rootDigest)).toString()) as ImageIndex;
});

function blobOf(layout: string, digest: string): Promise<Buffer> {
  return readFile(join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)));
}

/** Stores `doc` as a blob of the layout and tags it: crafted manifests and indexes. */
async function tagDocument(layout: string, tag: string, doc: unknown, mediaType: string): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(doc));
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
  const indexPath = join(layout, 'index.json');
  const index = JSON.parse(await readFile(indexPath, 'utf8')) as ImageIndex;
  const desc: Descriptor = { mediaType, digest: `sha256:${hex}`, size: bytes.length };
  index.manifests = [
    ...index.manifests.filter((m) => m.annotations?.[REF_NAME] !== tag),
    { ...desc, annotations: { [REF_NAME]: tag } },
  ];
  await writeFile(indexPath, JSON.stringify(index));
  return desc;
}

async function resolve(reference: string, choice: PlatformChoice = {}) {
  const source = await openSource(reference, { plainHttp: true });
  try {
    return await resolveImages(source, choice);
  } finally {
    await source.close();
  }
}

describe('resolveImages over an OCI layout', () => {
  it('a single manifest: itself, with its config bytes verified and parsed', async () => {
    const [image, ...rest] = await resolve(`oci:${single.dir}:single`);
    expect(rest).toEqual([]);
    expect(image!.platform).toBeUndefined();
    expect(image!.manifestDigest).toBe(single.rootDigest);
    expect(`sha256:${createHash('sha256').update(image!.configBytes).digest('hex')}`).toBe(
      single.manifests[0]!.configDigest,
    );
    expect(image!.config.config?.Cmd).toEqual(['/hello']);
    expect(image!.manifest.layers.map((l) => l.digest)).toEqual(single.manifests[0]!.layers.map((l) => l.digest));
  });

  it("an index: this machine's platform by default, one --platform, a list in index order, or all", async () => {
    const host = multi.manifests.find((m) => platformMatches(hostPlatform(), m.platform));
    if (host) {
      expect((await resolve(`oci:${multi.dir}:multi`)).map((i) => i.manifestDigest)).toEqual([host.digest]);
    } else {
      await expect(resolve(`oci:${multi.dir}:multi`)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }
    const arm = await resolve(`oci:${multi.dir}:multi`, { platform: { os: 'linux', architecture: 'aarch64' } });
    expect(arm.map((i) => [i.platform, i.manifestDigest])).toEqual([['linux/arm64', multi.manifests[1]!.digest]]);
    const both = await resolve(`oci:${multi.dir}:multi`, { platforms: [ARM64, AMD64] });
    expect(both.map((i) => i.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    const all = await resolve(`oci:${multi.dir}:multi`, { allPlatforms: true });
    expect(all.map((i) => i.manifestDigest)).toEqual(multi.manifests.map((m) => m.digest));
    expect(all.map((i) => i.config.architecture)).toEqual(['amd64', 'arm64']);
  });

  it('a platform the index lacks: NOT_FOUND naming it and the platforms there are', async () => {
    await expect(
      resolve(`oci:${multi.dir}:multi`, {
        platforms: [{ os: 'linux', architecture: 's390x' }, AMD64, { os: 'linux', architecture: 'ppc64le' }],
      }),
    ).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: `oci:${multi.dir}:multi: no manifest for linux/s390x, linux/ppc64le in the index (available: linux/amd64, linux/arm64)`,
    });
  });

  it('an index entry whose manifest is not the one it names fails with DIGEST_MISMATCH', async () => {
    const wrong = {
      ...multiIndex,
      manifests: [{ ...multiIndex.manifests[0]!, digest: multiIndex.manifests[1]!.digest }],
    };
    await tagDocument(multi.dir, 'wrong-entry', wrong, MediaType.ociIndex);
    await expect(resolve(`oci:${multi.dir}:wrong-entry`, { platform: AMD64 })).rejects.toMatchObject({
      code: expect.stringMatching(/DIGEST_MISMATCH|SIZE_MISMATCH/),
    });
  });

  it('a nested index under --all-platforms is refused as unsupported', async () => {
    const nested = {
      ...multiIndex,
      manifests: [...multiIndex.manifests, { mediaType: MediaType.ociIndex, digest: multi.rootDigest, size: 1 }],
    };
    await tagDocument(multi.dir, 'nested', nested, MediaType.ociIndex);
    await expect(resolve(`oci:${multi.dir}:nested`, { allPlatforms: true })).rejects.toMatchObject({
      code: 'UNSUPPORTED',
      message: expect.stringContaining('nested indexes are not supported'),
    });
  });
});

describe('the config read', () => {
  const manifestWith = async (tag: string, config: Descriptor): Promise<void> => {
    const manifest = JSON.parse((await blobOf(single.dir, single.rootDigest)).toString()) as { config: Descriptor };
    await tagDocument(single.dir, tag, { ...manifest, config }, MediaType.ociManifest);
  };

  it('refuses a config descriptor larger than MAX_CONFIG_BYTES before reading it', async () => {
    const real = single.manifests[0]!;
    await manifestWith('huge-config', {
      mediaType: MediaType.ociConfig,
      digest: real.configDigest,
      size: MAX_CONFIG_BYTES + 1,
    });
    await expect(resolve(`oci:${single.dir}:huge-config`)).rejects.toMatchObject({
      code: 'BAD_MANIFEST',
      message: expect.stringContaining(`${MAX_CONFIG_BYTES + 1} bytes is too large for an image config`),
    });
  });

  it('refuses a config whose bytes do not hash to its digest', async () => {
    const bytes = Buffer.from('{"architecture":"amd64","os":"linux"}');
    const hex = createHash('sha256').update(bytes).digest('hex');
    // The blob stored under the digest holds other bytes of the same length.
    await writeFile(join(single.dir, 'blobs', 'sha256', hex), Buffer.from(bytes.toString().replace('amd64', 'arm64')));
    await manifestWith('tampered-config', {
      mediaType: MediaType.ociConfig,
      digest: `sha256:${hex}`,
      size: bytes.length,
    });
    await expect(resolve(`oci:${single.dir}:tampered-config`)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });

  it('refuses a config that is not JSON, naming the manifest', async () => {
    const bytes = Buffer.from('not json');
    const hex = createHash('sha256').update(bytes).digest('hex');
    await writeFile(join(single.dir, 'blobs', 'sha256', hex), bytes);
    await manifestWith('text-config', { mediaType: MediaType.ociConfig, digest: `sha256:${hex}`, size: bytes.length });
    await expect(resolve(`oci:${single.dir}:text-config`)).rejects.toMatchObject({
      code: 'BAD_MANIFEST',
      message: expect.stringMatching(/manifest .*config sha256:[0-9a-f]{64} is not valid JSON/),
    });
  });
});

describe('choosePlatformManifests: the one attestation rule', () => {
  const attestation = (annotated: boolean): Descriptor => ({
    mediaType: MediaType.ociManifest,
    digest: `sha256:${'a'.repeat(64)}`,
    size: 100,
    platform: { os: 'unknown', architecture: 'unknown' },
    ...(annotated ? { annotations: { [REFERENCE_TYPE_ANNOTATION]: ATTESTATION_REFERENCE_TYPE } } : {}),
  });

  it('never picks an attestation for a platform, lists none as available, keeps them only when asked', () => {
    const index: ImageIndex = {
      ...multiIndex,
      manifests: [
        ...multiIndex.manifests,
        attestation(true),
        { ...attestation(false), digest: `sha256:${'b'.repeat(64)}` },
      ],
    };
    expect(choosePlatformManifests(index, { allPlatforms: true }, 'x')).toEqual(multiIndex.manifests);
    expect(choosePlatformManifests(index, { allPlatforms: true }, 'x', { keepAttestations: true })).toEqual(
      index.manifests,
    );
    expect(() => choosePlatformManifests(index, { platform: { os: 'unknown', architecture: 'unknown' } }, 'x')).toThrow(
      '(available: linux/amd64, linux/arm64)',
    );
    expect(choosePlatformManifests(index, { platforms: [ARM64] }, 'x').map((d) => formatPlatform(d.platform!))).toEqual(
      ['linux/arm64'],
    );
  });
});

describe('resolveImages over the registry', () => {
  it('resolves the same manifests from a registry as from the layout it was pushed from', async () => {
    const reference = `${registryAddress()}/esgz-resolve/multi:v1`;
    const source = await openSource(`oci:${multi.dir}:multi`);
    try {
      await transferImage({ source, sink: await openSink(reference, { plainHttp: true }), allPlatforms: true });
    } finally {
      await source.close();
    }
    const registry = await openSource(reference, { plainHttp: true });
    try {
      expect(await fetchImageRoot(registry)).toMatchObject({ kind: 'index', raw: { digest: multi.rootDigest } });
    } finally {
      await registry.close();
    }
    const arm = await resolve(reference, { platform: ARM64 });
    expect(arm.map((i) => [i.platform, i.manifestDigest, i.manifest.config.digest])).toEqual([
      ['linux/arm64', multi.manifests[1]!.digest, multi.manifests[1]!.configDigest],
    ]);
    await expect(resolve(reference, { platform: { os: 'linux', architecture: 'riscv64' } })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining(
        'no manifest for linux/riscv64 in the index (available: linux/amd64, linux/arm64)',
      ),
    });
  });
});
