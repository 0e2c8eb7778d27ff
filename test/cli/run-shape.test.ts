// Issue #14: `run` as ctr-remote scripts call it: `--snapshotter stargz` (the lazy path, after
// rpull) or `overlayfs` (every layer downloaded and unpacked first), `--platform`, and a loud
// `--privileged`. Needs root, runc, FUSE and the test registry, as test/snapshotter/cli.test.ts.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxImage } from '../fixtures/debian.js';
import { registryAddress } from '../harness/registry.js';
import { pushEstargzImage } from '../snapshotter/helpers.js';
import { ctrRemote, esgz, expectOneLineError, repoRoot } from '../harness/cli.js';

let scratch: string;
let ref: string;
let layerDigest: string;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/run.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  scratch = await mkdtemp(join(tmpdir(), 'esgz-run-shape-'));
  const fixture = await busyboxImage();
  ref = `${registryAddress()}/ctr-shape/busybox:esgz`;
  const pushed = await pushEstargzImage(
    ref,
    [await readFile(fixture.layers[0]!.tarPath)],
    { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh', '-c', 'echo default cmd'] } },
    { prioritizedFiles: [['bin/busybox']] },
  );
  layerDigest = pushed.layerDigests[0]!;
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('run --snapshotter, --platform, --privileged', () => {
  it('overlayfs: pulls every layer unpacked (no rpull first) and runs', async () => {
    const root = join(scratch, 'overlay');
    const result = await ctrRemote(
      'run',
      '--rm',
      '--plain-http',
      '--root',
      root,
      '--snapshotter=overlayfs',
      ref,
      'o1',
      'echo',
      'hi',
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe('hi');
    const hex = layerDigest.slice('sha256:'.length);
    expect(existsSync(join(root, 'layers', 'sha256', hex, 'fs', 'bin', 'busybox'))).toBe(true);
  });

  it('stargz: the lazy path after rpull, as ctr-remote run --snapshotter=stargz', async () => {
    const root = join(scratch, 'stargz');
    const unpulled = await ctrRemote('run', '--rm', '--root', root, '--snapshotter', 'stargz', ref, 's0', 'true');
    expectOneLineError(unpulled, 1, /is not pulled/);
    const pulled = await ctrRemote('image', 'rpull', '--plain-http', '--root', root, ref);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    expect(pulled.stdout).toBe(''); // ctr-remote's own output only; esgz's report is on stderr
    const result = await ctrRemote(
      'run',
      '--rm',
      '--root',
      root,
      '--snapshotter=stargz',
      '--platform',
      'linux',
      ref,
      's1',
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe('default cmd');
  });

  it('--platform other than this machine is refused; --privileged warns on stderr', async () => {
    const root = join(scratch, 'stargz');
    expectOneLineError(
      await esgz('run', '--root', root, '--platform', 'linux/s390x', ref),
      1,
      /runs linux\/amd64 only/,
    );
    const result = await esgz('run', '--rm', '--root', root, '--privileged', ref, 'p1', 'true');
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/warning: --privileged: the container runs WITHOUT the sandbox/);
  });
});
