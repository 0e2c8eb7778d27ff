// Hostile registries and descriptors (issue #12 items 10 and 11), through the built CLI:
// credentials never reach a plain-HTTP token realm on another host, and a blob whose length
// disagrees with its descriptor is refused on every path with one line and no tag written.
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/registry/client.js';
import { esgz, esgzMeasured, expectOneLineError, HOSTILE_RSS_LIMIT_MIB } from '../harness/cli.js';
import { registryAddress, startRegistry, type RunningRegistry } from '../harness/registry.js';
import { busyboxRootfs, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { layoutBlobPath, layoutTags, readLayoutBlob, readOciLayout } from '../fixtures/oci-layout.js';
import { misstateLayerSizeInLayout, pushWithMisstatedLayerSize } from '../fixtures/hostile-registry.js';
import { startTokenFront, type TokenFront } from '../registry/token-front.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-sec-registry-'));
const savedDockerConfig = process.env.DOCKER_CONFIG;
afterAll(async () => {
  if (savedDockerConfig === undefined) delete process.env.DOCKER_CONFIG;
  else process.env.DOCKER_CONFIG = savedDockerConfig;
  await rm(scratch, { recursive: true, force: true });
});

/** A docker config dir holding `auths` (the CLI reads it through $DOCKER_CONFIG). */
async function dockerConfig(auths: Record<string, { auth?: string; identitytoken?: string }>): Promise<string> {
  const dir = await mkdtemp(join(scratch, 'docker-'));
  await writeFile(join(dir, 'config.json'), JSON.stringify({ auths }));
  return dir;
}

async function createEmpty(path: string): Promise<string> {
  await writeFile(path, '');
  return path;
}

const basic = (user: string, password: string): string => Buffer.from(`${user}:${password}`).toString('base64');

async function tagExists(registry: string, repository: string, tag: string): Promise<boolean> {
  const client = new RegistryClient(registry, { plainHttp: true });
  try {
    return (await client.headManifest(repository, tag)) !== undefined;
  } finally {
    await client.close();
  }
}

/**
 * A `docker save`-style archive (manifest.json, index.json, blobs/) of the image `tag` names in the
 * layout of `image`, made with GNU tar so the transport under test does not write it.
 */
async function dockerArchiveOf(image: WrittenImage, tag: string): Promise<string> {
  const {
    root: entry,
    manifests: [{ manifest }],
  } = readOciLayout(image.dir, tag);
  const root = await mkdtemp(join(scratch, 'archive-'));
  await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
  for (const digest of [entry.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    await writeFile(layoutBlobPath(root, digest), readLayoutBlob(image.dir, digest));
  }
  await writeFile(join(root, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [entry] }));
  await writeFile(join(root, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const blob = (digest: string): string => `blobs/sha256/${digest.slice(7)}`;
  await writeFile(
    join(root, 'manifest.json'),
    JSON.stringify([
      { Config: blob(manifest.config.digest), RepoTags: null, Layers: manifest.layers.map((l) => blob(l.digest)) },
    ]),
  );
  const archive = `${root}.tar`;
  await execa('tar', ['-cf', archive, '-C', root, '.']);
  return archive;
}

describe('credentials and a plain-HTTP token realm (item 10)', () => {
  let registry: RunningRegistry;
  let front: TokenFront;
  let image: WrittenImage;
  beforeAll(async () => {
    // The harness realm is http://127.0.0.1:<token port>/token: another origin than the registry.
    registry = await startRegistry({
      token: { users: { bob: 'builder' }, anonymousPull: true, refreshTokens: { 'refresh-for-bob': 'bob' } },
    });
    front = await startTokenFront(registry);
    image = await writeOciImage(join(scratch, 'auth-src'), { tag: 'v1', layers: [busyboxRootfs()] });
  });
  afterAll(async () => {
    await front.close();
    await registry.stop();
  });

  it('sends no credentials to a realm on another host:port over plain HTTP, and says why the push was refused', async () => {
    const requests = registry.tokenServer!.requests;
    for (const auth of [{ auth: basic('bob', 'builder') }, { identitytoken: 'refresh-for-bob' }]) {
      process.env.DOCKER_CONFIG = await dockerConfig({ [registry.address]: auth });
      requests.length = 0;
      const push = await esgzMeasured(
        'image',
        'copy',
        '--plain-http',
        `oci:${image.dir}:v1`,
        `${registry.address}/sec/withheld:v1`,
      );
      expectOneLineError(push, 'nonzero', /plain-HTTP token server http:\/\/127\.0\.0\.1:\d+/);
      expect(push.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
      expect(push.seconds).toBeLessThan(30);
      expect(requests.length).toBeGreaterThan(0);
      // Every request anonymous: no Basic header (user) and no refresh-token POST.
      expect(
        requests.every((r) => r.user === undefined && r.method === 'GET'),
        JSON.stringify(requests),
      ).toBe(true);
      expect(await tagExists(front.address, 'sec/withheld', 'v1')).toBe(false);
    }
  });

  it('sends them to a plain-HTTP realm on the registry itself, and a public pull through the foreign realm still works anonymously', async () => {
    const requests = registry.tokenServer!.requests;
    process.env.DOCKER_CONFIG = await dockerConfig({
      [front.address]: { auth: basic('bob', 'builder') },
      [registry.address]: { auth: basic('bob', 'builder') },
    });
    requests.length = 0;
    const push = await esgz('image', 'copy', '--plain-http', `oci:${image.dir}:v1`, `${front.address}/sec/allowed:v1`);
    expect(push.exitCode, push.stderr).toBe(0);
    expect(requests.some((r) => r.user === 'bob' && r.status === 200)).toBe(true);

    requests.length = 0;
    const pull = await esgz(
      'image',
      'copy',
      '--plain-http',
      `${registry.address}/sec/allowed:v1`,
      `oci:${join(scratch, 'anon-pull')}:v1`,
    );
    expect(pull.exitCode, pull.stderr).toBe(0);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((r) => r.user === undefined)).toBe(true);
  });
});

describe('blob sizes that disagree with their descriptor (item 11)', () => {
  let image: WrittenImage;
  beforeAll(async () => {
    delete process.env.DOCKER_CONFIG;
    image = await writeOciImage(join(scratch, 'sizes'), {
      tag: 'good',
      layers: [busyboxRootfs()],
      config: { Cmd: ['/bin/true'] },
    });
    await misstateLayerSizeInLayout(image, 'smaller', -1);
    await misstateLayerSizeInLayout(image, 'larger', +1);
  });

  const cases = [
    { tag: 'smaller', delta: -1, what: 'a blob longer than its descriptor' },
    { tag: 'larger', delta: +1, what: 'a blob shorter than its descriptor' },
  ] as const;
  const commands = [
    ['image', 'copy'],
    ['image', 'convert', '--estargz', '--oci'],
    ['image', 'convert', '--zstdchunked', '--oci'],
    ['image', 'optimize', '--oci', '--entrypoint', '["/bin/true"]'],
  ];

  for (const { tag, what } of cases) {
    it(`refuses ${what} from an OCI layout in copy, convert and optimize, tagging nothing`, async () => {
      for (const command of commands) {
        const out = join(scratch, `out-${tag}-${command.slice(1).join('')}`);
        const run = await esgzMeasured(...command, `oci:${image.dir}:${tag}`, `oci:${out}:t`);
        expectOneLineError(run, 'nonzero', /descriptor says \d+/);
        expect(run.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
        expect(run.seconds).toBeLessThan(30);
        expect(await layoutTags(out)).not.toContain('t');
      }
    });

    it(`refuses ${what} from a docker archive (docker save with the OCI manifest)`, async () => {
      const archive = await dockerArchiveOf(image, tag);
      for (const command of commands.slice(0, 2)) {
        const out = join(scratch, `archive-out-${tag}-${command.slice(1).join('')}`);
        const run = await esgz(...command, `docker-archive:${archive}`, `oci:${out}:t`);
        expectOneLineError(run, 'nonzero', /descriptor says \d+/);
        expect(await layoutTags(out)).not.toContain('t');
      }
    });

    it(`refuses ${what} from a registry, also when the blob is mounted or already there`, async () => {
      const registry = registryAddress();
      const repository = `sec/sizes-${tag}`;
      await pushWithMisstatedLayerSize(image, registry, repository, 'v1', cases.find((c) => c.tag === tag)!.delta);
      const destinations = [
        `${registry}/${repository}:copy`, // the blob is already in this repository
        `${registry}/sec/sizes-${tag}-mounted:copy`, // a cross-repository mount
        `oci:${join(scratch, `pulled-${tag}`)}:t`,
      ];
      for (const destination of destinations) {
        const run = await esgz('image', 'copy', '--plain-http', `${registry}/${repository}:v1`, destination);
        expectOneLineError(run, 'nonzero', /descriptor says \d+/);
      }
      expect(await tagExists(registry, repository, 'copy')).toBe(false);
      expect(await tagExists(registry, `sec/sizes-${tag}-mounted`, 'copy')).toBe(false);
      expect(await layoutTags(join(scratch, `pulled-${tag}`))).not.toContain('t');
      for (const command of commands.slice(1)) {
        const run = await esgz(
          ...command,
          '--plain-http',
          `${registry}/${repository}:v1`,
          `${registry}/${repository}:${command[1]}`,
        );
        expectOneLineError(run, 'nonzero', /descriptor says \d+/);
        expect(await tagExists(registry, repository, command[1]!)).toBe(false);
      }
    });
  }

  it('reads a huge "manifest" in a layout only up to its bound (one line, bounded memory)', async () => {
    const layout = join(scratch, 'huge-manifest');
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const hex = 'ab'.repeat(32);
    const hugeSize = 1536 * 1024 * 1024;
    await truncate(await createEmpty(join(layout, 'blobs', 'sha256', hex)), hugeSize); // sparse: no disk used
    const entry = {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${hex}`,
      size: hugeSize,
      annotations: { 'org.opencontainers.image.ref.name': 'huge' },
    };
    await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [entry] }));
    const run = await esgzMeasured('image', 'copy', `oci:${layout}:huge`, `oci:${join(scratch, 'huge-out')}:t`);
    expectOneLineError(run, 'nonzero', /larger than \d+ bytes/);
    expect(run.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
    expect(run.seconds).toBeLessThan(30);
    expect(await layoutTags(join(scratch, 'huge-out'))).toEqual([]);
  });

  it('still copies the honest image', async () => {
    const run = await esgz('image', 'copy', `oci:${image.dir}:good`, `oci:${join(scratch, 'honest')}:t`);
    expect(run.exitCode, run.stderr).toBe(0);
  });
});
