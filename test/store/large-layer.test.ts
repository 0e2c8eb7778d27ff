// `image pull` and `image push` stream: a 1 GiB layer goes registry → store → registry with the
// process staying under 256 MiB of RSS. The layer is random bytes stored uncompressed (so it is
// quick to make: no compression, and its digest is its diffID); ~1 min on the CI machine.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { esgz, esgzMeasured } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';
import { longTests } from '../harness/long-tests.js';

const LAYER_BYTES = 1 << 30;
const RSS_LIMIT_MIB = 256;

const scratch = await mkdtemp(join(tmpdir(), 'esgz-store-large-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** An OCI layout holding one image whose only layer is LAYER_BYTES of random data. */
async function writeLargeImage(dir: string): Promise<string> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layerPath = join(dir, 'layer');
  const { stdout } = await execa('sh', ['-c', `head -c ${LAYER_BYTES} /dev/urandom | tee ${layerPath} | sha256sum`]);
  const layerDigest = `sha256:${stdout.split(' ')[0]}`;
  await execa('mv', [layerPath, join(blobs, layerDigest.slice(7))]);
  const put = async (value: unknown) => {
    const bytes = Buffer.from(JSON.stringify(value));
    await writeFile(join(blobs, digestOf(bytes).slice(7)), bytes);
    return { digest: digestOf(bytes), size: bytes.length };
  };
  const config = await put({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [layerDigest] },
    config: {},
  });
  const manifest = await put({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size: LAYER_BYTES }],
  });
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...manifest,
        annotations: { 'org.opencontainers.image.ref.name': 'big' },
      },
    ],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return manifest.digest;
}

describe.skipIf(!longTests)('a 1 GiB layer', () => {
  it(`is pulled into the store and pushed from it under ${RSS_LIMIT_MIB} MiB RSS`, { timeout: 600_000 }, async () => {
    const digest = await writeLargeImage(join(scratch, 'layout'));
    const ref = `${registryAddress()}/esgz-store/large:1`;
    const seed = await esgz('image', 'copy', '--plain-http', `oci:${join(scratch, 'layout')}:big`, ref);
    expect(seed.exitCode, seed.stderr).toBe(0);
    await rm(join(scratch, 'layout'), { recursive: true, force: true });

    const root = join(scratch, 'state');
    const pull = await esgzMeasured('image', 'pull', '--plain-http', '--root', root, ref);
    console.log(`pull: ${pull.peakRssMiB.toFixed(0)} MiB peak RSS, ${pull.seconds.toFixed(1)} s`);
    expect(pull.exitCode, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(`digest: ${digest}`);
    expect(pull.peakRssMiB).toBeLessThan(RSS_LIMIT_MIB);

    const pushed = `${registryAddress()}/esgz-store/large-pushed:1`;
    const push = await esgzMeasured('image', 'push', '--plain-http', '--root', root, ref, pushed);
    console.log(`push: ${push.peakRssMiB.toFixed(0)} MiB peak RSS, ${push.seconds.toFixed(1)} s`);
    expect(push.exitCode, push.stderr).toBe(0);
    expect(push.stdout).toContain(`digest: ${digest}`);
    expect(push.peakRssMiB).toBeLessThan(RSS_LIMIT_MIB);
  });
});
