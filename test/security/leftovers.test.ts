// Issue #12 item 12: `image optimize` leaves no esgz-* temp dir behind, whether it succeeds, fails,
// is interrupted or is killed (the next run sweeps what a killed one left). Every run gets a
// private TMPDIR and a private stand-in for /dev/shm (ESGZ_TMPFS), so parallel runs do not mix.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectOneLineError, repoRoot } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';
import { busyboxRootfs, writeOciImage } from '../fixtures/oci-image.js';
import { dir, file } from '../fixtures/tar.js';
import { processStartTime } from '../../src/host/process.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-sec-leftovers-'));
let sourceRef: string;

beforeAll(async () => {
  // A second layer the workload never touches, with a file big enough that its blob outlives the
  // unpack's reading (this left esgz-blobs-* behind after a successful optimize).
  const untouched = [dir('opt'), file('opt/big', 'x'.repeat(3_000_000)), file('opt/small', 'y\n')];
  const image = await writeOciImage(join(scratch, 'src'), {
    tag: 'v1',
    layers: [busyboxRootfs(), untouched],
    config: { Cmd: ['/bin/sh'] },
  });
  // From a registry, so optimize also keeps its local blob copies (esgz-blobs-*).
  sourceRef = `${registryAddress()}/sec/leftovers:v1`;
  const push = await execa(
    'node',
    [join(repoRoot, 'bin/run.js'), 'image', 'copy', '--plain-http', `oci:${image.dir}:v1`, sourceRef],
    { reject: false, env: { DEBUG: '' } },
  );
  expect(push.exitCode, push.stderr).toBe(0);
});

afterAll(async () => {
  // A test that failed midway may have left a mount under the scratch dir: never rm -rf over one.
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p) => p?.startsWith(scratch));
  for (const point of mounts.sort().reverse()) await execa('umount', ['-l', point!], { reject: false });
  await rm(scratch, { recursive: true, force: true });
});

interface TempDirs {
  root: string;
  tmp: string;
  shm: string;
}

async function privateTempDirs(name: string): Promise<TempDirs> {
  const tmp = join(scratch, name, 'tmp');
  const shm = join(scratch, name, 'shm');
  await mkdir(tmp, { recursive: true });
  await mkdir(shm, { recursive: true });
  return { root: join(scratch, name), tmp, shm };
}

function optimize(
  dirs: TempDirs,
  target: string,
  workload: string[],
): ResultPromise<{ reject: false; env: Record<string, string>; stdin: 'ignore' }> {
  return execa(
    'node',
    [
      join(repoRoot, 'bin/run.js'),
      'image',
      'optimize',
      '--plain-http',
      '--oci',
      '--period',
      '20',
      '--entrypoint',
      JSON.stringify(workload),
      sourceRef,
      target,
    ],
    { reject: false, env: { DEBUG: '', TMPDIR: dirs.tmp, ESGZ_TMPFS: dirs.shm }, stdin: 'ignore' },
  );
}

async function esgzDirs(dirs: TempDirs): Promise<string[]> {
  const found: string[] = [];
  for (const dir of [dirs.tmp, dirs.shm])
    for (const name of await readdir(dir)) if (name.startsWith('esgz-')) found.push(join(dir, name));
  return found;
}

async function mountsUnder(dir: string): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(`${dir}/`));
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('optimize leaves no temp dirs behind', () => {
  it('after a success', async () => {
    const dirs = await privateTempDirs('success');
    const run = await optimize(dirs, `oci:${join(scratch, 'out-success')}:t`, ['/bin/cat', '/etc/hello']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(await esgzDirs(dirs)).toEqual([]);
  });

  it('after a failure', async () => {
    const dirs = await privateTempDirs('failure');
    const out = join(scratch, 'out-failure');
    const run = await optimize(dirs, `oci:${out}:t`, ['/bin/does-not-exist']);
    expectOneLineError(run, 'nonzero', /does-not-exist/);
    expect(await esgzDirs(dirs)).toEqual([]);
    expect(existsSync(join(out, 'index.json'))).toBe(false);
  });

  it('after SIGTERM while the workload runs', async () => {
    const dirs = await privateTempDirs('sigterm');
    const child = optimize(dirs, `oci:${join(scratch, 'out-sigterm')}:t`, ['/bin/sleep', '30']);
    await waitFor(async () => (await mountsUnder(dirs.root)).length > 0, 'the workload rootfs mount');
    child.kill('SIGTERM');
    const run = await child;
    expect(run.exitCode).not.toBe(0);
    expect(await esgzDirs(dirs)).toEqual([]);
    expect(await mountsUnder(dirs.root)).toEqual([]);
  });

  it('after SIGKILL: the next run sweeps what the killed one left (its container, mount and dirs)', async () => {
    const dirs = await privateTempDirs('sigkill');
    const child = optimize(dirs, `oci:${join(scratch, 'out-sigkill')}:t`, ['/bin/sleep', '30']);
    await waitFor(async () => (await mountsUnder(dirs.root)).length > 0, 'the workload rootfs mount');
    const killedPid = child.pid!;
    child.kill('SIGKILL');
    await child;
    const left = await esgzDirs(dirs);
    // What this issue found: the killed run's dirs (and the rootfs mount) stay behind...
    expect(left.length).toBeGreaterThan(0);
    expect((await mountsUnder(dirs.root)).length).toBeGreaterThan(0);
    for (const dir of left) expect(dir).toContain(`-${killedPid}-`);

    const next = await optimize(dirs, `oci:${join(scratch, 'out-after-kill')}:t`, ['/bin/cat', '/etc/hello']);
    expect(next.exitCode, next.stderr).toBe(0);
    // ...and the next start removes them: nothing of either run remains, and no mount.
    expect(await esgzDirs(dirs)).toEqual([]);
    expect(await mountsUnder(dirs.root)).toEqual([]);
  });

  it('keeps the dirs of a live esgz and of other programs', async () => {
    const dirs = await privateTempDirs('alive');
    const own = join(dirs.tmp, `esgz-opt-${process.pid}-${processStartTime(process.pid)}-abcdef`);
    const foreign = join(dirs.tmp, 'esgz-opt-notours');
    await mkdir(own);
    await mkdir(foreign);
    const run = await optimize(dirs, `oci:${join(scratch, 'out-alive')}:t`, ['/bin/cat', '/etc/hello']);
    expect(run.exitCode, run.stderr).toBe(0);
    expect((await esgzDirs(dirs)).sort()).toEqual([own, foreign].sort());
  });
});
