// The realistic fixture images (test/fixtures/debian.ts), checked with independent tools:
// gzip/sha256sum for diffIDs, GNU tar for listings and unpacking, skopeo for the OCI layout,
// chroot for "the image actually works".
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile, link, readdir, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CLAMP_MTIME,
  busyboxImage,
  debianImage,
  debianImageCached,
  stageTreeDiff,
  type OciImageFixture,
} from '../fixtures/debian.js';

const isRoot = process.getuid?.() === 0;
const canBuildDebian = isRoot && existsSync('/usr/sbin/debootstrap');
const sh = (script: string, ...args: string[]): string =>
  execFileSync('sh', ['-c', script, 'sh', ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });

const scratch: string[] = [];
afterAll(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'esgz-fixture-test-'));
  scratch.push(dir);
  return dir;
}

/** Checks an image fixture against its OCI layout with skopeo and its layers with gzip/sha256sum. */
async function expectConsistentImage(image: OciImageFixture): Promise<void> {
  const inspected = JSON.parse(sh('skopeo inspect "$1"', image.ref)) as { Digest: string; Layers: string[] };
  expect(inspected.Digest).toBe(image.manifestDigest);
  expect(inspected.Layers).toEqual(image.layers.map((layer) => layer.blobDigest));
  const config = JSON.parse(
    await readFile(path.join(image.layoutDir, 'blobs', 'sha256', image.configDigest.slice(7)), 'utf8'),
  ) as { rootfs: { diff_ids: string[] }; config: { Cmd: string[] } };
  expect(config.rootfs.diff_ids).toEqual(image.layers.map((layer) => layer.diffId));
  for (const layer of image.layers) {
    expect(`sha256:${sh('gzip -dc "$1" | sha256sum', layer.blobPath).split(' ')[0]}`).toBe(layer.diffId);
    expect(`sha256:${sh('sha256sum "$1"', layer.tarPath).split(' ')[0]}`).toBe(layer.diffId);
    expect(`sha256:${sh('sha256sum "$1"', layer.blobPath).split(' ')[0]}`).toBe(layer.blobDigest);
  }
}

/** `tar -tv` lines as [mode, owner, size, date, time, name...]: numeric owners, mtimes clamped. */
function listing(tarPath: string): Array<{ mode: string; owner: string; date: string; name: string }> {
  return sh('tar --numeric-owner --full-time -tvf "$1"', tarPath)
    .trim()
    .split('\n')
    .map((line) => {
      const [mode, owner, , date, time, ...rest] = line.split(/\s+/);
      return {
        mode: mode!,
        owner: owner!,
        date: `${date} ${time}`,
        name: rest.join(' ').replace(/ -> .*| link to .*/, ''),
      };
    });
}

describe('busybox fixture', () => {
  it.skipIf(!existsSync('/bin/busybox'))(
    'is a consistent OCI image with busybox and its applets, built the same way twice',
    async () => {
      const [first, second] = await Promise.all([tempDir(), tempDir()]);
      // Two concurrent callers on one cache: the lock makes them share one build.
      const [a, b] = await Promise.all([busyboxImage({ cacheRoot: first }), busyboxImage({ cacheRoot: first })]);
      expect(b).toEqual(a);
      await expectConsistentImage(a);
      const names = listing(a.layers[0]!.tarPath).map((entry) => entry.name);
      expect(names).toContain('bin/busybox');
      expect(names).toContain('bin/sh');
      expect(names).toContain('etc/hello');
      // A build in another cache directory gives the same bytes (the layer tar is reproducible).
      const again = await busyboxImage({ cacheRoot: second });
      expect(again.manifestDigest).toBe(a.manifestDigest);
      expect(again.layers[0]!.blobDigest).toBe(a.layers[0]!.blobDigest);
    },
  );
});

describe('tree diff', () => {
  it.skipIf(!isRoot)(
    'stages added and changed entries with their parents, and whiteouts for removed ones',
    async () => {
      const dir = await tempDir();
      const lower = path.join(dir, 'lower');
      const upper = path.join(dir, 'upper');
      for (const root of [lower, upper]) {
        await mkdir(path.join(root, 'etc/keep'), { recursive: true });
        await writeFile(path.join(root, 'etc/keep/same'), 'same');
        await writeFile(path.join(root, 'etc/changed'), 'before');
        await utimes(path.join(root, 'etc/keep/same'), 1_600_000_000, 1_600_000_000);
        await utimes(path.join(root, 'etc/keep'), 1_600_000_000, 1_600_000_000);
      }
      await writeFile(path.join(lower, 'etc/removed'), 'x');
      await mkdir(path.join(lower, 'old-dir/sub'), { recursive: true });
      await writeFile(path.join(upper, 'etc/changed'), 'after!');
      // The diff compares metadata (size, mtime) like rsync's quick check; file times come from a
      // coarse kernel clock, so two same-size writes microseconds apart can get equal mtimes. A
      // real upgrade writes later: give the changed file a later mtime, as it would have.
      await utimes(path.join(lower, 'etc/changed'), 1_600_000_000, 1_600_000_000);
      await utimes(path.join(upper, 'etc/changed'), 1_700_000_000, 1_700_000_000);
      await mkdir(path.join(upper, 'usr/bin'), { recursive: true });
      await writeFile(path.join(upper, 'usr/bin/tool'), 'tool');
      await link(path.join(upper, 'usr/bin/tool'), path.join(upper, 'usr/bin/tool-alias'));
      await symlink('tool', path.join(upper, 'usr/bin/tool-link'));

      const stage = path.join(dir, 'stage');
      await stageTreeDiff(lower, upper, stage);
      const tarPath = path.join(dir, 'diff.tar');
      sh('tar --sort=name --numeric-owner -C "$1" -cf "$2" .', stage, tarPath);
      const entries = sh('tar -tvf "$1"', tarPath);
      const names = sh('tar -tf "$1"', tarPath)
        .trim()
        .split('\n')
        .map((n) => n.replace(/^\.\//, ''));
      expect(names).toEqual(
        expect.arrayContaining([
          '.wh.old-dir',
          'etc/',
          'etc/.wh.removed',
          'etc/changed',
          'usr/bin/tool',
          'usr/bin/tool-alias',
          'usr/bin/tool-link',
        ]),
      );
      expect(names).not.toContain('etc/keep/same');
      expect(names).not.toContain('etc/keep/');
      // The two names of one inode stay one file plus a hard link, the symlink stays a symlink.
      expect(entries).toMatch(/usr\/bin\/tool-alias link to \.?\/?usr\/bin\/tool/);
      expect(entries).toMatch(/usr\/bin\/tool-link -> tool/);
      expect(await readdir(path.join(stage, 'etc'))).not.toContain('keep');
    },
  );
});

describe('Debian bookworm fixture', () => {
  it.skipIf(!debianImageCached() && !canBuildDebian)(
    'minbase + python3: consistent OCI images, clean layers, and python3 runs in the unpacked rootfs',
    { timeout: 900_000 },
    async () => {
      const debian = await debianImage();
      await expectConsistentImage(debian.base);
      await expectConsistentImage(debian.python);
      expect(debian.python.layers[0]).toEqual(debian.base.layers[0]);
      expect(debian.base.layers[0]!.tarSize).toBeGreaterThan(80_000_000);

      const base = listing(debian.base.layers[0]!.tarPath);
      const baseNames = new Set(base.map((entry) => entry.name));
      for (const name of ['usr/bin/bash', 'usr/lib/x86_64-linux-gnu/libc.so.6', 'etc/passwd', 'dev/']) {
        if (name.includes('x86_64') && process.arch !== 'x64') continue;
        expect(baseNames).toContain(name);
      }
      // No device nodes from the debootstrap host, no downloaded packages.
      expect(base.filter((entry) => entry.name.startsWith('dev/') && entry.name !== 'dev/')).toEqual([]);
      expect(
        base.filter((entry) => entry.name.startsWith('var/cache/apt/archives/') && entry.name.endsWith('.deb')),
      ).toEqual([]);
      const clamp = new Date(CLAMP_MTIME * 1000).toISOString().replace('T', ' ').slice(0, 19);
      for (const entry of base) {
        expect(entry.owner).toMatch(/^\d+\/\d+$/);
        expect(entry.date <= clamp).toBe(true);
      }

      const python = listing(debian.python.layers[1]!.tarPath);
      const pythonNames = new Set(python.map((entry) => entry.name));
      expect(pythonNames).toContain('usr/bin/python3.11');
      expect(pythonNames).toContain('usr/lib/python3.11/encodings/__init__.py');
      // The second layer is a changeset: files python3 did not touch are not repeated.
      expect(pythonNames).not.toContain('usr/bin/bash');

      const rootfs = await tempDir();
      for (const layer of debian.python.layers) sh('tar -xf "$1" --numeric-owner -C "$2"', layer.tarPath, rootfs);
      expect(sh('chroot "$1" /usr/bin/python3 -c "print(6 * 7)"', rootfs).trim()).toBe('42');
    },
  );
});
