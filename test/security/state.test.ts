/**
 * The state root against other local users, damaged caches, crashes and concurrent commands
 * (issue #12 items 2, 6, 9 and the run part of 12), through the built CLI against the harness
 * registry with real FUSE, overlayfs and runc:
 *
 * - an unprivileged user (nobody, via setpriv) cannot list the root, read a container's
 *   config.json (its --env secret) or a cached chunk, or execute a setuid file of an unpacked
 *   layer, a FUSE layer, the merged rootfs or a running container's upper dir; every directory
 *   esgz creates there is 0700 and every file 0600 even under umask 0, and an old 0755 root is
 *   closed when it is opened;
 * - a flipped or truncated chunk file is detected, dropped and fetched again; no temp name is ever
 *   visible, a partial temp left by a killed writer is ignored and swept by prune (a live
 *   writer's is not);
 * - image rm + prune leave a running container's layers alone; two runs cannot share an ID; a
 *   failed run leaves no container directory; a killed run is swept by the next run; prune never
 *   deletes through a mount and waits for the state root's lock.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxImage } from '../fixtures/debian.js';
import { esgz, esgzMeasured, expectOneLineError, HOSTILE_RSS_LIMIT_MIB, repoRoot } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';
import { buildTar } from '../fixtures/tar-stream.js';
import { pushEstargzImage } from '../snapshotter/helpers.js';
import { processIdentity, processStartTime } from '../../src/host/process.js';
import { generatedBuffer } from '../fixtures/tar.js';

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
const CHUNK = 64 * 1024;
const SECRET = `SECRET=hunter2-${randomBytes(4).toString('hex')}`;

let scratch: string;
let ref: string;
let blob: Buffer;
let unpackedSuidLayer: string;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a command as nobody (no groups); never throws. */
function asNobody(...argv: string[]) {
  return execa('setpriv', [...NOBODY, '--', ...argv], { reject: false, stdin: 'ignore', all: true });
}

/** What nobody gets trying to execute `path` (a setuid copy of busybox): the shell's message and status. */
async function execAsNobody(path: string): Promise<string> {
  const r = await asNobody('/bin/sh', '-c', '"$1" true 2>&1; echo "status=$?"', 'sh', path);
  return r.all ?? '';
}

/** The built CLI under a given umask (the state root's modes must not depend on it). */
function esgzUmask(umask: string, ...args: string[]): ResultPromise {
  return execa('/bin/sh', ['-c', `umask ${umask}; exec node "$0" "$@"`, join(repoRoot, 'bin/run.js'), ...args], {
    reject: false,
    env: { DEBUG: '' },
    stdin: 'ignore',
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const mountinfo = () => readFile('/proc/self/mountinfo', 'utf8');

/** Every path under `root` (relative), with lstat; does not descend into `skip(rel)` subtrees. */
async function walk(
  root: string,
  skip: (rel: string) => boolean = () => false,
): Promise<Array<{ rel: string; mode: number; dir: boolean }>> {
  const out: Array<{ rel: string; mode: number; dir: boolean }> = [];
  const visit = async (full: string) => {
    const st = await lstat(full);
    const rel = relative(root, full);
    out.push({ rel, mode: st.mode & 0o7777, dir: st.isDirectory() });
    if (st.isDirectory() && !skip(rel)) for (const name of await readdir(full)) await visit(join(full, name));
  };
  await visit(root);
  return out;
}

/** Image content keeps its own modes: unpacked layer trees, a container's upper/work/merged/FUSE dirs, the bundle's hosts files. */
const CONTENT = /^(layers\/sha256\/[0-9a-f]{64}\/fs|containers\/[^/]+\/(u|w|m|l\/\d+|b\/etc))$/;

async function chunkFiles(root: string): Promise<string[]> {
  const dir = join(root, 'chunks', 'sha256');
  const out: string[] = [];
  for (const prefix of await readdir(dir))
    for (const name of await readdir(join(dir, prefix))) out.push(join(dir, prefix, name));
  return out;
}

async function pull(root: string, ...extra: string[]): Promise<void> {
  const r = await esgz('image', 'rpull', '--plain-http', '--root', root, ...extra, ref);
  expect(r.exitCode, r.stderr).toBe(0);
}

function startRun(root: string, id: string, ...command: string[]) {
  return execa('node', [join(repoRoot, 'bin/run.js'), 'run', '--root', root, ref, id, ...command], {
    reject: false,
    env: { DEBUG: '' },
    stdin: 'ignore',
  });
}

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/run.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  scratch = await mkdtemp(join(tmpdir(), 'esgz-sec-state-'));
  // Other users may walk up to the state root: the root itself must be the barrier.
  await chmod(scratch, 0o755);
  const fixture = await busyboxImage();
  const busybox = await readFile(fixture.layers[0]!.tarPath);
  const hostBusybox = await readFile('/bin/busybox');
  blob = generatedBuffer(5 * CHUNK + 321, 'seed-11');
  const suidUnpacked = await buildTar([
    { name: 'opt/', type: 'directory', mode: 0o755 },
    { name: 'opt/suid-unpacked', content: hostBusybox, mode: 0o4755 },
  ]);
  const lazy = await buildTar([
    { name: 'opt/', type: 'directory', mode: 0o755 },
    { name: 'opt/suid-lazy', content: hostBusybox, mode: 0o4755 },
    { name: 'data/', type: 'directory', mode: 0o755 },
    { name: 'data/blob', content: blob, mode: 0o644 },
  ]);
  ref = `${registryAddress()}/sec-state/img:1`;
  const pushed = await pushEstargzImage(
    ref,
    [busybox, suidUnpacked, lazy],
    { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } },
    { plainGzipLayers: [0, 1], chunkSize: CHUNK },
  );
  unpackedSuidLayer = pushed.layerDigests[1]!.slice('sha256:'.length);
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('state root: other local users', () => {
  it('nobody cannot list the root, read a secret config.json or a chunk, or run a setuid file of a layer or an upper dir; modes are 0700/0600 under umask 0', async () => {
    const root = join(scratch, 'private');
    const pulled = await esgzUmask('000', 'image', 'rpull', '--plain-http', '--background-fetch', '--root', root, ref);
    expect(pulled.exitCode, String(pulled.stderr)).toBe(0);
    const run = execa(
      '/bin/sh',
      [
        '-c',
        'umask 000; exec node "$0" "$@"',
        join(repoRoot, 'bin/run.js'),
        'run',
        '--root',
        root,
        '--env',
        SECRET,
        ref,
        'c1',
        'sh',
        '-c',
        'cp /bin/busybox /upper-suid && chmod 4755 /upper-suid && sleep 60',
      ],
      {
        reject: false,
        env: { DEBUG: '' },
        stdin: 'ignore',
      },
    );
    const container = join(root, 'containers', 'c1');
    try {
      await waitFor('the container to write its setuid file', async () =>
        ((await stat(join(container, 'u', 'upper-suid')).catch(() => undefined))?.mode ?? 0) & 0o4000 ? true : false,
      );
      const config = join(container, 'b', 'config.json');
      expect(await readFile(config, 'utf8')).toContain(SECRET);
      const chunk = (await chunkFiles(root))[0]!;

      const ls = await asNobody('ls', root);
      expect(ls.exitCode).not.toBe(0);
      expect(ls.all).toMatch(/Permission denied/);
      for (const path of [config, chunk]) {
        const cat = await asNobody('cat', path);
        expect(cat.exitCode, path).not.toBe(0);
        expect(cat.all).toMatch(/Permission denied/);
      }
      const setuids = [
        join(root, 'layers', 'sha256', unpackedSuidLayer, 'fs', 'opt', 'suid-unpacked'),
        join(container, 'l', '2', 'opt', 'suid-lazy'),
        join(container, 'm', 'opt', 'suid-lazy'),
        join(container, 'u', 'upper-suid'),
        join(container, 'm', 'upper-suid'),
      ];
      for (const path of setuids) {
        expect((await stat(path)).mode & 0o4000, path).toBe(0o4000);
        const got = await execAsNobody(path);
        expect(got, path).toMatch(/Permission denied/);
        expect(got, path).toMatch(/status=126/);
      }

      // umask 0 did not widen anything esgz created: directories 0700, files 0600.
      for (const e of await walk(root, (rel) => CONTENT.test(rel) || rel.endsWith('/s'))) {
        if (CONTENT.test(e.rel) || /\/s\//.test(e.rel)) continue;
        expect(e.mode.toString(8), e.rel).toBe(e.dir ? '700' : '600');
      }
      // The container's "/" keeps the mode every image expects (not 0777 from the umask).
      expect((await stat(join(container, 'u'))).mode & 0o777).toBe(0o755);
    } finally {
      run.kill('SIGINT');
      await run;
    }
    expect(await mountinfo()).not.toContain(root);
  });

  it('closes a state root an older esgz left 0755 when it opens it', async () => {
    const root = join(scratch, 'old-modes');
    await pull(root);
    const skeleton = [
      '',
      'images',
      'blobs',
      'blobs/sha256',
      'layers',
      'layers/sha256',
      'chunks',
      'chunks/sha256',
      'containers',
    ];
    for (const d of skeleton) await chmod(join(root, d), 0o755);
    expect((await asNobody('ls', root)).exitCode).toBe(0);
    const pruned = await esgz('image', 'prune', '--root', root);
    expect(pruned.exitCode, pruned.stderr).toBe(0);
    for (const d of skeleton) expect(((await stat(join(root, d))).mode & 0o777).toString(8), d).toBe('700');
    expect((await asNobody('ls', root)).exitCode).not.toBe(0);
  });
});

describe('chunk cache integrity and crash consistency', () => {
  it("drops a flipped or truncated chunk and fetches it again; ignores and sweeps a killed writer's partial temp file", async () => {
    const root = join(scratch, 'cache');
    await pull(root, '--background-fetch');
    // No temp name is ever visible after the writes.
    expect((await walk(root)).filter((e) => e.rel.includes('.tmp-')).map((e) => e.rel)).toEqual([]);

    const wanted = new Map<string, Buffer>();
    for (let at = 0; at < blob.length; at += CHUNK) {
      const part = blob.subarray(at, at + CHUNK);
      wanted.set(sha256(part), part);
    }
    const files = (await chunkFiles(root)).filter((f) => wanted.get(f.slice(-64))?.length === CHUNK);
    expect(files.length).toBe(5);
    const [flipped, truncated, lost] = files as [string, string, string];
    const bytes = await readFile(flipped);
    bytes[1000] ^= 0x01;
    await writeFile(flipped, bytes);
    await truncate(truncated, CHUNK / 2);
    // A writer killed between write and rename: a partial temp file of a chunk that is not cached.
    const killed = execa('sleep', ['60']);
    const start = processStartTime(killed.pid!);
    killed.kill('SIGKILL');
    await killed.catch(() => undefined);
    const deadTemp = `${lost}.tmp-${killed.pid}.${start}-0badc0de`;
    await writeFile(deadTemp, wanted.get(lost.slice(-64))!.subarray(0, 1000));
    await rm(lost);
    // One of a live writer (this test process): prune must leave it.
    const ownStart = processStartTime(process.pid);
    const liveTemp = `${lost}.tmp-${process.pid}.${ownStart}-0000c0de`;
    await writeFile(liveTemp, 'in progress');

    const ran = await esgzMeasured('run', '--rm', '--root', root, ref, 'reader', 'sha256sum', '/data/blob');
    expect(ran.exitCode, ran.stderr).toBe(0);
    expect(ran.stdout.split(' ')[0]).toBe(sha256(blob));
    expect(ran.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
    expect(ran.seconds).toBeLessThan(30);
    for (const f of [flipped, truncated, lost]) expect(sha256(await readFile(f)), f).toBe(f.slice(-64));

    const pruned = await esgz('image', 'prune', '--root', root, '--json');
    expect(pruned.exitCode, pruned.stderr).toBe(0);
    expect(existsSync(deadTemp)).toBe(false);
    expect(existsSync(liveTemp)).toBe(true);
    await rm(liveTemp);
  });
});

describe('races on one state root', () => {
  it('image rm + prune leave the layers of a running container alone; the next prune takes them', async () => {
    const root = join(scratch, 'rm-prune');
    await pull(root, '--background-fetch');
    const run = startRun(
      root,
      'user',
      'sh',
      '-c',
      'while [ ! -e /go ]; do sleep 0.1; done; cat /etc/hello; sha256sum /data/blob',
    );
    const container = join(root, 'containers', 'user');
    try {
      await waitFor('the overlay', async () => (await mountinfo()).includes(` ${container}/m `));
      expect((await esgz('image', 'rm', '--root', root, ref)).exitCode).toBe(0);
      const pruned = await esgz('image', 'prune', '--root', root, '--json');
      expect(pruned.exitCode, pruned.stderr).toBe(0);
      expect(JSON.parse(pruned.stdout)).toMatchObject({ layers: 0, chunks: 0, blobs: 0 });
      // Through the merged dir: overlayfs may not see a file put straight into its upper dir.
      await writeFile(join(container, 'm', 'go'), '');
    } finally {
      const done = await run;
      expect(done.exitCode, done.stderr).toBe(0);
      expect(done.stdout).toBe(`hello from the esgz busybox fixture\n${sha256(blob)}  /data/blob`);
    }
    const after = await esgz('image', 'prune', '--root', root, '--json');
    expect(JSON.parse(after.stdout)).toMatchObject({ layers: 3, blobs: 2 });
    expect(JSON.parse(after.stdout).chunks).toBeGreaterThan(5);
  });

  it('lets only one of several concurrent runs have a container ID', async () => {
    const root = join(scratch, 'same-id');
    await pull(root);
    const runs = await Promise.all(
      [0, 1, 2].map(() =>
        execa('node', [join(repoRoot, 'bin/run.js'), 'run', '--rm', '--root', root, ref, 'same', 'sleep', '3'], {
          reject: false,
          env: { DEBUG: '' },
          stdin: 'ignore',
        }),
      ),
    );
    expect(runs.filter((r) => r.exitCode === 0)).toHaveLength(1);
    for (const r of runs.filter((x) => x.exitCode !== 0)) expectOneLineError(r, 2, /container same already exists/);
    expect(await readdir(join(root, 'containers'))).toEqual([]);
  });

  it('leaves no container directory or mount after a failed run, even without --rm', async () => {
    const root = join(scratch, 'failed');
    await pull(root);
    expectOneLineError(
      await esgz('run', '--root', root, ref, 'failer', '/no/such/command'),
      'nonzero',
      /no\/such\/command/,
    );
    expect(await readdir(join(root, 'containers'))).toEqual([]);
    expect(await mountinfo()).not.toContain(root);
  });

  it('the next run sweeps what a killed run left (container, overlay, dead FUSE layers)', async () => {
    const root = join(scratch, 'killed');
    await pull(root);
    const run = startRun(root, 'doomed', 'sleep', '60');
    await waitFor('the overlay', async () =>
      (await mountinfo()).includes(` ${join(root, 'containers', 'doomed', 'm')} `),
    );
    await sleep(500);
    run.kill('SIGKILL');
    await run;
    expect(await mountinfo()).toContain(root);
    const next = await esgz('run', '--rm', '--root', root, ref, 'next', 'echo', 'back');
    expect(next.stdout.trim(), next.stderr).toBe('back');
    expect(await readdir(join(root, 'containers'))).toEqual([]);
    expect(await mountinfo()).not.toContain(root);
  });

  it('prune never deletes through a mount under an unused layer', async () => {
    const root = join(scratch, 'mounted');
    await pull(root);
    const decoy = join(scratch, 'decoy');
    await mkdir(decoy);
    await writeFile(join(decoy, 'precious'), 'keep me');
    const target = join(root, 'layers', 'sha256', unpackedSuidLayer, 'fs', 'mnt');
    await mkdir(target);
    await execa('mount', ['--bind', decoy, target]);
    try {
      expect((await esgz('image', 'rm', '--root', root, ref)).exitCode).toBe(0);
      const pruned = await esgz('image', 'prune', '--root', root, '--json');
      expect(pruned.exitCode, pruned.stderr).toBe(0);
      expect(pruned.stderr).toMatch(/not removing [\s\S]* is still mounted/);
      expect(await readFile(join(decoy, 'precious'), 'utf8')).toBe('keep me');
      expect(JSON.parse(pruned.stdout)).toMatchObject({ layers: 2 });
    } finally {
      await execa('umount', [target], { reject: false });
    }
    const again = await esgz('image', 'prune', '--root', root, '--json');
    expect(JSON.parse(again.stdout)).toMatchObject({ layers: 1 });
    expect(await readFile(join(decoy, 'precious'), 'utf8')).toBe('keep me');
  });

  it('prune waits for the state root lock of a live process and breaks that of a dead one', async () => {
    const root = join(scratch, 'locked');
    await pull(root);
    const holder = execa('sleep', ['60']);
    const identity = async (pid: number) => processIdentity(pid);
    await mkdir(join(root, 'lock'));
    await writeFile(join(root, 'lock', 'owner'), `${await identity(holder.pid!)}\ntest\n`);
    const prune = esgz('image', 'prune', '--root', root);
    let finished = false;
    void prune.finally(() => (finished = true));
    await sleep(3000);
    expect(finished).toBe(false);
    holder.kill('SIGKILL');
    await holder.catch(() => undefined);
    const r = await prune;
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(root, 'lock'))).toBe(false);
  });
});
