// The container sandbox through the built CLI (npm run build first), with real runc: `esgz run`
// of a lazily pulled busybox image and `esgz image optimize`'s profiling run get containerd 2.0's
// capabilities, a seccomp filter that keeps user namespaces and mounts away, a cgroup namespace,
// pids and memory limits, masked paths, and (optimize) a bounded tmpfs for the workload's writes.
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeOciImage } from '../fixtures/oci-image.js';
import { buildTar, charDevice, dir, file, symlink, type TarEntry } from '../fixtures/tar.js';
import { esgz, esgzMeasured, expectOneLineError, HOSTILE_RSS_LIMIT_MIB, repoRoot } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';
import { pushEstargzImage } from '../snapshotter/helpers.js';

/** The defaults esgz documents (spelled out here, so this file also runs against an older build). */
const DEFAULT_PIDS_LIMIT = 1024;
const defaultMemoryLimitBytes = () => Math.min(Math.floor(totalmem() / 2), 4 * 1024 ** 3);

const APPLETS = [
  'sh',
  'cat',
  'echo',
  'sleep',
  'unshare',
  'mount',
  'grep',
  'head',
  'tail',
  'tr',
  'dd',
  'df',
  'ls',
  'true',
];

/** Static busybox with the applets the probes use. */
function busyboxEntries(): TarEntry[] {
  return [
    dir('bin'),
    file('bin/busybox', readFileSync('/bin/busybox'), { mode: 0o755 }),
    ...APPLETS.map((applet) => symlink(`bin/${applet}`, 'busybox')),
    dir('etc'),
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'),
    file('etc/group', 'root:x:0:\n'),
    dir('tmp', { mode: 0o1777 }),
    dir('mnt'),
  ];
}

/** CapEff of containerd 2.0's set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE. */
const CONTAINERD_CAP_EFF = '00000000000005fb';
/** --privileged: every capability this process has. */
const ownCapBnd = () => /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!;

/** The container's own cgroup files (cgroup v1 hierarchy per controller, or v2 unified). */
const PIDS_MAX = 'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max';
const MEMORY_MAX = 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max';

/**
 * One shell script probing the sandbox, printing KEY=VALUE lines: effective capabilities, whether
 * a user namespace plus mount or a plain mount works, the cgroup limits it sees, and that an
 * ordinary workload (write a file, read it back) still runs.
 */
const PROBE = [
  'grep CapEff /proc/self/status',
  `unshare -Urm sh -c 'mount -t tmpfs t /mnt && echo USERNS_MOUNT=yes'; echo "unshare=$?"`,
  `mount -t tmpfs t /mnt && echo MOUNT=yes; echo "mount=$?"`,
  `echo "pids.max=$(${PIDS_MAX})"`,
  `echo "memory.max=$(${MEMORY_MAX})"`,
  'echo "powercap=$(ls -A /sys/devices/virtual/powercap 2>/dev/null | head -c 200)"',
  // The container's root: the overlay, mounted nodev,nosuid (mountinfo field 6: per-mount options).
  'while read -r _ _ _ _ mnt opts _; do [ "$mnt" = / ] && echo "rootopts=$opts"; done < /proc/self/mountinfo',
  'echo normal > /tmp/file && echo "workload=$(cat /tmp/file)"',
].join('\n');

function probeValue(stdout: string, key: string): string | undefined {
  return stdout
    .split('\n')
    .find((l) => l.startsWith(`${key}=`))
    ?.slice(key.length + 1);
}

/** The memory limit as the kernel stores it (rounded down to whole pages). */
const expectedMemoryLimit = () => String(Math.floor(defaultMemoryLimitBytes() / 4096) * 4096);

function expectSandboxed(output: string, stderr: string): void {
  // The workload's own lines only: optimize's report after it echoes the script.
  const stdout = output.split('\nworkload: [')[0]!;
  expect(stdout, stderr).toMatch(new RegExp(`^CapEff:\\s+${CONTAINERD_CAP_EFF}$`, 'm'));
  // The unshare syscall itself is refused (seccomp), not only the mount after it.
  expect(stdout).not.toContain('USERNS_MOUNT=yes');
  expect(stderr).toMatch(/unshare: unshare\(0x[0-9a-f]+\): Operation not permitted/);
  expect(probeValue(stdout, 'unshare')).not.toBe('0');
  expect(stdout).not.toContain('MOUNT=yes');
  expect(probeValue(stdout, 'mount')).not.toBe('0');
  expect(probeValue(stdout, 'pids.max')).toBe(String(DEFAULT_PIDS_LIMIT));
  expect(probeValue(stdout, 'memory.max')).toBe(expectedMemoryLimit());
  // Empty whether the host has RAPL counters (masked by an empty tmpfs) or not.
  expect(probeValue(stdout, 'powercap')).toBe('');
  expect(probeValue(stdout, 'rootopts')?.split(',')).toEqual(expect.arrayContaining(['nodev', 'nosuid']));
  expect(probeValue(stdout, 'workload')).toBe('normal');
}

let scratch: string;
let ref: string;
let root: string;
let layoutDir: string;
let deviceLayoutDir: string;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/run.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  scratch = await mkdtemp(join(tmpdir(), 'esgz-sandbox-'));
  const entries = busyboxEntries();
  ref = `${registryAddress()}/security-sandbox/busybox:esgz`;
  await pushEstargzImage(ref, [await buildTar(entries)], { config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } });
  root = join(scratch, 'state');
  const pulled = await esgz('image', 'rpull', '--plain-http', '--root', root, ref);
  expect(pulled.exitCode, pulled.stderr).toBe(0);
  layoutDir = join(scratch, 'layout');
  await writeOciImage(layoutDir, { layers: [entries], config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] }, tag: 'v1' });
  // A layer shipping the device /dev/null (1:3) under another name: the devices cgroup allows
  // 1:3, so only nodev on the overlay keeps the workload from opening it.
  deviceLayoutDir = join(scratch, 'layout-device');
  await writeOciImage(deviceLayoutDir, {
    layers: [[...entries, charDevice('etc/nulldev', 1, 3, { mode: 0o666 })]],
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
    tag: 'v1',
  });
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** `esgz run --rm` of the pulled image with `script` under sh -c. */
function run(script: string, ...flags: string[]) {
  return esgzMeasured(
    'run',
    '--rm',
    '--root',
    root,
    ...flags,
    ref,
    `sbx-${process.hrtime.bigint()}`,
    'sh',
    '-c',
    script,
  );
}

describe('esgz run sandbox', () => {
  it('gives the workload containerd 2.0 capabilities, no user namespace or mount, pids and memory limits, masked powercap', async () => {
    const result = await run(PROBE);
    expect(result.exitCode, result.stderr).toBe(0);
    expectSandboxed(result.stdout, result.stderr);
    expect(result.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
    expect(result.seconds).toBeLessThan(30);
  });

  it('hands runc a spec with seccomp, the cgroup namespace and /sys/devices/virtual/powercap masked', async () => {
    const id = 'sbx-kept';
    const kept = await esgz('run', '--root', root, ref, id, 'true');
    expect(kept.exitCode, kept.stderr).toBe(0);
    const spec = JSON.parse(await readFile(join(root, 'containers', id, 'b', 'config.json'), 'utf8')) as {
      linux: {
        maskedPaths: string[];
        namespaces: Array<{ type: string }>;
        seccomp?: { defaultAction: string; syscalls: unknown[] };
      };
    };
    expect(spec.linux.maskedPaths).toContain('/sys/devices/virtual/powercap');
    expect(spec.linux.namespaces.map((n) => n.type)).toContain('cgroup');
    expect(spec.linux.seccomp?.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(spec.linux.seccomp?.syscalls.length).toBeGreaterThan(10);
    await rm(join(root, 'containers', id), { recursive: true, force: true });
  });

  it('stops a fork bomb at the pids limit (default and --pids-limit)', async () => {
    // Each background sleep is a process; fork fails once the cgroup is full and the subshell
    // exits non-zero. The shell's builtins (read, echo) report without forking again.
    const bomb = (n: number) =>
      `( i=0; while [ $i -lt ${n} ]; do sleep 120 & i=$((i+1)); done; echo spawned=$i ) 2>/dev/null; echo "loop=$?"; ` +
      'read c < /sys/fs/cgroup/pids/pids.current || read c < /sys/fs/cgroup/pids.current; echo "current=$c"';
    const dflt = await run(bomb(DEFAULT_PIDS_LIMIT + 100));
    expect(dflt.stdout, dflt.stderr).not.toContain('spawned=');
    expect(probeValue(dflt.stdout, 'loop')).not.toBe('0');
    expect(Number(probeValue(dflt.stdout, 'current'))).toBeLessThanOrEqual(DEFAULT_PIDS_LIMIT);
    expect(dflt.seconds).toBeLessThan(30);

    const small = await run(bomb(100), '--pids-limit', '20');
    expect(small.stdout, small.stderr).not.toContain('spawned=');
    expect(Number(probeValue(small.stdout, 'current'))).toBeLessThanOrEqual(20);
    // 0 lifts the limit: the same loop completes.
    const unlimited = await run(bomb(100), '--pids-limit', '0');
    expect(unlimited.stdout, unlimited.stderr).toContain('spawned=100');
  });

  it('OOM-kills a workload over --memory and keeps the rest of the container running', async () => {
    // A 100 MB shell string in a subshell; the subshell is killed (SIGKILL: 137), its parent goes on.
    const hog = `( x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo "survived=\${#x}" ); echo "hog=$?"; echo "memory.max=$(${MEMORY_MAX})"`;
    const result = await run(hog, '--memory', '32m');
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).not.toContain('survived=');
    expect(probeValue(result.stdout, 'hog')).toBe('137');
    expect(probeValue(result.stdout, 'memory.max')).toBe(String(32 * 1024 * 1024));
  });

  it('--privileged lifts capabilities, seccomp and masks (and nothing else)', async () => {
    const result = await run(PROBE, '--privileged');
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^CapEff:\\s+${ownCapBnd()}$`, 'm'));
    expect(result.stdout).toContain('MOUNT=yes');
    expect(probeValue(result.stdout, 'pids.max')).toBe(String(DEFAULT_PIDS_LIMIT));
  });

  it('rejects bad limits with one-line errors', async () => {
    expectOneLineError(
      await esgz('run', '--rm', '--root', root, '--memory', 'lots', ref, 'x', 'true'),
      2,
      /--memory must be a size such as 512m or 2g \(got lots\)/,
    );
    expectOneLineError(
      await esgz('run', '--rm', '--root', root, '--memory', '1m', ref, 'x', 'true'),
      2,
      /memory limit 1048576 bytes is below the minimum of 6 MiB/,
    );
    expect(await readdir(join(root, 'containers'))).toEqual([]);
  });
});

describe('image optimize sandbox', () => {
  const optimize = (script: string, ...flags: string[]) => optimizeImage(layoutDir, script, ...flags);
  const optimizeImage = (layout: string, script: string, ...flags: string[]) =>
    esgzMeasured(
      'image',
      'optimize',
      '--oci',
      '--period',
      '20',
      ...flags,
      '--entrypoint',
      '["/bin/sh","-c"]',
      '--args',
      JSON.stringify([script]),
      `oci:${layout}:v1`,
      `oci:${join(scratch, `out-${process.hrtime.bigint()}`)}:v1`,
    );

  it('profiles the workload in the same sandbox as esgz run', async () => {
    const result = await optimize(PROBE);
    expect(result.exitCode, result.stderr).toBe(0);
    expectSandboxed(result.stdout, result.stderr);
    expect(result.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
    expect(result.seconds).toBeLessThan(30);
  });

  it('keeps a device node shipped in a layer unusable (nodev overlay)', async () => {
    const result = await optimizeImage(deviceLayoutDir, 'head -c 1 /etc/nulldev; echo "dev=$?"');
    expect(result.exitCode, result.stderr).toBe(0);
    expect(probeValue(result.stdout, 'dev')).not.toBe('0');
    expect(result.stderr).toMatch(/\/etc\/nulldev: Permission denied/);
  });

  it("bounds the workload's writes by a tmpfs (1 GiB default, --upper-size): ENOSPC, then a normal conversion", async () => {
    const dflt = await optimize('df -k / | tail -n 1');
    expect(dflt.exitCode, dflt.stderr).toBe(0);
    // overlayfs reports its upper filesystem's size: the bounded tmpfs.
    expect(dflt.stdout).toMatch(/^overlay\s+1048576\s/m);

    const small = await optimize(
      'dd if=/dev/zero of=/big bs=1M count=64; echo "dd=$?"; echo still-running',
      '--upper-size',
      '16m',
    );
    expect(small.exitCode, small.stderr).toBe(0);
    expect(small.stderr).toMatch(/No space left on device/);
    expect(probeValue(small.stdout, 'dd')).not.toBe('0');
    expect(small.stdout).toContain('still-running');
    expect(small.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
  });
});
