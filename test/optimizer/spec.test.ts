import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import type { ImageConfig } from '../../src/image/types.js';
import { unpackLayer } from '../../src/optimizer/unpack.js';
import { parseRecordFile, readPrefetchList, readRecordFile } from '../../src/estargz/priority.js';
import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PATH,
  buildRuntimeSpec,
  parseCommaList,
  parseJsonArrayFlag,
  parseMountFlag,
  resolveUser,
  type RunOptions,
} from '../../src/runtime/spec.js';
import { buildTar, streamOf } from './tar-helpers.js';

let dir: string;
let rootfs: string;
let bundle: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'esgz-spec-'));
  rootfs = join(dir, 'rootfs');
  bundle = join(dir, 'bundle');
  const tar = await buildTar([
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n# comment\nbroken line\n' },
    { name: 'etc/group', content: 'root:x:0:\nwww:x:33:\nadm:x:4:www,other\nweb:x:80:www\n' },
  ]);
  await unpackLayer(streamOf(tar), rootfs, { whiteouts: 'merge', layerName: 'layer 0' });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const image = (config: ImageConfig['config']): ImageConfig => ({ config, rootfs: { type: 'layers', diff_ids: [] } });

describe('buildRuntimeSpec', () => {
  const table: Array<{ name: string; config: ImageConfig['config']; options: RunOptions; args?: string[]; env?: string[]; cwd?: string; user?: object }> = [
    { name: 'image Entrypoint + Cmd', config: { Entrypoint: ['/app'], Cmd: ['--serve'] }, options: {}, args: ['/app', '--serve'] },
    { name: '--args replaces Cmd only', config: { Entrypoint: ['/app'], Cmd: ['--serve'] }, options: { args: ['--check'] }, args: ['/app', '--check'] },
    { name: '--entrypoint keeps the image Cmd', config: { Entrypoint: ['/app'], Cmd: ['--serve'] }, options: { entrypoint: ['/bin/sh', '-c'] }, args: ['/bin/sh', '-c', '--serve'] },
    { name: 'Cmd alone', config: { Cmd: ['/bin/sh'] }, options: {}, args: ['/bin/sh'] },
    { name: 'default PATH and HOME', config: { Cmd: ['x'] }, options: {}, env: [`PATH=${DEFAULT_PATH}`, 'HOME=/root'] },
    {
      name: '--env overrides image Env in place and appends new keys',
      config: { Cmd: ['x'], Env: ['PATH=/bin', 'A=1', 'B=2'] },
      options: { env: ['B=flag', 'C=3'] },
      env: ['PATH=/bin', 'A=1', 'B=flag', 'C=3', 'HOME=/root'],
    },
    { name: 'WorkingDir', config: { Cmd: ['x'], WorkingDir: '/srv' }, options: {}, cwd: '/srv' },
    { name: '--cwd overrides WorkingDir', config: { Cmd: ['x'], WorkingDir: '/srv' }, options: { cwd: '/tmp' }, cwd: '/tmp' },
    { name: 'User name with supplementary groups', config: { Cmd: ['x'], User: 'www' }, options: {}, user: { uid: 33, gid: 33, additionalGids: [4, 80] } },
    { name: '--user user:group names', config: { Cmd: ['x'] }, options: { user: 'www:adm' }, user: { uid: 33, gid: 4, additionalGids: [80] } },
    { name: 'numeric uid:gid not in passwd', config: { Cmd: ['x'] }, options: { user: '4242:4343' }, user: { uid: 4242, gid: 4343 } },
    { name: 'numeric uid takes the passwd gid', config: { Cmd: ['x'] }, options: { user: '33' }, user: { uid: 33, gid: 33, additionalGids: [4, 80] } },
  ];
  for (const row of table) {
    it(row.name, async () => {
      const spec = await buildRuntimeSpec({ rootfs, config: image(row.config), options: row.options, bundleDir: bundle });
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
    expect(spec.linux.namespaces.map((n) => n.type).sort()).toEqual(['ipc', 'mount', 'network', 'pid', 'uts']);
    expect(spec.root.path).toBe(rootfs);
    expect(spec.linux.maskedPaths).toContain('/proc/kcore');
  });

  it('writes resolv.conf and hosts from the DNS flags and binds them', async () => {
    const spec = await buildRuntimeSpec({
      rootfs,
      config: image({ Cmd: ['x'] }),
      options: { dnsNameservers: ['1.1.1.1', '9.9.9.9'], dnsSearchDomains: ['a.test', 'b.test'], dnsOptions: ['ndots:2'], addHosts: ['db:10.0.0.5'] },
      bundleDir: bundle,
    });
    const resolv = spec.mounts.find((m) => m.destination === '/etc/resolv.conf')!;
    expect(readFileSync(resolv.source!, 'utf8')).toBe('nameserver 1.1.1.1\nnameserver 9.9.9.9\nsearch a.test b.test\noptions ndots:2\n');
    const hosts = spec.mounts.find((m) => m.destination === '/etc/hosts')!;
    expect(readFileSync(hosts.source!, 'utf8')).toMatch(/^127\.0\.0\.1\tlocalhost\n[\s\S]*10\.0\.0\.5\tdb\n$/);
    expect(resolv.options).toEqual(['rbind', 'ro']);
  });

  it('--net-host shares the host network namespace and its resolver files', async () => {
    const spec = await buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'] }), options: { netHost: true }, bundleDir: bundle });
    expect(spec.linux.namespaces.map((n) => n.type)).not.toContain('network');
    expect(spec.mounts.find((m) => m.destination === '/etc/resolv.conf')?.source).toBe('/etc/resolv.conf');
  });

  it('--terminal sets a terminal and TERM', async () => {
    const spec = await buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'] }), options: { terminal: true }, bundleDir: bundle });
    expect(spec.process.terminal).toBe(true);
    expect(spec.process.env).toContain('TERM=xterm');
  });

  it('--env-file is applied before --env', async () => {
    const file = join(dir, 'env');
    writeFileSync(file, '# comment\n\nA=file\nB=file\n');
    const spec = await buildRuntimeSpec({ rootfs, config: image({ Cmd: ['x'], Env: ['PATH=/bin'] }), options: { envFile: file, env: ['B=flag'] }, bundleDir: bundle });
    expect(spec.process.env).toEqual(['PATH=/bin', 'A=file', 'B=flag', 'HOME=/root']);
  });

  const bad: Array<[string, RunOptions, ImageConfig['config'], RegExp]> = [
    ['no command', {}, {}, /the image has no Entrypoint or Cmd: pass --entrypoint and\/or --args/],
    ['relative cwd', { cwd: 'srv' }, { Cmd: ['x'] }, /working directory "srv" must be absolute/],
    ['unknown group', { user: 'www:nogroup' }, { Cmd: ['x'] }, /group "nogroup" is not in the image's \/etc\/group/],
    ['bad add-hosts', { addHosts: ['justahost'] }, { Cmd: ['x'] }, /--add-hosts "justahost" is not host:IP/],
    ['missing env file', { envFile: '/nonexistent/env' }, { Cmd: ['x'] }, /--env-file \/nonexistent\/env: no such file/],
  ];
  for (const [name, options, config, message] of bad) {
    it(`rejects ${name}`, async () => {
      const err = await buildRuntimeSpec({ rootfs, config: image(config), options, bundleDir: bundle }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EsgzError);
      expect((err as EsgzError).message).toMatch(message);
    });
  }

  it('reads /etc/passwd inside the rootfs even when it is a symlink to a host path', async () => {
    const hostile = join(dir, 'hostile');
    const outside = join(dir, 'outside-passwd');
    writeFileSync(outside, 'evil:x:0:0::/:/bin/sh\n');
    await unpackLayer(streamOf(await buildTar([{ name: 'etc/passwd', type: 'symlink', linkname: outside }])), hostile, { whiteouts: 'merge', layerName: 'l' });
    await expect(resolveUser(hostile, 'evil')).rejects.toThrow(/user "evil" is not in the image's \/etc\/passwd/);
  });
});

describe('flag parsers', () => {
  it('parses --mount like ctr-remote', () => {
    expect(parseMountFlag(`type=bind,source=${tmpdir()},destination=/data,options=rbind:ro`)).toEqual({ type: 'bind', source: tmpdir(), destination: '/data', options: ['rbind', 'ro'] });
    expect(parseMountFlag(`type=bind,src=${tmpdir()},dst=/data`)).toEqual({ type: 'bind', source: tmpdir(), destination: '/data', options: ['rbind'] });
    expect(parseMountFlag('type=tmpfs,destination=/run,options=size=1m')).toEqual({ type: 'tmpfs', destination: '/run', options: ['size=1m'] });
    expect(() => parseMountFlag('type=bind,source=/nonexistent-esgz,destination=/x')).toThrow(/source \/nonexistent-esgz does not exist/);
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
    writeFileSync(file, '{"path":"/bin/busybox","manifestDigest":"sha256:x","layerIndex":0}{"path":"./etc/hello","layerIndex":1}\n\n{"path":"etc/x"}\n{"path":"/bin/busybox"}\n{"manifestDigest":"sha256:x"}\n');
    expect(await readRecordFile(file)).toEqual(['/bin/busybox', './etc/hello', 'etc/x']);
    expect(() => parseRecordFile('{"path":"a"}\n{"path": 3}\n', 'r')).toThrow(/r: record at byte 13 has a non-string "path"/);
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
