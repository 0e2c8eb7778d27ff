import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import type { ImageConfig } from '../../src/oci/types.js';
import { unpackLayer } from '../../src/rootfs/unpack.js';
import { parseRecordFile, readPrefetchList, readRecordFile } from '../../src/estargz/priority.js';
import { CLONE_NAMESPACE_FLAGS, NAMESPACE_SYSCALLS, seccompForContainer } from '../../src/runtime/seccomp.js';
import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PATH,
  buildRuntimeSpec,
  defaultMemoryLimitBytes,
  parseByteSize,
  parseCommaList,
  parseJsonArrayFlag,
  parseMountFlag,
  resolveUser,
  type RunOptions,
} from '../../src/runtime/spec.js';
import { buildTar, streamOf } from '../fixtures/tar-stream.js';

let dir: string;
let rootfs: string;
let bundle: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'esgz-spec-'));
  rootfs = join(dir, 'rootfs');
  bundle = join(dir, 'bundle');
  const tar = await buildTar([
    {
      name: 'etc/passwd',
      content: 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n# comment\nbroken line\n',
    },
    { name: 'etc/group', content: 'root:x:0:\nwww:x:33:\nadm:x:4:www,other\nweb:x:80:www\n' },
  ]);
  await unpackLayer(streamOf(tar), rootfs, { whiteouts: 'merge', layerName: 'layer 0' });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const image = (config: ImageConfig['config']): ImageConfig => ({ config, rootfs: { type: 'layers', diff_ids: [] } });

describe('buildRuntimeSpec', () => {
  const table: Array<{
    name: string;
    config: ImageConfig['config'];
    options: RunOptions;
    args?: string[];
    env?: string[];
    cwd?: string;
    user?: object;
  }> = [
    {
      name: 'image Entrypoint + Cmd',
      config: { Entrypoint: ['/app'], Cmd: ['--serve'] },
      options: {},
      args: ['/app', '--serve'],
    },
    {
      name: '--args replaces Cmd only',
      config: { Entrypoint: ['/app'], Cmd: ['--serve'] },
      options: { args: ['--check'] },
      args: ['/app', '--check'],
    },
    {
      name: '--entrypoint keeps the image Cmd',
      config: { Entrypoint: ['/app'], Cmd: ['--serve'] },
      options: { entrypoint: ['/bin/sh', '-c'] },
      args: ['/bin/sh', '-c', '--serve'],
    },
    { name: 'Cmd alone', config: { Cmd: ['/bin/sh'] }, options: {}, args: ['/bin/sh'] },
    { name: 'default PATH and HOME', config: { Cmd: ['x'] }, options: {}, env: [`PATH=${DEFAULT_PATH}`, 'HOME=/root'] },
    {
      name: '--env overrides image Env in place and appends new keys',
      config: { Cmd: ['x'], Env: ['PATH=/bin', 'A=1', 'B=2'] },
      options: { env: ['B=flag', 'C=3'] },
      env: ['PATH=/bin', 'A=1', 'B=flag', 'C=3', 'HOME=/root'],
    },
    { name: 'WorkingDir', config: { Cmd: ['x'], WorkingDir: '/srv' }, options: {}, cwd: '/srv' },
    {
      name: '--cwd overrides WorkingDir',
      config: { Cmd: ['x'], WorkingDir: '/srv' },
      options: { cwd: '/tmp' },
      cwd: '/tmp',
    },
    {
      name: 'User name with supplementary groups',
      config: { Cmd: ['x'], User: 'www' },
      options: {},
      user: { uid: 33, gid: 33, additionalGids: [4, 80] },
    },
    {
      name: '--user user:group names',
      config: { Cmd: ['x'] },
      options: { user: 'www:adm' },
      user: { uid: 33, gid: 4, additionalGids: [80] },
    },
    {
      name: 'numeric uid:gid not in passwd',
      config: { Cmd: ['x'] },
      options: { user: '4242:4343' },
      user: { uid: 4242, gid: 4343 },
    },
    {
      name: 'numeric uid takes the passwd gid',
      config: { Cmd: ['x'] },
      options: { user: '33' },
      user: { uid: 33, gid: 33, additionalGids: [4, 80] },
    },
  ];
  for (const row of table) {
    it(row.name, async () => {
      const spec = await buildRuntimeSpec({
        rootfs,
        config: image(row.config),
        options: row.options,
        bundleDir: bundle,
      });
      if (row.args) expect(spec.process.args).toEqual(row.args);
      if (row.env) expect(spec.process.env).toEqual(row.env);
      if (row.cwd) expect(spec.process.cwd).toBe(row.cwd);
      if (row.user) expect(spec.process.user).toEqual(row.user);
    });
  }

  it('defaults to isolated, unprivileged-by-default security', async () => {
    const spec = await buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'] }), options: {}, bundleDir: bundle });
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.process.capabilities.bounding).toEqual(DEFAULT_CAPABILITIES);
    expect(spec.process.capabilities.bounding).not.toContain('CAP_SYS_ADMIN');
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual([
      'cgroup',
      'ipc',
      'mount',
      'network',
      'pid',
      'uts',
    ]);
    expect(spec.root.path).toBe(rootfs);
    expect(spec.linux.maskedPaths).toContain('/proc/kcore');
  });

  it('is at least as strict as containerd 2.0: its capabilities, masked and read-only paths, plus pids and memory limits', async () => {
    const spec = await buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'] }), options: {}, bundleDir: bundle });
    // containerd pkg/oci/spec.go defaultUnixCaps (v2.0: no MKNOD, NET_RAW, SETFCAP, SYS_CHROOT, AUDIT_WRITE).
    const containerd = [
      'CAP_CHOWN',
      'CAP_DAC_OVERRIDE',
      'CAP_FSETID',
      'CAP_FOWNER',
      'CAP_SETGID',
      'CAP_SETUID',
      'CAP_SETPCAP',
      'CAP_NET_BIND_SERVICE',
      'CAP_KILL',
    ];
    for (const set of ['bounding', 'effective', 'permitted'] as const)
      expect(spec.process.capabilities[set]).toEqual(containerd);
    expect(spec.linux.maskedPaths).toEqual([
      '/proc/acpi',
      '/proc/asound',
      '/proc/kcore',
      '/proc/keys',
      '/proc/latency_stats',
      '/proc/timer_list',
      '/proc/timer_stats',
      '/proc/sched_debug',
      '/sys/firmware',
      '/sys/devices/virtual/powercap',
      '/proc/scsi',
    ]);
    expect(spec.linux.readonlyPaths).toEqual([
      '/proc/bus',
      '/proc/fs',
      '/proc/irq',
      '/proc/sys',
      '/proc/sysrq-trigger',
    ]);
    expect(spec.linux.resources).toEqual({
      devices: [{ allow: false, access: 'rwm' }],
      pids: { limit: 1024 },
      memory: { limit: defaultMemoryLimitBytes() },
    });
    expect(defaultMemoryLimitBytes()).toBeLessThanOrEqual(4 * 1024 ** 3);
    expect(spec.mounts.find((m) => m.destination === '/sys')?.options).toContain('ro');
    expect(spec.mounts.find((m) => m.destination === '/sys/fs/cgroup')?.options).toContain('ro');
  });

  it('filters with the containers/common seccomp profile, and refuses namespaces and mounts as containerd does', async () => {
    const spec = await buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'] }), options: {}, bundleDir: bundle });
    const seccomp = spec.linux.seccomp!;
    expect(seccomp.defaultAction).toBe('SCMP_ACT_ERRNO');
    if (process.arch === 'x64')
      expect(seccomp.architectures).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    const rulesFor = (name: string) => seccomp.syscalls.filter((r) => r.names.includes(name));
    // From the profile: ordinary syscalls allowed, capability-gated ones refused without the capability.
    expect(rulesFor('read')).toEqual([expect.objectContaining({ action: 'SCMP_ACT_ALLOW' })]);
    expect(rulesFor('bpf').map((r) => r.action)).toEqual(['SCMP_ACT_ERRNO']);
    expect(rulesFor('chroot').map((r) => r.action)).toEqual(['SCMP_ACT_ERRNO']); // CAP_SYS_CHROOT is dropped
    // esgz's namespace rule: one EPERM rule each, no allow rule left.
    for (const name of ['unshare', 'setns', 'mount', 'umount2', 'fsopen', 'open_tree']) {
      expect(rulesFor(name), name).toEqual([{ names: NAMESPACE_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: 1 }]);
    }
    expect(rulesFor('clone')).toEqual([
      {
        names: ['clone'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
      },
    ]);
    expect(CLONE_NAMESPACE_FLAGS).toBe(0x7e020000);
    expect(rulesFor('clone3')).toEqual([{ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 }]);
  });

  it('--privileged: every capability esgz has, no seccomp, no masked paths; limits and namespaces stay', async () => {
    const spec = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: { privileged: true, pidsLimit: 0, memoryLimitBytes: 0 },
      bundleDir: bundle,
    });
    expect(spec.process.capabilities.bounding).toContain('CAP_SYS_ADMIN');
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.linux.seccomp).toBeUndefined();
    expect(spec.linux.maskedPaths).toEqual([]);
    expect(spec.linux.readonlyPaths).toEqual([]);
    expect(spec.linux.namespaces.map((n) => n.type)).toContain('cgroup');
    // 0 lifts a limit.
    expect(spec.linux.resources).toEqual({ devices: [{ allow: false, access: 'rwm' }] });
    const limited = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: { pidsLimit: 50, memoryLimitBytes: 64 << 20 },
      bundleDir: bundle,
    });
    expect(limited.linux.resources).toMatchObject({ pids: { limit: 50 }, memory: { limit: 64 << 20 } });
  });

  it('fails cleanly when the seccomp profile is missing or malformed', async () => {
    const missing = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: { seccompProfile: join(dir, 'nope.json') },
      bundleDir: bundle,
    }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(EsgzError);
    expect((missing as Error).message).toMatch(
      /seccomp profile .*nope\.json is missing: install it \(Debian: apt-get install golang-github-containers-common/,
    );
    const bad = join(dir, 'bad-seccomp.json');
    writeFileSync(bad, '{"defaultAction":"SCMP_ACT_ERRNO"}');
    await expect(
      buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'] }), options: { seccompProfile: bad }, bundleDir: bundle }),
    ).rejects.toThrow(/is not a containers\/common profile: no syscalls/);
  });

  it('writes resolv.conf and hosts from the DNS flags and binds them', async () => {
    const spec = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: {
        dnsNameservers: ['1.1.1.1', '9.9.9.9'],
        dnsSearchDomains: ['a.test', 'b.test'],
        dnsOptions: ['ndots:2'],
        addHosts: ['db:10.0.0.5'],
      },
      bundleDir: bundle,
    });
    const resolv = spec.mounts.find((m) => m.destination === '/etc/resolv.conf')!;
    expect(readFileSync(resolv.source!, 'utf8')).toBe(
      'nameserver 1.1.1.1\nnameserver 9.9.9.9\nsearch a.test b.test\noptions ndots:2\n',
    );
    const hosts = spec.mounts.find((m) => m.destination === '/etc/hosts')!;
    expect(readFileSync(hosts.source!, 'utf8')).toMatch(/^127\.0\.0\.1\tlocalhost\n[\s\S]*10\.0\.0\.5\tdb\n$/);
    expect(resolv.options).toEqual(['rbind', 'ro']);
  });

  it('--net-host shares the host network namespace and its resolver files', async () => {
    const spec = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: { netHost: true },
      bundleDir: bundle,
    });
    expect(spec.linux.namespaces.map((n) => n.type)).not.toContain('network');
    expect(spec.mounts.find((m) => m.destination === '/etc/resolv.conf')?.source).toBe('/etc/resolv.conf');
  });

  it('--terminal sets a terminal and TERM', async () => {
    const spec = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: { terminal: true },
      bundleDir: bundle,
    });
    expect(spec.process.terminal).toBe(true);
    expect(spec.process.env).toContain('TERM=xterm');
  });

  it('--env-file is applied before --env', async () => {
    const file = join(dir, 'env');
    writeFileSync(file, '# comment\n\nA=file\nB=file\n');
    const spec = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'], Env: ['PATH=/bin'] }),
      options: { envFile: file, env: ['B=flag'] },
      bundleDir: bundle,
    });
    expect(spec.process.env).toEqual(['PATH=/bin', 'A=file', 'B=flag', 'HOME=/root']);
  });

  const bad: Array<[string, RunOptions, ImageConfig['config'], RegExp]> = [
    ['no command', {}, {}, /the image has no Entrypoint or Cmd: name the command to run/],
    ['relative cwd', { cwd: 'srv' }, { Cmd: ['x'] }, /working directory "srv" must be absolute/],
    ['unknown group', { user: 'www:nogroup' }, { Cmd: ['x'] }, /group "nogroup" is not in the image's \/etc\/group/],
    ['bad add-hosts', { addHosts: ['justahost'] }, { Cmd: ['x'] }, /host entry "justahost" is not host:IP/],
    ['missing env file', { envFile: '/nonexistent/env' }, { Cmd: ['x'] }, /env file \/nonexistent\/env: no such file/],
  ];
  for (const [name, options, config, message] of bad) {
    it(`rejects ${name}`, async () => {
      const err = await buildRuntimeSpec({ rootfs, config: image(config), options, bundleDir: bundle }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(EsgzError);
      expect((err as EsgzError).message).toMatch(message);
    });
  }

  it('reads /etc/passwd inside the rootfs even when it is a symlink to a host path', async () => {
    const hostile = join(dir, 'hostile');
    const outside = join(dir, 'outside-passwd');
    writeFileSync(outside, 'evil:x:0:0::/:/bin/sh\n');
    await unpackLayer(streamOf(await buildTar([{ name: 'etc/passwd', type: 'symlink', linkname: outside }])), hostile, {
      whiteouts: 'merge',
      layerName: 'l',
    });
    await expect(resolveUser(hostile, 'evil')).rejects.toThrow(/user "evil" is not in the image's \/etc\/passwd/);
  });
});

describe('seccompForContainer (containers/common setupSeccomp)', () => {
  const profile = {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 38,
    archMap: [
      { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86'] },
      { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
    ],
    syscalls: [
      { names: ['read', 'mount'], action: 'SCMP_ACT_ALLOW', includes: {}, excludes: {} },
      { names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW', includes: { arches: ['amd64'] } },
      { names: ['ptrace'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_PTRACE'] } },
      { names: ['ptrace'], action: 'SCMP_ACT_ERRNO', errnoRet: 1, excludes: { caps: ['CAP_SYS_PTRACE'] } },
      { names: ['newer'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '5.8' } },
      { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }] },
    ],
  };
  const names = (f: ReturnType<typeof seccompForContainer>) =>
    f.syscalls.map((r) => `${r.names.join(',')}:${r.action}`);

  it('keeps the rules whose includes hold and whose excludes do not, for the arch, capabilities and kernel', () => {
    const amd = seccompForContainer(profile, ['CAP_CHOWN'], 'amd64', '6.1.0-18-amd64');
    expect(amd.architectures).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
    expect(amd.defaultErrnoRet).toBe(38);
    expect(names(amd).slice(0, 5)).toEqual([
      'read:SCMP_ACT_ALLOW',
      'arch_prctl:SCMP_ACT_ALLOW',
      'ptrace:SCMP_ACT_ERRNO',
      'newer:SCMP_ACT_ALLOW',
      'personality:SCMP_ACT_ALLOW',
    ]);
    expect(amd.syscalls.find((r) => r.names[0] === 'personality')?.args).toEqual([
      { index: 0, value: 8, valueTwo: 0, op: 'SCMP_CMP_EQ' },
    ]);
    const arm = seccompForContainer(profile, ['CAP_SYS_PTRACE'], 'arm64', '5.4.0');
    expect(arm.architectures).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    expect(names(arm).slice(0, 3)).toEqual([
      'read:SCMP_ACT_ALLOW',
      'ptrace:SCMP_ACT_ALLOW',
      'personality:SCMP_ACT_ALLOW',
    ]);
  });

  it("takes namespace and mount syscalls out of allow rules unless CAP_SYS_ADMIN, s390 filtering clone's second argument", () => {
    const plain = seccompForContainer(profile, [], 's390x', '6.1');
    expect(plain.syscalls[0]).toEqual({ names: ['read'], action: 'SCMP_ACT_ALLOW' });
    expect(plain.syscalls.find((r) => r.names[0] === 'clone')?.args?.[0]?.index).toBe(1);
    const admin = seccompForContainer(profile, ['CAP_SYS_ADMIN'], 'amd64', '6.1');
    expect(admin.syscalls[0]).toEqual({ names: ['read', 'mount'], action: 'SCMP_ACT_ALLOW' });
    expect(admin.syscalls.some((r) => r.names.includes('clone3'))).toBe(false);
  });
});

describe('flag parsers', () => {
  it('parses sizes as docker does (binary units)', () => {
    expect(parseByteSize('memory', '512m')).toBe(512 * 1024 ** 2);
    expect(parseByteSize('memory', '2G')).toBe(2 * 1024 ** 3);
    expect(parseByteSize('memory', '1.5g')).toBe(1.5 * 1024 ** 3);
    expect(parseByteSize('memory', '4096')).toBe(4096);
    expect(parseByteSize('memory', '64MiB')).toBe(64 * 1024 ** 2);
    expect(parseByteSize('memory', '0')).toBe(0);
    expect(() => parseByteSize('memory', 'lots')).toThrow(/--memory must be a size such as 512m or 2g \(got lots\)/);
    expect(() => parseByteSize('upper-size', '-1g')).toThrow(/--upper-size must be a size/);
  });

  it('parses --mount like ctr-remote', () => {
    expect(parseMountFlag(`type=bind,source=${tmpdir()},destination=/data,options=rbind:ro`)).toEqual({
      type: 'bind',
      source: tmpdir(),
      destination: '/data',
      options: ['rbind', 'ro'],
    });
    expect(parseMountFlag(`type=bind,src=${tmpdir()},dst=/data`)).toEqual({
      type: 'bind',
      source: tmpdir(),
      destination: '/data',
      options: ['rbind'],
    });
    expect(parseMountFlag('type=tmpfs,destination=/run,options=size=1m')).toEqual({
      type: 'tmpfs',
      destination: '/run',
      options: ['size=1m'],
    });
    expect(() => parseMountFlag('type=bind,source=/nonexistent-esgz,destination=/x')).toThrow(
      /source \/nonexistent-esgz does not exist/,
    );
    expect(() => parseMountFlag('type=bind,foo=bar,destination=/x')).toThrow(/option "foo" is not supported/);
    expect(() => parseMountFlag('type=tmpfs,destination=relative')).toThrow(/needs an absolute destination/);
  });

  it('parses JSON array flags and comma lists', () => {
    expect(parseJsonArrayFlag('entrypoint', '["/bin/sh","-c"]')).toEqual(['/bin/sh', '-c']);
    expect(() => parseJsonArrayFlag('args', 'ls -l')).toThrow(/--args must be a JSON array of strings/);
    expect(() => parseJsonArrayFlag('args', '[1]')).toThrow(/--args must be a JSON array/);
    expect(parseCommaList('1.1.1.1, 8.8.8.8')).toEqual(['1.1.1.1', '8.8.8.8']);
    expect(parseCommaList('"a,b",c')).toEqual(['a,b', 'c']);
    expect(parseCommaList(undefined)).toEqual([]);
  });
});

describe('record and prefetch files', () => {
  it('reads ctr-remote records (concatenated objects, first-seen order, no duplicates) and rejects bad ones', async () => {
    const file = join(dir, 'record.json');
    writeFileSync(
      file,
      '{"path":"/bin/busybox","manifestDigest":"sha256:x","layerIndex":0}{"path":"./etc/hello","layerIndex":1}\n\n{"path":"etc/x"}\n{"path":"/bin/busybox"}\n{"manifestDigest":"sha256:x"}\n',
    );
    expect(await readRecordFile(file)).toEqual(['/bin/busybox', './etc/hello', 'etc/x']);
    expect(() => parseRecordFile('{"path":"a"}\n{"path": 3}\n', 'r')).toThrow(
      /r: record at byte 13 has a non-string "path"/,
    );
    expect(() => parseRecordFile('{"path":"a"}\n{"path":"b"', 'r')).toThrow(/r: truncated JSON record at byte 13/);
    expect(() => parseRecordFile('"bin/sh"', 'r')).toThrow(/r: unexpected string at byte 0/);
    expect(() => parseRecordFile('[1]', 'r')).toThrow(/r: record at byte 0 is not an object/);
    await expect(readRecordFile(join(dir, 'missing.json'))).rejects.toThrow(/cannot read record file .*missing\.json/);
  });

  it('reads prefetch lists: paths and globs, comments and blank lines skipped, ".." refused', async () => {
    const file = join(dir, 'prefetch.txt');
    writeFileSync(file, '# files\n/usr/bin/python3\n\nusr/lib/*.so\n');
    const items = await readPrefetchList(file);
    expect(items.map(String)).toEqual(['/usr/bin/python3', 'usr/lib/*.so']);
    writeFileSync(file, 'usr/../../etc/shadow\n');
    await expect(readPrefetchList(file)).rejects.toThrow(/"\.\." is not allowed/);
  });
});
