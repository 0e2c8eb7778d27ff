// `--platform` with several values (repeated or comma-separated), as ctr-remote's string slice:
// `image copy`, `image convert` and `image optimize` keep an index of just the selected
// platforms, in index order; a platform the index lacks fails before anything is written.
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { twoPlatformImages, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { readOciLayout } from '../fixtures/oci-layout.js';
import { dir, file } from '../fixtures/tar.js';
import { esgz, expectOneLineError, repoRoot } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-platforms-cli-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

interface IndexJson {
  mediaType?: string;
  manifests: Array<{
    digest: string;
    mediaType: string;
    platform?: { os: string; architecture: string; variant?: string };
  }>;
}

let three: WrittenImage;
let registryRef: string;

/** linux/amd64 (busybox, runs here), linux/arm64/v8 and linux/arm/v7 (placeholders), in that order. */
beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/image/copy.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  three = await writeOciImage(join(scratch, 'src'), {
    tag: 'three',
    platforms: [
      ...twoPlatformImages(),
      {
        layers: [[dir('etc'), file('etc/arch', 'arm v7 placeholder\n')]],
        platform: { os: 'linux', architecture: 'arm', variant: 'v7' },
      },
    ],
  });
  registryRef = `${registryAddress()}/esgz-platforms/three:src`;
  const push = await esgz('image', 'copy', '--plain-http', '--all-platforms', `oci:${three.dir}:three`, registryRef);
  expect(push.exitCode, push.stderr).toBe(0);
});

function platformsOf(index: IndexJson): string[] {
  return index.manifests.map((m) =>
    [m.platform!.os, m.platform!.architecture, m.platform!.variant].filter(Boolean).join('/'),
  );
}

async function registryRoot(ref: string): Promise<{ mediaType?: string; manifests?: IndexJson['manifests'] }> {
  const { stdout } = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
  return JSON.parse(stdout);
}

function layoutRoot(layout: string, tag: string): { digest: string; body: IndexJson } {
  const { root, rootIndex } = readOciLayout(layout, tag);
  return { digest: root.digest, body: rootIndex! };
}

describe('--platform with several values', () => {
  it('image convert: two of three platforms through the registry, an index of exactly those two', async () => {
    const dst = `${registryAddress()}/esgz-platforms/three:esgz`;
    // Repeated flags, given in the reverse of the index order: the output keeps the index order.
    const res = await esgz(
      'image',
      'convert',
      '--plain-http',
      '--estargz',
      '--oci',
      '--json',
      '--platform',
      'linux/arm/v7',
      '--platform',
      'linux/amd64',
      registryRef,
      dst,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const report = JSON.parse(res.stdout);
    expect(report.manifests.map((m: { platform: string }) => m.platform)).toEqual(['linux/amd64', 'linux/arm/v7']);
    const index = (await registryRoot(dst)) as IndexJson;
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(platformsOf(index)).toEqual(['linux/amd64', 'linux/arm/v7']);
    for (const child of index.manifests) {
      const manifest = (await registryRoot(`${dst.replace(/:esgz$/, '')}@${child.digest}`)) as {
        layers: Array<{ annotations?: Record<string, string> }>;
      };
      for (const layer of manifest.layers)
        expect(layer.annotations?.['containerd.io/snapshot/stargz/toc.digest']).toMatch(/^sha256:/);
    }
  });

  it('image copy: a comma-separated list keeps the source manifests byte for byte; one value still gives the manifest', async () => {
    const out = join(scratch, 'copy-two');
    const res = await esgz(
      'image',
      'copy',
      '--platform',
      'linux/arm64,linux/amd64',
      `oci:${three.dir}:three`,
      `oci:${out}:two`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const { body } = await layoutRoot(out, 'two');
    expect(platformsOf(body)).toEqual(['linux/amd64', 'linux/arm64/v8']);
    expect(body.manifests.map((m) => m.digest)).toEqual([three.manifests[0]!.digest, three.manifests[1]!.digest]);

    const one = await esgz(
      'image',
      'copy',
      '--json',
      '--platform',
      'linux/arm/v7',
      `oci:${three.dir}:three`,
      `oci:${join(scratch, 'copy-one')}:one`,
    );
    expect(one.exitCode, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout).digest).toBe(three.manifests[2]!.digest);
  });

  it('a platform the index does not have: NOT_FOUND naming it, nothing written', async () => {
    const out = join(scratch, 'missing');
    const res = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--platform',
      'linux/amd64,linux/s390x',
      `oci:${three.dir}:three`,
      `oci:${out}:x`,
    );
    expectOneLineError(
      res,
      1,
      /no manifest for linux\/s390x in the index \(available: linux\/amd64, linux\/arm64, linux\/arm\/v7\)/,
    );
    expect(existsSync(out) ? await readdir(out) : []).not.toContain('index.json');

    const dst = `${registryAddress()}/esgz-platforms/three:missing`;
    const copy = await esgz(
      'image',
      'copy',
      '--plain-http',
      '--platform',
      'linux/ppc64le',
      '--platform',
      'linux/amd64',
      '--platform',
      'linux/s390x',
      registryRef,
      dst,
    );
    expectOneLineError(copy, 1, /no manifest for linux\/ppc64le, linux\/s390x in the index/);
    const inspect = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dst}`], {
      reject: false,
    });
    expect(inspect.exitCode).not.toBe(0);
  });

  it('bad combinations: one line, exit 2', async () => {
    const src = `oci:${three.dir}:three`;
    const never = join(scratch, 'never');
    for (const command of ['copy', 'convert', 'optimize']) {
      const format = command === 'copy' ? [] : command === 'convert' ? ['--estargz'] : ['--no-optimize'];
      expectOneLineError(
        await esgz('image', command, ...format, '--platform', 'linux/amd64,lnux', src, `oci:${never}:x`),
        2,
        /--platform "lnux" is not a platform: unknown operating system or architecture/,
      );
    }
    expectOneLineError(
      await esgz(
        'image',
        'copy',
        '--platform',
        'linux/amd64,linux/arm64',
        src,
        `docker-archive:${join(scratch, 'two.tar')}`,
      ),
      2,
      /a docker archive holds one platform; give one --platform/,
    );
    expect(existsSync(never)).toBe(false);
    expect(existsSync(join(scratch, 'two.tar'))).toBe(false);
  });

  it('image optimize: profiles the platform this machine runs, converts the other selected one with a warning', async () => {
    const out = join(scratch, 'optimized');
    const res = await esgz(
      'image',
      'optimize',
      '--oci',
      '--json',
      '--platform',
      'linux/amd64,linux/arm64',
      '--entrypoint',
      '["/bin/sh","-c"]',
      '--args',
      '["cat /etc/hello"]',
      `oci:${three.dir}:three`,
      `oci:${out}:opt`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    expect(res.stderr).toMatch(
      /warning: linux\/arm64: not runnable on this machine \(linux\/amd64\); converted without optimization/,
    );
    const report = JSON.parse(res.stdout);
    expect(report.profile.platform).toBe('linux/amd64');
    expect(report.platformsNotProfiled).toEqual(['linux/arm64']);
    const { body } = await layoutRoot(out, 'opt');
    expect(platformsOf(body)).toEqual(['linux/amd64', 'linux/arm64/v8']);

    const noopt = await esgz(
      'image',
      'optimize',
      '--oci',
      '--no-optimize',
      '--platform',
      'linux/arm/v7',
      '--platform',
      'linux/arm64',
      `oci:${three.dir}:three`,
      `oci:${out}:noopt`,
    );
    expect(noopt.exitCode, noopt.stderr).toBe(0);
    expect(platformsOf((await layoutRoot(out, 'noopt')).body)).toEqual(['linux/arm64/v8', 'linux/arm/v7']);
  });

  it('repeatable flags take one value each: SOURCE and DESTINATION after them stay arguments', async () => {
    const out = join(scratch, 'greedy');
    const res = await esgz(
      'image',
      'optimize',
      '--oci',
      '--env',
      'A=B',
      '--mount',
      'type=bind,source=/tmp,destination=/mnt',
      '--platform',
      'linux/amd64',
      '--entrypoint',
      '["/bin/true"]',
      `oci:${three.dir}:three`,
      `oci:${out}:g`,
    );
    expect(res.exitCode, res.stderr).toBe(0);
    const copy = await esgz('image', 'copy', '--platform', 'linux/arm64', `oci:${three.dir}:three`, `oci:${out}:c`);
    expect(copy.exitCode, copy.stderr).toBe(0);
  });

  it('--help shows a multi-platform example', async () => {
    for (const command of ['copy', 'convert', 'optimize']) {
      const help = await esgz('image', command, '--help');
      expect(help.stdout, command).toMatch(/--platform linux\/amd64,linux\/arm64/);
    }
  });
});
