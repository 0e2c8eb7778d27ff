// nerdctl's `image convert --zstd --oci` (and `--format oci`): plain zstd layers, checked by zstd
// itself (`zstd -d` gives the diffID the config records) and by skopeo; reproducible; the
// format flags refuse what they cannot do in one line.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '../../src/oci/media-types.js';
import type { ImageConfig, ImageManifest } from '../../src/oci/types.js';
import { multiLayerEntries, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { readLayoutBlob, readLayoutJson } from '../fixtures/oci-layout.js';
import { sha256Digest } from '../fixtures/tar.js';
import { esgz, expectOneLineError } from '../harness/cli.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-plain-zstd-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let image: WrittenImage;
beforeAll(async () => {
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries(), mediaTypes: 'docker' });
});

async function convertedManifest(dir: string): Promise<{ digest: string; manifest: ImageManifest }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const digest = index.manifests[0]!.digest;
  return { digest, manifest: readLayoutJson<ImageManifest>(dir, digest) };
}

describe('image convert --zstd (nerdctl)', () => {
  it('writes one zstd frame per layer that zstd -d turns into the diffID, twice the same bytes', async () => {
    const digests: string[] = [];
    for (const [i, formatFlags] of [
      ['--zstd', '--oci'],
      ['--zstd', '--format', 'oci'],
    ].entries()) {
      const out = join(scratch, `zstd-${i}`);
      const result = await esgz('image', 'convert', ...formatFlags, `oci:${image.dir}:v1`, `oci:${out}:z`);
      expect(result.exitCode, result.stderr).toBe(0);
      const { digest, manifest } = await convertedManifest(out);
      digests.push(digest);
      expect(manifest.mediaType).toBe(MediaType.ociManifest);
      const config = readLayoutJson<ImageConfig>(out, manifest.config.digest);
      for (const [n, layer] of manifest.layers.entries()) {
        expect(layer.mediaType).toBe(MediaType.ociLayerZstd);
        const blob = readLayoutBlob(out, layer.digest);
        const tar = await execa('zstd', ['-d', '-c'], { input: blob, encoding: 'buffer' });
        expect(sha256Digest(Buffer.from(tar.stdout))).toBe(config.rootfs.diff_ids[n]);
        expect(config.rootfs.diff_ids[n]).toBe(image.manifests[0]!.layers[n]!.diffID);
      }
      const inspect = await execa('skopeo', ['inspect', '--raw', `oci:${out}:z`]);
      expect(sha256Digest(inspect.stdout)).toBe(digest);
    }
    expect(digests[1]).toBe(digests[0]);
  });

  it('--zstd-compression-level changes the bytes; layers already zstd stay as they are', async () => {
    const convert = async (source: string, destination: string, ...flags: string[]) => {
      const result = await esgz('image', 'convert', '--zstd', '--oci', ...flags, source, destination);
      expect(result.exitCode, result.stderr).toBe(0);
      return (await convertedManifest(destination.slice('oci:'.length, -':z'.length))).manifest.layers;
    };
    const level19 = ['--zstd-compression-level', '19'];
    const fast = await convert(`oci:${image.dir}:v1`, `oci:${join(scratch, 'fast')}:z`);
    // Already zstd: kept byte for byte whatever the level.
    expect(await convert(`oci:${join(scratch, 'fast')}:z`, `oci:${join(scratch, 'slow')}:z`, ...level19)).toEqual(fast);
    const slow = await convert(`oci:${image.dir}:v1`, `oci:${join(scratch, 'l19')}:z`, ...level19);
    expect(slow.map((l) => l.digest)).not.toEqual(fast.map((l) => l.digest));
  });

  it('refuses what it cannot do in one line', async () => {
    const out = join(scratch, 'refused');
    expectOneLineError(
      await esgz('image', 'convert', '--zstd', `oci:${image.dir}:v1`, `oci:${out}:z`),
      'nonzero',
      /--zstd must be used in conjunction with --oci/,
    );
    expectOneLineError(
      await esgz('image', 'convert', '--zstd', '--estargz', '--oci', `oci:${image.dir}:v1`, `oci:${out}:z`),
      'nonzero',
      /--estargz conflicts with --zstd/,
    );
    expectOneLineError(
      await esgz('image', 'convert', '--zstd', '--format', 'docker', `oci:${image.dir}:v1`, `oci:${out}:z`),
      'nonzero',
      /--format docker/,
    );
  });
});
