// Issue #14, "ctr's shape": the built CLI run as `ctr-remote` (and as `esgz`) takes ctr's command
// names, urfave/cli's flag spellings and global flags, and prints what ctr-remote prints.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multiLayerEntries, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { ctrRemote, esgz, expectOneLineError, repoRoot } from '../harness/cli.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-ctr-shape-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let image: WrittenImage;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/cli/argv.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries() });
});

describe('ctr command names and help', () => {
  it('answers to images and i as to image, for help too', async () => {
    for (const topic of ['images', 'i']) {
      const result = await ctrRemote(topic, 'convert', '--help');
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/Convert an image to eStargz/);
    }
  });

  it('prints help for -h and help CMD...', async () => {
    for (const argv of [
      ['image', 'convert', '-h'],
      ['help', 'image', 'convert'],
    ]) {
      const result = await ctrRemote(...argv);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/--estargz-compression-level/);
    }
  });

  it('names the command a typo was meant to be, on one line', async () => {
    expectOneLineError(await ctrRemote('images', 'conver', 'a', 'b'), 2, /did you mean "image convert"\?/);
    expectOneLineError(await esgz('image', 'convert', '--estarg', 'a', 'b'), 2, /did you mean --estargz\?/);
  });

  it('keeps the reason of a flag value oclif refuses', async () => {
    const result = await esgz('image', 'convert', '--estargz', '--estargz-compression-level', '13', 'a', 'b');
    expectOneLineError(result, 2, /--estargz-compression-level: .*less than or equal to 12/);
  });

  it('says esgz needs no containerd for -a and CONTAINERD_ADDRESS', async () => {
    expectOneLineError(await ctrRemote('-a', '/run/containerd/containerd.sock', 'i', 'ls'), 1, /needs no containerd/);
  });

  it('shows -i alone in help, not "-i, --i"', async () => {
    const result = await esgz('image', 'optimize', '--help');
    expect(result.stdout).toMatch(/-i, --interactive/);
    expect(result.stdout).not.toMatch(/-i, --i\b(?!n)/);
  });
});

describe('urfave/cli flag spellings', () => {
  it('converts with single-dash long flags and --flag=true, as ctr-remote is called', async () => {
    const out = join(scratch, 'dash');
    const result = await ctrRemote(
      'i',
      'convert',
      '-estargz',
      '-oci=true',
      '--reuse=false',
      `oci:${image.dir}:v1`,
      `oci:${out}:v1`,
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(existsSync(join(out, 'index.json'))).toBe(true);
  });
});
