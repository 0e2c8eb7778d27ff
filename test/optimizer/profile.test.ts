import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { profileWorkload, recordEntriesOf, type ProfileWorkloadOptions } from '../../src/optimizer/optimize.js';
import { readRecordFile } from '../../src/estargz/priority.js';
import { writeRecordFile } from '../../src/optimizer/record.js';
import { listContainers } from '../../src/runtime/runc.js';
import { parseMountFlag } from '../../src/runtime/spec.js';
import type { LayerTar } from '../../src/rootfs/overlay.js';
import { busyboxConfig, busyboxLayers } from '../fixtures/busybox-layers.js';
import { hasHostPython, hostFilesEntries, pythonStartupFiles } from '../fixtures/host-files.js';
import { buildTar, streamOf } from '../fixtures/tar-stream.js';

let tempRoot: string;
let layers: LayerTar[];
let containersBefore: string[];

beforeAll(async () => {
  tempRoot = mkdtempSync(join(tmpdir(), 'esgz-profile-'));
  layers = await busyboxLayers();
  containersBefore = await listContainers();
});
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }));

/** After every run: no mount under our temp root, no runc container left, no temp dir left. */
afterEach(async () => {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  expect(mounts).not.toContain(tempRoot);
  expect(readdirSync(tempRoot)).toEqual([]);
  expect(await listContainers()).toEqual(containersBefore);
  // runc's per-container cgroups (named after the container ids) are gone too. Only this test's
  // ids are checked: other jobs on the machine run containers of their own meanwhile.
  for (const hierarchy of ['pids', 'memory', 'unified']) {
    const dir = join('/sys/fs/cgroup', hierarchy);
    if (existsSync(dir)) expect(readdirSync(dir).filter((n) => containerIds.includes(n))).toEqual([]);
  }
  containerIds.length = 0;
});

/** Container ids the current test's workloads ran under. */
const containerIds: string[] = [];

async function profile(overrides: Partial<ProfileWorkloadOptions>) {
  const out = new PassThrough();
  let stdout = '';
  out.on('data', (c: Buffer) => (stdout += c.toString()));
  const err = new PassThrough();
  let stderr = '';
  err.on('data', (c: Buffer) => (stderr += c.toString()));
  const warnings: string[] = [];
  const result = await profileWorkload({
    layers,
    config: busyboxConfig(),
    run: {},
    periodSeconds: 20,
    stdout: out,
    stderr: err,
    tempRoot,
    onWarning: (m) => warnings.push(m),
    onContainer: (id) => containerIds.push(id),
    ...overrides,
  });
  return { result, stdout, stderr, warnings };
}

const catAndLs = { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello; ls /bin'] };
/** What runc reads in the container before it execs the entrypoint, in that order (both in layer 0). */
const RUNTIME_SETUP = ['etc/passwd', 'etc/group'];
/** The prioritized files of the cat-and-ls workload: its own in access order, then runc's setup reads. */
const CAT_AND_LS_FILES = ['bin/busybox', 'etc/hello', ...RUNTIME_SETUP];

describe('profileWorkload on a busybox image under runc (overlayfs)', () => {
  it("records bin/busybox then etc/hello, then runc's setup reads etc/passwd and etc/group, mapped to the layers that provide them", async () => {
    const { result, stdout } = await profile({ run: catAndLs });
    expect(stdout).toContain('hello from layer 1');
    expect(stdout.split('\n')).toContain('busybox');
    expect(result.rootfsMode).toBe('overlay');
    expect(result.stopReason).toBe('exited');
    expect(result.exitCode).toBe(0);
    expect(result.accessed).toEqual(CAT_AND_LS_FILES);
    expect(result.files.map((f) => [f.path, f.layerIndex, f.kind, f.origin])).toEqual([
      ['bin/busybox', 0, 'exec', 'workload'],
      ['etc/hello', 1, 'open', 'workload'],
      ['etc/passwd', 0, 'open', 'runtime'],
      ['etc/group', 0, 'open', 'runtime'],
    ]);
    expect(result.runtimeFiles).toBe(2);
    // Each layer's prioritized list: the workload's files first, the runtime's after them.
    expect(result.perLayer).toEqual([['bin/busybox', 'etc/passwd', 'etc/group'], ['etc/hello']]);
    // One container ran; afterEach checks its state and cgroups are gone.
    expect(containerIds).toEqual([expect.stringMatching(/^esgz-[0-9a-f]{12}$/)]);
  });

  it('keeps a setup file the workload opens itself at its workload position, once', async () => {
    const { result, stdout } = await profile({
      run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/group > /dev/null; cat /etc/hello'] },
    });
    expect(stdout).toContain('hello from layer 1');
    expect(result.files.map((f) => [f.path, f.layerIndex, f.origin])).toEqual([
      ['bin/busybox', 0, 'workload'],
      ['etc/group', 0, 'workload'],
      ['etc/hello', 1, 'workload'],
      ['etc/passwd', 0, 'runtime'],
    ]);
    expect(result.runtimeFiles).toBe(1);
    expect(result.perLayer).toEqual([['bin/busybox', 'etc/group', 'etc/passwd'], ['etc/hello']]);
  });

  it('gives the same trace every time', async () => {
    const a = await profile({ run: catAndLs });
    const b = await profile({ run: catAndLs });
    expect(b.result.files).toEqual(a.result.files);
  });

  it('gives the same trace from a merged copy when overlayfs is not used', async () => {
    const { result } = await profile({ run: catAndLs, rootfsMode: 'merged' });
    expect(result.rootfsMode).toBe('merged');
    expect(result.accessed).toEqual(CAT_AND_LS_FILES);
    expect(result.files.map((f) => f.origin)).toEqual(['workload', 'workload', 'runtime', 'runtime']);
    expect(result.perLayer).toEqual([['bin/busybox', 'etc/passwd', 'etc/group'], ['etc/hello']]);
  });

  it('does not see files hidden by a whiteout, and skips files the workload creates', async () => {
    const { result, stderr } = await profile({
      run: {
        entrypoint: ['/bin/sh', '-c'],
        args: ['cat /etc/removed; echo x > /tmp/new; cat /tmp/new; cat /etc/hello'],
      },
    });
    expect(stderr).toMatch(/can't open '\/etc\/removed'/);
    expect(result.accessed).toEqual(CAT_AND_LS_FILES);
    expect(result.notInImage).toBe(1);
  });

  it('runs as the image user resolved from /etc/passwd and /etc/group, with env, cwd and hosts', async () => {
    const { stdout } = await profile({
      config: busyboxConfig({ User: 'alice', WorkingDir: '/tmp', Env: ['PATH=/bin', 'FOO=image'] }),
      run: {
        entrypoint: ['/bin/sh', '-c'],
        args: ['id; pwd; echo FOO=$FOO; cat /etc/hosts'],
        env: ['FOO=flag'],
        addHosts: ['registry.test:10.1.2.3'],
      },
    });
    expect(stdout).toContain('uid=1000(alice) gid=1000(alice) groups=50(staff)');
    expect(stdout).toContain('/tmp\n');
    expect(stdout).toContain('FOO=flag\n');
    expect(stdout).toContain('10.1.2.3\tregistry.test');
  });

  it('has only loopback networking by default', async () => {
    const { stdout } = await profile({ run: { entrypoint: ['/bin/sh', '-c'], args: ['ls /sys/class/net'] } });
    expect(stdout.trim().split('\n')).toEqual(['lo']);
  });

  it('writes and reads back the trace in ctr-remote record format', async () => {
    const { result } = await profile({ run: catAndLs });
    const file = join(tmpdir(), `esgz-record-${process.pid}.json`);
    try {
      await writeRecordFile(file, recordEntriesOf(result, 'sha256:' + 'a'.repeat(64)));
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      // The prioritized order: the workload's files, then runc's setup reads.
      expect(lines).toEqual([
        { path: 'bin/busybox', manifestDigest: 'sha256:' + 'a'.repeat(64), layerIndex: 0 },
        { path: 'etc/hello', manifestDigest: 'sha256:' + 'a'.repeat(64), layerIndex: 1 },
        { path: 'etc/passwd', manifestDigest: 'sha256:' + 'a'.repeat(64), layerIndex: 0 },
        { path: 'etc/group', manifestDigest: 'sha256:' + 'a'.repeat(64), layerIndex: 0 },
      ]);
      // What convert --estargz-record-in reads back from it: the paths, in that order.
      expect(await readRecordFile(file)).toEqual(lines.map((l) => l.path));
    } finally {
      rmSync(file, { force: true });
    }
  });
});

describe('profileWorkload stops and tears down', () => {
  it('stops a workload that hangs after the period', async () => {
    const started = Date.now();
    const { result } = await profile({
      run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello; sleep 600'] },
      periodSeconds: 1,
    });
    expect(result.stopReason).toBe('period');
    expect(result.exitCode).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(result.accessed).toEqual(CAT_AND_LS_FILES);
  });

  it('stops when the watched line appears on stdout', async () => {
    const { result, stdout } = await profile({
      run: { entrypoint: ['/bin/sh', '-c'], args: ['echo starting; echo server is READY now; sleep 600'] },
      waitOnLine: 'is READY',
      periodSeconds: 60,
    });
    expect(result.stopReason).toBe('line');
    expect(stdout).toContain('server is READY now');
  });

  it('stops on Ctrl-C with --wait-on-signal and keeps the trace', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 1500);
    const { result } = await profile({
      run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /etc/hello; sleep 600'] },
      waitOnSignal: true,
      signal: controller.signal,
    });
    expect(result.stopReason).toBe('signal');
    expect(result.accessed).toEqual(CAT_AND_LS_FILES);
  });

  it('turns Ctrl-C without --wait-on-signal into an INTERRUPTED error', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 1500);
    const err = await profile({
      run: { entrypoint: ['/bin/sh', '-c'], args: ['sleep 600'] },
      signal: controller.signal,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EsgzError);
    expect((err as EsgzError).code).toBe('INTERRUPTED');
  });

  it('reports a workload that exits at once with an error code', async () => {
    const { result, warnings } = await profile({ run: { entrypoint: ['/bin/sh', '-c'], args: ['exit 3'] } });
    expect(result.exitCode).toBe(3);
    expect(warnings.join('\n')).toMatch(/exited with code 3/);
  });
});

describe('profileWorkload bad input', () => {
  it('names an entrypoint that does not exist', async () => {
    const err = await profile({ run: { entrypoint: ['/bin/nope'] } }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('RUNTIME');
    expect((err as EsgzError).message).toBe('entrypoint "/bin/nope" does not exist in the image or is not executable');
  });

  it('refuses an image for another architecture before unpacking anything', async () => {
    const err = await profile({ config: { ...busyboxConfig(), architecture: 'riscv64' } }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('UNSUPPORTED');
    expect((err as EsgzError).message).toMatch(/image is for linux\/riscv64 but this machine is linux\//);
  });

  it('names a user the image does not have', async () => {
    const err = await profile({ run: { ...catAndLs, user: 'mallory' } }).catch((e: unknown) => e);
    expect((err as EsgzError).message).toBe('user "mallory" is not in the image\'s /etc/passwd');
  });

  it("passes runc's own start failure on as one line", async () => {
    const err = await profile({
      run: { ...catAndLs, mounts: [{ destination: '/x', type: 'nosuchfs', source: 'none' }] },
    }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('RUNTIME');
    expect((err as EsgzError).message).toMatch(/^runc could not start the container: .*no such device/);
  });

  it('says when runc is missing', async () => {
    const err = await profile({ run: catAndLs, runc: '/nonexistent/runc' }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('RUNTIME');
    expect((err as EsgzError).message).toMatch(/^runc is not installed \(looked for "\/nonexistent\/runc"\)/);
  });

  it('contains a layer whose symlinks point at host paths, through unpack and run', async () => {
    const canaryDir = mkdtempSync(join(tmpdir(), 'esgz-canary-'));
    writeFileSync(join(canaryDir, 'shadow'), 'host secret\n');
    try {
      const hostile = await busyboxLayers([
        [
          { name: 'etc/shadow', type: 'symlink', linkname: join(canaryDir, 'shadow') },
          { name: 'escape', type: 'symlink', linkname: canaryDir },
          { name: 'escape/planted', content: 'contained' },
        ],
      ]);
      const { stdout, stderr } = await profile({
        layers: hostile,
        run: {
          entrypoint: ['/bin/sh', '-c'],
          args: ['cat /etc/shadow; echo overwritten > /etc/shadow; echo new > /escape/new; cat /escape/planted'],
        },
      });
      expect(stdout).not.toContain('host secret');
      expect(stdout).toContain('contained');
      expect(stderr).toMatch(/can't open '\/etc\/shadow'/);
      expect(readdirSync(canaryDir)).toEqual(['shadow']);
      expect(readFileSync(join(canaryDir, 'shadow'), 'utf8')).toBe('host secret\n');
    } finally {
      rmSync(canaryDir, { recursive: true, force: true });
    }
  });

  it('rejects a hostile layer without touching the host and cleans up', async () => {
    const canaryDir = mkdtempSync(join(tmpdir(), 'esgz-canary-'));
    try {
      const hostile = await busyboxLayers([
        [
          { name: 'etc/shadow', type: 'symlink', linkname: join(canaryDir, 'shadow') },
          { name: 'etc/shadow', content: 'replaced, not followed' },
          { name: 'escape', type: 'symlink', linkname: canaryDir },
          { name: 'escape/planted', content: 'contained' },
          { name: '../../../../../../../../' + canaryDir.slice(1) + '/dotdot', content: 'x' },
        ],
      ]);
      const err = await profile({ layers: hostile, run: catAndLs }).catch((e: unknown) => e);
      expect((err as EsgzError).code).toBe('UNSAFE_PATH');
      expect((err as EsgzError).message).toMatch(/^layer 2: entry ".*dotdot" escapes the root$/);
      expect(readdirSync(canaryDir)).toEqual([]);
    } finally {
      rmSync(canaryDir, { recursive: true, force: true });
    }
  });
});

describe('profileWorkload on a Debian python image built from this host', () => {
  it.skipIf(!hasHostPython())(
    'prioritizes the interpreter, the loader, libc and friends, ld.so.cache and encodings',
    async () => {
      const files = pythonStartupFiles();
      const [base, python] = [files.filter((f) => !f.includes('python')), files.filter((f) => f.includes('python'))];
      const tars = await Promise.all([hostFilesEntries(base), hostFilesEntries(python)].map((e) => buildTar(e)));
      const pyLayers = tars.map((tar, i) => ({ name: `layer ${i}`, open: async () => streamOf(tar) }));
      const { result, stdout } = await profile({
        layers: pyLayers,
        config: {
          architecture: 'amd64',
          os: 'linux',
          config: { Env: ['PATH=/usr/bin:/bin'] },
          rootfs: { type: 'layers', diff_ids: [] },
        },
        run: { entrypoint: ['python3', '-c', 'print(1)'] },
      });
      expect(stdout).toBe('1\n');
      expect(result.exitCode).toBe(0);
      const accessed = result.accessed;
      // The interpreter is executed first, then the kernel maps the dynamic loader.
      expect(accessed[0]).toBe('usr/bin/python3.11');
      expect(result.files[0]!.kind).toBe('exec');
      // The trace names the files the kernel opened, after symlinks: the host's realpath is the oracle.
      const real = (p: string) => realpathSync(p).slice(1);
      const libc = real('/lib/x86_64-linux-gnu/libc.so.6');
      for (const expected of [
        real('/lib64/ld-linux-x86-64.so.2'),
        'etc/ld.so.cache',
        libc,
        real('/lib/x86_64-linux-gnu/libm.so.6'),
        real('/lib/x86_64-linux-gnu/libz.so.1'),
        real('/lib/x86_64-linux-gnu/libexpat.so.1'),
      ]) {
        expect(accessed).toContain(expected);
        expect(result.files.find((f) => f.path === expected)!.layerIndex).toBe(0);
      }
      expect(accessed.indexOf('etc/ld.so.cache')).toBeLessThan(accessed.indexOf(libc));
      expect(accessed.some((p) => p.startsWith('usr/lib/python3.11/encodings/'))).toBe(true);
      expect(result.perLayer[1]![0]).toBe('usr/bin/python3.11');
    },
  );
});

describe('profileWorkload options', () => {
  it('--mount binds a host directory; files read from it are not image files and are not recorded', async () => {
    const hostDir = mkdtempSync(join(tmpdir(), 'esgz-bind-'));
    try {
      writeFileSync(join(hostDir, 'data.txt'), 'from the host\n');
      const { result, stdout } = await profile({
        run: {
          entrypoint: ['/bin/sh', '-c'],
          args: ['cat /data/data.txt; cat /etc/hello'],
          mounts: [parseMountFlag(`type=bind,source=${hostDir},destination=/data,options=rbind:ro`)],
        },
      });
      expect(stdout).toContain('from the host');
      expect(result.accessed).toEqual(CAT_AND_LS_FILES);
    } finally {
      rmSync(hostDir, { recursive: true, force: true });
    }
  });

  it('--net-host shares the host network', async () => {
    // Other jobs on this machine may add or remove interfaces meanwhile: compare with what the
    // host had both before and after.
    const before = readdirSync('/sys/class/net');
    const { stdout } = await profile({
      run: { entrypoint: ['/bin/sh', '-c'], args: ['ls /sys/class/net'], netHost: true },
    });
    const after = readdirSync('/sys/class/net');
    const seen = stdout.trim().split('\n');
    expect(seen).toEqual(expect.arrayContaining(before.filter((n) => after.includes(n))));
    expect(seen.every((n) => before.includes(n) || after.includes(n))).toBe(true);
    expect(seen.length).toBeGreaterThan(1);
  });

  it("stacks 127 layers (Docker's maximum) in one overlay mount and maps files to their layers", async () => {
    const extra = Array.from({ length: 125 }, (_, i) => [{ name: `data/file-${i}`, content: `layer ${i + 2}\n` }]);
    const many = await busyboxLayers(extra);
    expect(many).toHaveLength(127);
    const { result, stdout } = await profile({
      layers: many,
      run: { entrypoint: ['/bin/sh', '-c'], args: ['cat /data/file-124 /data/file-0 /etc/hello'] },
    });
    expect(stdout).toBe('layer 126\nlayer 2\nhello from layer 1\n');
    expect(result.rootfsMode).toBe('overlay');
    expect(result.files.map((f) => [f.path, f.layerIndex])).toEqual([
      ['bin/busybox', 0],
      ['data/file-124', 126],
      ['data/file-0', 2],
      ['etc/hello', 1],
      ['etc/passwd', 0],
      ['etc/group', 0],
    ]);
  });

  it('says clearly when the tracer program it is given is not there', async () => {
    const err = await profile({ run: catAndLs, tracerBinary: '/nonexistent/esgz-fanotify' }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('UNSUPPORTED');
    expect((err as EsgzError).message).toBe('the fanotify tracer /nonexistent/esgz-fanotify is not an executable file');
  });
});
