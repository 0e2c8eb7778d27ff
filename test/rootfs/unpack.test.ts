import { execFileSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { unpackLayer } from '../../src/rootfs/unpack.js';
import { LayerProvenance } from '../../src/rootfs/provenance.js';
import { buildTar, streamOf, type TestEntry } from '../fixtures/tar-stream.js';
import {
  buildTar as buildFixtureTar,
  dir as fixtureDir,
  file as fixtureFile,
  hardlink as fixtureHardlink,
  symlink as fixtureSymlink,
  type TarEntry as FixtureEntry,
} from '../fixtures/tar.js';
import {
  BINARY_USER_XATTR,
  CAP_SETUID_XATTR,
  DECOY,
  decoyState,
  makeDecoy,
  HOSTILE_MODE,
  HOSTILE_MTIME,
  binaryAndOverlayXattrs,
  climbingSymlink,
  devicesAndSetuid,
  dotDotTraversal,
  dotWhiteouts,
  hardlinkOut,
  hardlinkThroughSymlink,
  manyWhiteouts,
  opaqueThroughSymlink,
  replacedDirectoryUnderSymlink,
  staleDirectoryMetadata,
  whiteoutThroughSymlink,
  writeThroughSymlink,
} from '../fixtures/hostile-unpack.js';

let work: string;
let root: string;
/** A host directory next to the unpack root that hostile entries aim at. */
let outside: string;

beforeEach(() => {
  work = mkdtempSync(join(tmpdir(), 'esgz-unpack-'));
  root = join(work, 'root');
  outside = join(work, 'outside');
  execFileSync('mkdir', ['-p', root, outside]);
  writeFileSync(join(outside, 'canary'), 'untouched');
});
afterEach(() => rmSync(work, { recursive: true, force: true }));

async function unpack(entries: TestEntry[], whiteouts: 'overlay' | 'merge' = 'merge', dir = root) {
  return unpackLayer(streamOf(await buildTar(entries)), dir, { whiteouts, layerName: 'layer 0' });
}

function outsideUntouched(): void {
  expect(readdirSync(outside)).toEqual(['canary']);
  expect(readFileSync(join(outside, 'canary'), 'utf8')).toBe('untouched');
}

describe('unpackLayer: ordinary entries', () => {
  it('restores files, dirs, symlinks, hardlinks, modes, owners, mtimes and xattrs', async () => {
    const mtime = new Date(1_500_000_000_000);
    const stats = await unpack([
      { name: './', type: 'directory' },
      { name: './etc/', type: 'directory', mode: 0o750, mtime },
      { name: './etc/hello', content: 'hello\n', mode: 0o640, uid: 1234, gid: 4321, mtime },
      { name: './bin/tool', content: '#!/bin/sh\n', mode: 0o4755 },
      { name: './bin/sh', type: 'symlink', linkname: 'tool' },
      { name: './bin/tool2', type: 'link', linkname: './bin/tool' },
      { name: './etc/x', content: 'x', pax: { 'SCHILY.xattr.user.esgz': 'v1' } },
      { name: './dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: './run/fifo', type: 'fifo' },
    ]);
    expect(stats.files).toBe(3);
    expect(readFileSync(join(root, 'etc/hello'), 'utf8')).toBe('hello\n');
    const hello = statSync(join(root, 'etc/hello'));
    expect(hello.mode & 0o7777).toBe(0o640);
    expect([hello.uid, hello.gid]).toEqual([1234, 4321]);
    expect(hello.mtimeMs).toBe(mtime.getTime());
    const etc = statSync(join(root, 'etc'));
    expect(etc.mode & 0o7777).toBe(0o750);
    expect(etc.mtimeMs).toBe(mtime.getTime());
    expect(statSync(join(root, 'bin/tool')).mode & 0o7777).toBe(0o4755);
    expect(readlinkSync(join(root, 'bin/sh'))).toBe('tool');
    expect(statSync(join(root, 'bin/tool2')).ino).toBe(statSync(join(root, 'bin/tool')).ino);
    const dev = lstatSync(join(root, 'dev/null'));
    expect(dev.isCharacterDevice()).toBe(true);
    expect(dev.rdev).toBe(statSync('/dev/null').rdev);
    expect(lstatSync(join(root, 'run/fifo')).isFIFO()).toBe(true);
    // getfattr is not installed: read the xattr back through the kernel with a python one-liner.
    const value = execFileSync(
      'python3',
      ['-c', 'import os,sys;print(os.getxattr(sys.argv[1],"user.esgz").decode())', join(root, 'etc/x')],
      { encoding: 'utf8' },
    );
    expect(value.trim()).toBe('v1');
  });

  it('notifies the provenance map of every path and whiteout', async () => {
    const provenance = new LayerProvenance();
    const layer = (n: number) => ({
      whiteouts: 'merge' as const,
      layerName: `layer ${n}`,
      onAdd: (p: string, k: string) => provenance.add(p, n, k),
      onWhiteout: (p: string) => provenance.whiteout(p, n),
      onOpaque: (p: string) => provenance.opaque(p, n),
    });
    await unpackLayer(
      streamOf(
        await buildTar([
          { name: 'a/b', content: '1' },
          { name: 'a/c', content: '1' },
          { name: 'd/e', content: '1' },
        ]),
      ),
      root,
      layer(0),
    );
    await unpackLayer(
      streamOf(
        await buildTar([
          { name: 'a/.wh.b' },
          { name: 'd/.wh..wh..opq' },
          { name: 'd/f', content: '2' },
          { name: 'a/c', content: '2' },
        ]),
      ),
      root,
      layer(1),
    );
    expect(provenance.layerOf('a/b')).toBeUndefined();
    expect(provenance.layerOf('a/c')).toBe(1);
    expect(provenance.layerOf('d/e')).toBeUndefined();
    expect(provenance.layerOf('d/f')).toBe(1);
    expect(existsSync(join(root, 'a/b'))).toBe(false);
    expect(existsSync(join(root, 'd/e'))).toBe(false);
    expect(readFileSync(join(root, 'd/f'), 'utf8')).toBe('2');
  });
});

describe('unpackLayer: whiteouts', () => {
  it('merge mode deletes whited-out files and empties opaque dirs of lower content only', async () => {
    await unpack([
      { name: 'keep', content: 'k' },
      { name: 'gone', content: 'g' },
      { name: 'dir/old', content: 'o' },
    ]);
    await unpack([
      { name: 'dir/', type: 'directory' },
      { name: 'dir/new', content: 'n' },
      { name: 'dir/.wh..wh..opq' },
      { name: '.wh.gone' },
    ]);
    expect(readdirSync(root).sort()).toEqual(['dir', 'keep']);
    expect(readdirSync(join(root, 'dir'))).toEqual(['new']);
  });

  it('overlay mode turns whiteouts into 0/0 char devices and opaque markers into trusted.overlay.opaque', async () => {
    await unpack([{ name: 'dir/.wh..wh..opq' }, { name: '.wh.gone' }], 'overlay');
    const wh = lstatSync(join(root, 'gone'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    const value = execFileSync(
      'python3',
      ['-c', 'import os,sys;print(os.getxattr(sys.argv[1],"trusted.overlay.opaque").decode())', join(root, 'dir')],
      { encoding: 'utf8' },
    );
    expect(value.trim()).toBe('y');
  });
});

describe('unpackLayer: hostile layers never touch the host', () => {
  const cases: Array<[string, TestEntry[], RegExp]> = [
    [
      '.. traversal',
      [{ name: '../outside/evil', content: 'x' }],
      /layer 0: entry "\.\.\/outside\/evil" escapes the root/,
    ],
    ['deep .. traversal', [{ name: 'a/../../outside/evil', content: 'x' }], /escapes the root/],
    [
      'hardlink to a host file',
      [{ name: 'shadow', type: 'link', linkname: '../outside/canary' }],
      /hardlink "shadow" to "\.\.\/outside\/canary" escapes the root/,
    ],
  ];
  for (const [label, entries, message] of cases) {
    it(`rejects ${label}`, async () => {
      const err = await unpack(entries).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EsgzError);
      expect((err as EsgzError).code).toBe('UNSAFE_PATH');
      expect((err as EsgzError).message).toMatch(message);
      outsideUntouched();
    });
  }

  it('contains absolute entry names inside the root', async () => {
    await unpack([{ name: `${outside}/evil`, content: 'x' }]);
    outsideUntouched();
    expect(readFileSync(join(root, outside, 'evil'), 'utf8')).toBe('x');
  });

  it('contains writes through a symlink planted by an earlier entry (absolute and relative)', async () => {
    await unpack([
      { name: 'abs', type: 'symlink', linkname: outside },
      { name: 'abs/evil', content: 'x' },
      { name: 'rel', type: 'symlink', linkname: '../outside' },
      { name: 'rel/evil2', content: 'y' },
      { name: 'dots', type: 'symlink', linkname: '../../../../../../..' },
      { name: `dots${outside}/evil3`, content: 'z' },
    ]);
    outsideUntouched();
    expect(readFileSync(join(root, outside, 'evil'), 'utf8')).toBe('x');
    expect(readFileSync(join(root, 'outside/evil2'), 'utf8')).toBe('y');
    expect(readFileSync(join(root, outside, 'evil3'), 'utf8')).toBe('z');
  });

  it('replaces a planted symlink instead of writing through it', async () => {
    await unpack([
      { name: 'canary', type: 'symlink', linkname: join(outside, 'canary') },
      { name: 'canary', content: 'overwritten' },
    ]);
    outsideUntouched();
    expect(lstatSync(join(root, 'canary')).isFile()).toBe(true);
  });

  it('keeps a symlink to /etc/shadow a symlink and does not follow it for a hardlink', async () => {
    await unpack([
      { name: 'etc/shadow', type: 'symlink', linkname: join(outside, 'canary') },
      { name: 'copy', type: 'link', linkname: 'etc/shadow' },
    ]);
    outsideUntouched();
    expect(lstatSync(join(root, 'copy')).isSymbolicLink()).toBe(true);
    expect(statSync(join(outside, 'canary')).nlink).toBe(1);
  });

  it('contains whiteouts behind symlinks', async () => {
    await unpack([{ name: 'link', type: 'symlink', linkname: outside }, { name: 'link/.wh.canary' }]);
    outsideUntouched();
  });

  it('rejects a stream that is not a tar', async () => {
    const err = await unpackLayer(streamOf(Buffer.alloc(1024, 7)), root, {
      whiteouts: 'merge',
      layerName: 'layer 3',
    }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('BAD_LAYER');
    expect((err as EsgzError).message).toMatch(
      /^layer 3: tar entry after "\(start of archive\)": invalid checksum field/,
    );
  });
});

// ---- Issue #12: hostile layers aimed at a decoy directory next to the root ----------------------

describe('unpackLayer: hostile layers (issue #12) leave the decoy untouched', () => {
  let decoy: string;
  let before: string;
  beforeEach(() => {
    decoy = join(work, 'decoy');
    before = makeDecoy(decoy);
  });
  const decoyUntouched = () => expect(decoyState(decoy)).toBe(before);
  async function unpackFixture(
    entries: FixtureEntry[],
    whiteouts: 'overlay' | 'merge' = 'merge',
    warnings: string[] = [],
  ) {
    return unpackLayer(streamOf(await buildFixtureTar(entries)), root, {
      whiteouts,
      layerName: 'layer 0',
      onWarning: (w) => warnings.push(w),
    });
  }
  const insideRoot = (hostPath: string) => join(root, hostPath);

  for (const whiteouts of ['merge', 'overlay'] as const) {
    it(`applies a directory's mode and mtime only to the directory it made, never through a later symlink (${whiteouts})`, async () => {
      await unpackFixture(staleDirectoryMetadata(decoy), whiteouts);
      decoyUntouched();
      expect(readlinkSync(join(root, 'a'))).toBe(decoy);
    });
  }

  it("the issue's own case: a/, a/etc/ (0777), a -> / does not reach the host's /etc (aimed at the decoy)", async () => {
    // Same shape as the report, with the root's parent standing in for "/" (`a` -> `..`, relative
    // to the root, where the symlink is) and the decoy for /etc.
    await unpackFixture([
      fixtureDir('a'),
      fixtureDir('a/decoy', { mode: HOSTILE_MODE, mtime: HOSTILE_MTIME }),
      fixtureSymlink('a', '..'),
    ]);
    decoyUntouched();
  });

  it('forgets a directory reached through a symlink once that symlink changes (no stale cache)', async () => {
    await unpackFixture([
      fixtureDir('real/x'),
      fixtureDir('other/x'),
      fixtureSymlink('s', 'real'),
      fixtureSymlink('t', 's/x'),
      fixtureFile('t/f1', '1'),
      fixtureSymlink('s', 'other'),
      fixtureFile('t/f2', '2'),
    ]);
    expect(readdirSync(join(root, 'real/x'))).toEqual(['f1']);
    expect(readdirSync(join(root, 'other/x'))).toEqual(['f2']);
  });

  it('replacing a directory a symlink pointed through: later entries resolve afresh, inside the root', async () => {
    await unpackFixture(replacedDirectoryUnderSymlink(decoy));
    decoyUntouched();
    expect(readFileSync(join(insideRoot(decoy), 'sub/evil'), 'utf8')).toBe('planted\n');
    expect(statSync(join(insideRoot(decoy), `sub/${DECOY.subdir}`)).mode & 0o7777).toBe(HOSTILE_MODE);
  });

  it('writes through an escaping symlink land inside the root (absolute and climbing)', async () => {
    await unpackFixture(writeThroughSymlink(decoy));
    await unpackFixture(climbingSymlink(decoy));
    decoyUntouched();
    expect(readFileSync(join(insideRoot(decoy), 'evil'), 'utf8')).toBe('planted\n');
    expect(readFileSync(join(insideRoot(decoy), DECOY.file), 'utf8')).toBe('overwritten\n');
    expect(statSync(join(insideRoot(decoy), DECOY.subdir)).mode & 0o7777).toBe(HOSTILE_MODE);
  });

  it('refuses .. traversal and hardlinks out of the root; hardlinks through a symlink stay inside', async () => {
    for (const entries of [dotDotTraversal(decoy), hardlinkOut(decoy)]) {
      const err = await unpackFixture(entries).catch((e: unknown) => e);
      expect((err as EsgzError).code).toBe('UNSAFE_PATH');
      expect((err as EsgzError).message).toMatch(/^layer 0: (entry|hardlink) ".*" (to ".*" )?escapes the root$/);
    }
    const err = await unpackFixture(hardlinkThroughSymlink(decoy)).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('BAD_LAYER');
    expect((err as EsgzError).message).toMatch(
      /hardlink "shadow" points to "l\/canary", which is not a file in the layer/,
    );
    decoyUntouched();
  });

  it('re-roots absolute names and absolute hardlink targets under the root', async () => {
    await unpackFixture([
      fixtureFile(`${decoy}/evil`, 'x'),
      fixtureHardlink('/copy', `${decoy}/evil`),
      fixtureSymlink('/abs', decoy),
    ]);
    decoyUntouched();
    expect(readFileSync(join(insideRoot(decoy), 'evil'), 'utf8')).toBe('x');
    expect(statSync(join(root, 'copy')).ino).toBe(statSync(join(insideRoot(decoy), 'evil')).ino);
    expect(readlinkSync(join(root, 'abs'))).toBe(decoy);
  });

  it('refuses whiteouts of . and ..', async () => {
    for (const entries of dotWhiteouts()) {
      rmSync(root, { recursive: true, force: true });
      const err = await unpackFixture(entries).catch((e: unknown) => e);
      expect((err as EsgzError).code).toBe('UNSAFE_PATH');
      expect((err as EsgzError).message).toMatch(/^layer 0: whiteout ".*" names no file$/);
    }
    decoyUntouched();
    expect(existsSync(work)).toBe(true);
  });

  for (const whiteouts of ['merge', 'overlay'] as const) {
    it(`keeps opaque markers and whiteouts behind a symlink inside the root (${whiteouts})`, async () => {
      await unpackFixture(opaqueThroughSymlink(decoy), whiteouts);
      await unpackFixture(whiteoutThroughSymlink(decoy), whiteouts);
      decoyUntouched();
      if (whiteouts === 'overlay') {
        expect(xattrHex(insideRoot(decoy), 'trusted.overlay.opaque')).toBe(Buffer.from('y').toString('hex'));
        expect(lstatSync(join(insideRoot(decoy), DECOY.file)).isCharacterDevice()).toBe(true);
      }
    });
  }

  it('keeps device nodes and setuid bits as the image has them', async () => {
    await unpackFixture(devicesAndSetuid());
    const mem = lstatSync(join(root, 'dev/mem'));
    expect(mem.isCharacterDevice()).toBe(true);
    expect(mem.rdev).toBe((1 << 8) | 1); // makedev(1, 1)
    expect(mem.mode & 0o7777).toBe(0o640);
    const sda = lstatSync(join(root, 'dev/sda'));
    expect(sda.isBlockDevice()).toBe(true);
    expect(sda.mode & 0o7777).toBe(0o660);
    expect(statSync(join(root, 'bin/suid')).mode & 0o7777).toBe(0o4755);
  });

  for (const whiteouts of ['merge', 'overlay'] as const) {
    it(`keeps binary xattr bytes exact and skips forged trusted.overlay.* with a warning (${whiteouts})`, async () => {
      const warnings: string[] = [];
      await unpackFixture(binaryAndOverlayXattrs(), whiteouts, warnings);
      expect(xattrHex(join(root, 'bin/ping'), 'security.capability')).toBe(CAP_SETUID_XATTR.toString('hex'));
      expect(xattrHex(join(root, 'bin/ping'), 'user.bin')).toBe(BINARY_USER_XATTR.toString('hex'));
      expect(statSync(join(root, 'bin/ping')).mode & 0o7777).toBe(0o755);
      for (const [path, name] of [
        ['forged', 'trusted.overlay.opaque'],
        ['forged', 'trusted.overlay.redirect'],
        ['forged/file', 'trusted.overlay.metacopy'],
      ] as const) {
        expect(xattrHex(join(root, path), name)).toBe('absent');
      }
      expect(warnings).toEqual([
        'layer 0: skipped extended attribute trusted.overlay.opaque on "forged/" (overlayfs metadata cannot come from a layer)',
        'layer 0: skipped extended attribute trusted.overlay.redirect on "forged/" (overlayfs metadata cannot come from a layer)',
        'layer 0: skipped extended attribute trusted.overlay.metacopy on "forged/file" (overlayfs metadata cannot come from a layer)',
      ]);
    });
  }
});

describe('unpackLayer: cost stays linear (issue #12 item 7)', () => {
  for (const whiteouts of ['merge', 'overlay'] as const) {
    it(
      `unpacks 100k whiteouts over 5k directories in under 10 s of CPU (${whiteouts})`,
      { timeout: 120_000 },
      async () => {
        const tarBytes = await buildFixtureTar(manyWhiteouts(100_000, 5_000));
        // On tmpfs, where optimize unpacks when memory allows (memoryBackedTempRoot): this measures
        // the unpacker's own cost, not a disk the other tests keep busy.
        const shmRoot = join(mkdtempSync('/dev/shm/esgz-unpack-'), 'root');
        try {
          const started = performance.now();
          const cpuBefore = process.cpuUsage();
          const stats = await unpackLayer(streamOf(tarBytes), shmRoot, { whiteouts, layerName: 'layer 0' });
          const cpu = process.cpuUsage(cpuBefore);
          const cpuSeconds = (cpu.user + cpu.system) / 1e6;
          const seconds = (performance.now() - started) / 1000;
          expect(stats.whiteouts).toBe(100_000);
          // The 10 s budget is held to CPU time: the machine running the suite is shared, so wall
          // time only gets the suite's general 30 s bound. Quadratic work (or a process per
          // whiteout) costs CPU here either way.
          expect(cpuSeconds).toBeLessThan(10);
          expect(seconds).toBeLessThan(30);
          if (whiteouts === 'overlay') expect(lstatSync(join(shmRoot, 'd4987/f99987')).isCharacterDevice()).toBe(true);
        } finally {
          rmSync(join(shmRoot, '..'), { recursive: true, force: true });
        }
      },
    );
  }
});

describe('LayerProvenance: cost stays linear (issue #12 item 7)', () => {
  it('replays 100k files, then 100k whiteouts and 5k opaque markers over them, in under 5 s', () => {
    const provenance = new LayerProvenance();
    const started = performance.now();
    for (let i = 0; i < 100_000; i++) provenance.add(`d${i % 5_000}/f${i}`, 0, 'file', 1);
    for (let i = 0; i < 100_000; i++) provenance.whiteout(`d${i % 5_000}/f${i}`, 1);
    for (let d = 0; d < 5_000; d++) provenance.add(`d${d}/kept`, 1, 'file', 1);
    for (let d = 0; d < 5_000; d++) provenance.opaque(`d${d}`, 1);
    provenance.opaque('', 1);
    const seconds = (performance.now() - started) / 1000;
    expect(provenance.size).toBe(5_000);
    expect(provenance.layerOf('d7/f7')).toBeUndefined();
    expect(provenance.layerOf('d7/kept')).toBe(1);
    expect(seconds).toBeLessThan(5);
  });

  it("keeps the same layer's paths and drops lower ones under whiteouts and opaque directories", () => {
    const provenance = new LayerProvenance();
    for (const path of ['a', 'a/b', 'a/b/c', 'a/d', 'e/f']) provenance.add(path, 0, 'file');
    provenance.add('a/b/new', 1, 'file');
    provenance.whiteout('a/b', 1);
    expect(['a', 'a/b', 'a/b/c', 'a/b/new', 'a/d'].map((p) => provenance.layerOf(p))).toEqual([
      0,
      undefined,
      undefined,
      1,
      0,
    ]);
    provenance.add('e/g', 2, 'file');
    provenance.opaque('e', 2);
    provenance.opaque('', 3);
    expect(provenance.size).toBe(0);
  });
});

/** An xattr's value in hex, read through the kernel (getfattr is not installed), or 'absent'. */
function xattrHex(path: string, name: string): string {
  const script =
    'import os,sys\ntry: print(os.getxattr(sys.argv[1], sys.argv[2], follow_symlinks=False).hex())\nexcept OSError: print("absent")';
  return execFileSync('python3', ['-c', script, path, name], { encoding: 'utf8' }).trim();
}
