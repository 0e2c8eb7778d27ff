// Issue #14, "ctr's shape": the built CLI run as `ctr-remote` (and as `esgz`) takes ctr's command
// names, urfave/cli's flag spellings and global flags, and prints what ctr-remote prints.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multiLayerEntries, twoPlatformImages, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { layoutRootDigest, readLayoutJson } from '../fixtures/oci-layout.js';
import type { ImageIndex } from '../../src/oci/types.js';
import { ctrRemote, esgz, expectOneLineError, repoRoot } from '../harness/cli.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-ctr-shape-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let image: WrittenImage;
let multiarch: WrittenImage;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/cli/argv.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: multiLayerEntries() });
  multiarch = await writeOciImage(join(scratch, 'multi'), { tag: 'multi', platforms: twoPlatformImages() });
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

describe('platforms as containerd parses and converts them', () => {
  /** The platforms of the root `tag` names in an OCI layout, or undefined when it is a manifest. */
  function rootPlatforms(layout: string, tag: string): string[] | undefined {
    const root = readLayoutJson<Partial<ImageIndex>>(layout, layoutRootDigest(layout, tag));
    return root.manifests?.map((m) => `${m.platform!.os}/${m.platform!.architecture}`);
  }

  it("--platform arm64 picks linux/arm64 and keeps a one-entry index, as containerd's convertIndex", async () => {
    const out = join(scratch, 'arm64');
    const src = `oci:${multiarch.dir}:multi`;
    const result = await ctrRemote('i', 'convert', '--estargz', '--oci', '--platform', 'arm64', src, `oci:${out}:a`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(rootPlatforms(out, 'a')).toEqual(['linux/arm64']);
    // copy is skopeo's: one platform is that manifest.
    const copied = await esgz('image', 'copy', '--platform', 'arm64', src, `oci:${out}:c`);
    expect(copied.exitCode, copied.stderr).toBe(0);
    expect(rootPlatforms(out, 'c')).toBeUndefined();
  });

  it('--all-platforms wins over --platform', async () => {
    const out = join(scratch, 'all');
    const src = `oci:${multiarch.dir}:multi`;
    const argv = ['--platform', 'linux/amd64', '--all-platforms', src, `oci:${out}:all`];
    const result = await ctrRemote('image', 'convert', '--estargz', '--oci', ...argv);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(rootPlatforms(out, 'all')).toEqual(['linux/amd64', 'linux/arm64']);
  });
});

describe('stdout as ctr-remote prints it', () => {
  it('convert under ctr-remote prints the bare digest; esgz keeps its summary', async () => {
    const src = `oci:${image.dir}:v1`;
    const out = join(scratch, 'stdout');
    const ctr = await ctrRemote('i', 'convert', '--estargz', '--oci', src, `oci:${out}:c`);
    expect(ctr.exitCode, ctr.stderr).toBe(0);
    expect(ctr.stdout).toBe(layoutRootDigest(out, 'c'));
    expect(ctr.stderr).toMatch(/^digest: sha256:/m);
    const own = await esgz('image', 'convert', '--estargz', '--oci', src, `oci:${out}:e`);
    expect(own.stdout).toMatch(/^converted .* -> .*\ndigest: sha256:[0-9a-f]{64}$/m);
  });

  it('with --estargz-external-toc, "extra image: NAME" then the digest; an untagged destination is refused', async () => {
    const src = `oci:${image.dir}:v1`;
    const out = join(scratch, 'ext');
    const ctr = await ctrRemote('i', 'convert', '--estargz', '--oci', '--estargz-external-toc', src, `oci:${out}:x`);
    expect(ctr.exitCode, ctr.stderr).toBe(0);
    expect(ctr.stdout.split('\n')).toEqual([`extra image: oci:${out}:x-esgztoc`, layoutRootDigest(out, 'x')]);
    const untagged = await esgz('image', 'convert', '--estargz', '--oci', '--estargz-external-toc', src, `oci:${out}`);
    expectOneLineError(untagged, 2, /needs a tagged destination/);
  });
});

describe('image get-toc-digest', () => {
  it("answers at upstream's place too, with the top-level command's output; --zstdchunked checks the format", async () => {
    const out = join(scratch, 'toc');
    const convert = await esgz('image', 'convert', '--estargz', '--oci', `oci:${image.dir}:v1`, `oci:${out}:t`);
    expect(convert.exitCode, convert.stderr).toBe(0);
    const top = await esgz('get-toc-digest', `oci:${out}:t`);
    expect(top.exitCode, top.stderr).toBe(0);
    const [firstRow] = top.stdout.split('\n');
    const [layer, tocDigest] = firstRow!.split(' ');
    expect(tocDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const ctr = await ctrRemote('i', 'get-toc-digest', `oci:${out}:t@${layer}`);
    expect(ctr.exitCode, ctr.stderr).toBe(0);
    expect(ctr.stdout).toBe(tocDigest);
    const zstd = await ctrRemote('image', 'get-toc-digest', '--zstdchunked', `oci:${out}:t@${layer}`);
    expectOneLineError(zstd, 1, /is eStargz, not zstd:chunked/);
  });

  it('--dump-toc on a layer that is not eStargz: one line, non-zero', async () => {
    const result = await ctrRemote('image', 'get-toc-digest', '--dump-toc', `oci:${image.dir}:v1`);
    expectOneLineError(result, 'nonzero', /--dump-toc: layer sha256:[0-9a-f]{64} is not eStargz/);
    expect(result.stdout).toBe('');
  });
});
