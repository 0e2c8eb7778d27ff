// `esgz image rpull`, `esgz run`, `esgz image ls/rm/prune` through the built CLI (npm run build
// first): output, exit codes (the container's own), one-line errors, nothing left mounted.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxImage } from '../fixtures/debian.js';
import { registryAddress } from '../harness/registry.js';
import { splitRunArgv } from '../../src/commands/run.js';
import { pushEstargzImage } from './helpers.js';
import { esgz, expectOneLineError, repoRoot } from '../harness/cli.js';

let scratch: string;
let ref: string;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/run.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  scratch = await mkdtemp(join(tmpdir(), 'esgz-run-cli-'));
  const fixture = await busyboxImage();
  ref = `${registryAddress()}/h6-cli/busybox:esgz`;
  await pushEstargzImage(
    ref,
    [await readFile(fixture.layers[0]!.tarPath)],
    { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh', '-c', 'echo default cmd'] } },
    { prioritizedFiles: [['bin/busybox', 'etc/passwd', 'etc/group']] },
  );
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('esgz run argv', () => {
  it('keeps the container command away from esgz flag parsing', () => {
    expect(splitRunArgv(['--rm', '--env', 'A=1', 'img', 'c1', 'sh', '-c', 'echo --rm'])).toEqual({
      head: ['--rm', '--env', 'A=1', 'img', 'c1'],
      command: ['sh', '-c', 'echo --rm'],
    });
    expect(splitRunArgv(['img'])).toEqual({ head: ['img'], command: [] });
    expect(splitRunArgv(['img', '--', 'c1', 'ls', '-l'])).toEqual({ head: ['img', 'c1'], command: ['ls', '-l'] });
  });
});

describe('esgz image rpull / run / ls / rm / prune', () => {
  it('pulls lazily, runs the default command and a given one with its exit code, lists, removes and prunes', async () => {
    const root = join(scratch, 'state');
    const pulled = await esgz('image', 'rpull', '--plain-http', '--root', root, '--json', ref);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const report = JSON.parse(pulled.stdout) as { layers: Array<{ kind: string; prefetchedBytes: number }> };
    expect(report.layers[0]).toMatchObject({ kind: 'lazy' });
    expect(report.layers[0]!.prefetchedBytes).toBeGreaterThan(0);

    const dflt = await esgz('run', '--rm', '--root', root, ref);
    expect(dflt.stdout.trim(), dflt.stderr).toBe('default cmd');
    expect(dflt.exitCode).toBe(0);

    const cmd = await esgz(
      'run',
      '--rm',
      '--root',
      root,
      '--env',
      'WHO=esgz',
      ref,
      'c1',
      'sh',
      '-c',
      'echo "hi $WHO"; cat /etc/hostname >/dev/null; exit 3',
    );
    expect(cmd.stdout.trim(), cmd.stderr).toBe('hi esgz');
    expect(cmd.exitCode).toBe(3);
    expect(await readdir(join(root, 'containers'))).toEqual([]);

    // Without --rm the writable layer stays (and the same id cannot be reused).
    const kept = await esgz('run', '--root', root, ref, 'keep1', 'sh', '-c', 'echo x > /made-here');
    expect(kept.exitCode, kept.stderr).toBe(0);
    expect((await readFile(join(root, 'containers', 'keep1', 'u', 'made-here'), 'utf8')).trim()).toBe('x');
    expectOneLineError(await esgz('run', '--root', root, ref, 'keep1', 'true'), 2, /container keep1 already exists/);

    const ls = await esgz('image', 'ls', '--root', root);
    expect(ls.stdout).toContain(ref);
    const lsJson = JSON.parse((await esgz('image', 'ls', '--root', root, '--json')).stdout) as Array<{
      reference: string;
    }>;
    expect(lsJson.map((i) => i.reference)).toEqual([ref]);

    expect((await esgz('image', 'rm', '--root', root, ref)).exitCode).toBe(0);
    const pruned = await esgz('image', 'prune', '--root', root, '--json');
    expect(JSON.parse(pruned.stdout)).toMatchObject({ containers: 0, blobs: 2, layers: 1 });
    expect((await esgz('image', 'ls', '--root', root)).stdout).toContain('no images');
    const mounts = await readFile('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toContain(root);
  });

  it('tears everything down on Ctrl-C: container stopped, FUSE and overlay unmounted, exit 130', async () => {
    const root = join(scratch, 'state-sigint');
    expect((await esgz('image', 'rpull', '--plain-http', '--root', root, ref)).exitCode).toBe(0);
    const child = execa(
      'node',
      [join(repoRoot, 'bin/run.js'), 'run', '--rm', '--root', root, ref, 'sleeper', 'sleep', '60'],
      { reject: false, env: { DEBUG: '' }, stdin: 'ignore' },
    );
    const overlay = join(root, 'containers', 'sleeper', 'm');
    const deadline = Date.now() + 30_000;
    while (!(await readFile('/proc/self/mountinfo', 'utf8')).includes(` ${overlay} `)) {
      if (Date.now() > deadline) throw new Error('the container never started');
      await new Promise((r) => setTimeout(r, 100));
    }
    // Give runc a moment to start the workload, then interrupt as a terminal would.
    await new Promise((r) => setTimeout(r, 1000));
    const sent = Date.now();
    child.kill('SIGINT');
    const result = await child;
    expect(Date.now() - sent).toBeLessThan(15_000);
    expect(result.exitCode, result.stderr).toBe(130);
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(root);
    expect(await readdir(join(root, 'containers'))).toEqual([]);
  });

  it('prune cleans up after an esgz run that was killed with SIGKILL (container, overlay, dead FUSE layers)', async () => {
    const root = join(scratch, 'state-sigkill');
    expect((await esgz('image', 'rpull', '--plain-http', '--root', root, ref)).exitCode).toBe(0);
    const child = execa(
      'node',
      [join(repoRoot, 'bin/run.js'), 'run', '--rm', '--root', root, ref, 'doomed', 'sleep', '60'],
      { reject: false, env: { DEBUG: '' }, stdin: 'ignore' },
    );
    const overlay = join(root, 'containers', 'doomed', 'm');
    const deadline = Date.now() + 30_000;
    while (!(await readFile('/proc/self/mountinfo', 'utf8')).includes(` ${overlay} `)) {
      if (Date.now() > deadline) throw new Error('the container never started');
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1000));
    child.kill('SIGKILL');
    await child;
    // What a crash leaves: the overlay and the FUSE layers are still mounted, the container runs.
    expect(await readFile('/proc/self/mountinfo', 'utf8')).toContain(root);
    expect(
      (await execa('runc', ['--root', join(root, 'containers', 'doomed', 's'), 'list', '--quiet'])).stdout,
    ).toContain('doomed');
    const pruned = await esgz('image', 'prune', '--root', root, '--json');
    expect(pruned.exitCode, pruned.stderr).toBe(0);
    expect(JSON.parse(pruned.stdout)).toMatchObject({ containers: 1, blobs: 0, layers: 0 });
    expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(root);
    expect(await readdir(join(root, 'containers'))).toEqual([]);
    // The image is intact and runs again.
    const again = await esgz('run', '--rm', '--root', root, ref, 'doomed', 'echo', 'back');
    expect(again.stdout.trim(), again.stderr).toBe('back');
  });

  it('gives one-line errors for images that are not pulled or do not exist', async () => {
    const root = join(scratch, 'state-errors');
    expectOneLineError(await esgz('run', '--root', root, ref), 1, /is not pulled into .*esgz image rpull/);
    expectOneLineError(
      await esgz('image', 'rpull', '--plain-http', '--root', root, `${registryAddress()}/h6-cli/missing:nope`),
      1,
      /missing/,
    );
    expectOneLineError(await esgz('image', 'rm', '--root', root, ref), 1, /is not in/);
    expectOneLineError(await esgz('image', 'rpull', '--root', root, 'Not A Reference'), 2, /invalid|reference/i);
  });
});
