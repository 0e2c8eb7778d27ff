import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { unpackLayer } from '../../src/optimizer/unpack.js';
import { LayerProvenance } from '../../src/optimizer/provenance.js';
import { buildTar, streamOf, type TestEntry } from './tar-helpers.js';

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
    const value = execFileSync('python3', ['-c', 'import os,sys;print(os.getxattr(sys.argv[1],"user.esgz").decode())', join(root, 'etc/x')], { encoding: 'utf8' });
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
    await unpackLayer(streamOf(await buildTar([{ name: 'a/b', content: '1' }, { name: 'a/c', content: '1' }, { name: 'd/e', content: '1' }])), root, layer(0));
    await unpackLayer(streamOf(await buildTar([{ name: 'a/.wh.b' }, { name: 'd/.wh..wh..opq' }, { name: 'd/f', content: '2' }, { name: 'a/c', content: '2' }])), root, layer(1));
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
    await unpack([{ name: 'keep', content: 'k' }, { name: 'gone', content: 'g' }, { name: 'dir/old', content: 'o' }]);
    await unpack([{ name: 'dir/', type: 'directory' }, { name: 'dir/new', content: 'n' }, { name: 'dir/.wh..wh..opq' }, { name: '.wh.gone' }]);
    expect(readdirSync(root).sort()).toEqual(['dir', 'keep']);
    expect(readdirSync(join(root, 'dir'))).toEqual(['new']);
  });

  it('overlay mode turns whiteouts into 0/0 char devices and opaque markers into trusted.overlay.opaque', async () => {
    await unpack([{ name: 'dir/.wh..wh..opq' }, { name: '.wh.gone' }], 'overlay');
    const wh = lstatSync(join(root, 'gone'));
    expect(wh.isCharacterDevice()).toBe(true);
    expect(wh.rdev).toBe(0);
    const value = execFileSync('python3', ['-c', 'import os,sys;print(os.getxattr(sys.argv[1],"trusted.overlay.opaque").decode())', join(root, 'dir')], { encoding: 'utf8' });
    expect(value.trim()).toBe('y');
  });
});

describe('unpackLayer: hostile layers never touch the host', () => {
  const cases: Array<[string, TestEntry[], RegExp]> = [
    ['.. traversal', [{ name: '../outside/evil', content: 'x' }], /layer 0: entry "\.\.\/outside\/evil" escapes the root/],
    ['deep .. traversal', [{ name: 'a/../../outside/evil', content: 'x' }], /escapes the root/],
    ['hardlink to a host file', [{ name: 'shadow', type: 'link', linkname: '../outside/canary' }], /hardlink "shadow" to "\.\.\/outside\/canary" escapes the root/],
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
    const err = await unpackLayer(streamOf(Buffer.alloc(1024, 7)), root, { whiteouts: 'merge', layerName: 'layer 3' }).catch((e: unknown) => e);
    expect((err as EsgzError).code).toBe('BAD_LAYER');
    expect((err as EsgzError).message).toMatch(/^layer 3: not a valid tar stream/);
  });
});
