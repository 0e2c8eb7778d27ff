/**
 * The FUSE layer filesystem against a plain unpack of the same layer (H5's unpackLayer in
 * overlay form is the oracle): names, types, modes, owners, sizes, times, link targets, device
 * numbers, xattrs (read with getfattr) and contents must match. Also: chunk faults become EIO
 * without poisoning the cache, and a silent blob gives a bounded EIO while cached data still works.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bufferBlobReader, EstargzReader, type BlobReader } from '../../src/estargz/reader.js';
import { ChunkCache, LazyLayer } from '../../src/snapshotter/cache.js';
import { mountLayer, type MountedLayer } from '../../src/snapshotter/fusefs.js';
import { unpackLayer } from '../../src/rootfs/unpack.js';
import { isMounted } from '../../src/host/mounts.js';
import { buildTar, streamOf, type TestEntry } from '../fixtures/tar-stream.js';
import { toEstargz, walkTree, type WalkedEntry } from './helpers.js';
import type { TOCEntry } from '../../src/estargz/toc.js';
import { generatedBuffer } from '../fixtures/tar.js';

const CHUNK = 64 * 1024;
const t = (s: number) => new Date(s * 1000);

const entries: TestEntry[] = [
  { name: 'etc/', type: 'directory', mode: 0o755, mtime: t(1_600_000_100) },
  { name: 'etc/hostname', content: 'esgz\n', mode: 0o644, uid: 12, gid: 34, mtime: t(1_600_000_200) },
  { name: 'etc/empty', content: '', mode: 0o600 },
  { name: 'bin/', type: 'directory', mode: 0o700, uid: 5, gid: 6 },
  { name: 'bin/tool', content: generatedBuffer(3 * CHUNK + 123, 'seed-7'), mode: 0o4755 },
  { name: 'bin/exact', content: generatedBuffer(2 * CHUNK, 'seed-9'), mode: 0o755 },
  { name: 'bin/tool-link', type: 'link', linkname: 'bin/tool' },
  { name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox', mtime: t(1_600_000_300) },
  { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  { name: 'dev/loop0', type: 'block-device', devmajor: 7, devminor: 300, mode: 0o660 },
  { name: 'run/fifo', type: 'fifo', mode: 0o644 },
  { name: 'implicit/deep/file.txt', content: 'under implicit parents' },
  {
    name: 'attrs.txt',
    content: 'xattrs here',
    pax: {
      'SCHILY.xattr.user.big': 'x'.repeat(300),
      'SCHILY.xattr.user.note': 'hello',
      'SCHILY.xattr.trusted.esgz': 'bin\u0001ary',
    },
  },
  { name: 'opaque/', type: 'directory', mode: 0o751 },
  { name: 'opaque/.wh..wh..opq', content: '' },
  { name: 'opaque/kept', content: 'kept' },
  { name: 'usr/.wh.removed', content: '' },
  { name: 'sticky/', type: 'directory', mode: 0o1777 },
];

/**
 * Times that differ by design: directories the tar never names (the unpacker stamps "now"), and the
 * whiteout device, which the unpacker creates with mknod at unpack time (overlayfs never shows it).
 */
const NO_TIME_COMPARE = new Set(['', 'dev', 'run', 'implicit', 'implicit/deep', 'usr', 'usr/removed']);

describe('FUSE layer filesystem', () => {
  let work: string;
  let tar: Buffer;
  let blob: Buffer;
  let reader: EstargzReader;

  beforeAll(async () => {
    work = await mkdtemp(join(os.tmpdir(), 'esgz-fusefs-'));
    tar = await buildTar(entries);
    ({ blob } = await toEstargz(tar, { chunkSize: CHUNK }));
    reader = await EstargzReader.open(bufferBlobReader(blob), { where: 'test layer' });
  });

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function withMount<T>(
    name: string,
    blobReader: BlobReader,
    fn: (m: MountedLayer, lazy: LazyLayer) => Promise<T>,
    policy = {},
  ): Promise<T> {
    const cache = new ChunkCache(join(work, `${name}-cache`));
    const lazy = new LazyLayer(reader, blobReader, cache, policy);
    const mnt = join(work, `${name}-mnt`);
    const mounted = await mountLayer(mnt, {
      entries: reader.toc.entries,
      readRange: (n, e, o, l) => lazy.readRange(n, e, o, l),
      where: name,
    });
    try {
      return await fn(mounted, lazy);
    } finally {
      await mounted.unmount();
      await cache.drain();
      expect(isMounted(mnt)).toBe(false);
    }
  }

  it('mounts a layer whose 100k whiteouts each replace a directory in under 10 s (forget walks only the removed subtree)', async () => {
    const N = 100_000;
    const many: TOCEntry[] = [];
    for (let i = 0; i < N; i++)
      many.push(
        { name: `d${i}/`, type: 'dir', mode: 0o755 },
        { name: `d${i}/f`, type: 'reg', size: 0, mode: 0o644 },
        { name: `.wh.d${i}`, type: 'reg', size: 0 },
      );
    const mnt = join(work, 'whiteouts-mnt');
    const started = Date.now();
    const mounted = await mountLayer(mnt, {
      entries: many,
      readRange: async () => Buffer.alloc(0),
      where: 'whiteouts',
    });
    const seconds = (Date.now() - started) / 1000;
    try {
      expect(seconds).toBeLessThan(10);
      const st = await lstat(join(mnt, `d${N - 1}`));
      expect(st.isCharacterDevice()).toBe(true);
      expect(st.rdev).toBe(0);
      await expect(lstat(join(mnt, 'd7', 'f'))).rejects.toThrow(/ENOTDIR|ENOENT/);
      expect(mounted.tree.lookup('/d7/f')).toBeUndefined();
    } finally {
      await mounted.unmount();
    }
  });

  it('serves the same tree as a plain unpack of the layer', async () => {
    const unpacked = join(work, 'unpacked');
    await unpackLayer(streamOf(tar), unpacked, { whiteouts: 'overlay', layerName: 'test layer' });
    const expected = await walkTree(unpacked);
    await withMount('walk', bufferBlobReader(blob), async (m) => {
      const actual = await walkTree(m.mountpoint);
      expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
      const strip = (e: WalkedEntry, path: string) => {
        const { ino: _ino, ...rest } = e;
        if (NO_TIME_COMPARE.has(path)) delete rest.mtime;
        return rest;
      };
      for (const [path, exp] of expected) expect(strip(actual.get(path)!, path), path).toEqual(strip(exp, path));
      // Hardlinked names are one inode, as in the unpack.
      expect(actual.get('bin/tool-link')!.ino).toBe(actual.get('bin/tool')!.ino);
      expect(actual.get('bin/tool')!.nlink).toBe(2);
      // Sanity on the oracle itself: the interesting cases are really there.
      expect(expected.get('usr/removed')).toMatchObject({ type: 'char', rdev: 0 });
      expect(expected.get('opaque')!.xattrs['trusted.overlay.opaque']).toBe(Buffer.from('y').toString('base64'));
      expect(expected.get('attrs.txt')!.xattrs['user.note']).toBe(Buffer.from('hello').toString('base64'));
      expect(expected.has('opaque/.wh..wh..opq')).toBe(false);
      // Python asks with a 128-byte buffer first and grows it on ERANGE: a value bigger than the
      // buffer must give ERANGE, not a truncated copy.
      const py = await execa('python3', [
        '-c',
        'import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], "user.big").decode())',
        join(m.mountpoint, 'attrs.txt'),
      ]);
      expect(py.stdout).toBe('x'.repeat(300));
    });
  });

  it('reads at arbitrary offsets across chunk boundaries', async () => {
    const content = entries.find((e) => e.name === 'bin/tool')!.content as Buffer;
    await withMount('offsets', bufferBlobReader(blob), async (m, lazy) => {
      const fh = await open(join(m.mountpoint, 'bin/tool'), 'r');
      try {
        for (const [pos, len] of [
          [0, 10],
          [CHUNK - 5, 10],
          [2 * CHUNK - 1, CHUNK + 2],
          [3 * CHUNK + 100, 100],
        ] as const) {
          const buf = Buffer.alloc(len);
          const { bytesRead } = await fh.read(buf, 0, len, pos);
          const want = content.subarray(pos, pos + len);
          expect(bytesRead).toBe(want.length);
          expect(buf.subarray(0, bytesRead).equals(want)).toBe(true);
        }
      } finally {
        await fh.close();
      }
      expect(lazy.stats.chunksFetched).toBeGreaterThan(0);
    });
  });

  it('fails a read whose chunk is corrupt with EIO, caches nothing bad, and succeeds on the next read', async () => {
    let corrupting = true;
    const honest = bufferBlobReader(blob);
    const flaky: BlobReader = {
      size: blob.length,
      async read(offset, length) {
        const data = Buffer.from(await honest.read(offset, length));
        if (corrupting) {
          // Damage the deflate payload in the middle of the first member of the range.
          data[Math.min(data.length - 1, 40)] ^= 0xff;
        }
        return data;
      },
    };
    await withMount('corrupt', flaky, async (m, lazy) => {
      const path = join(m.mountpoint, 'etc/hostname');
      await expect(readFile(path)).rejects.toMatchObject({ code: 'EIO' });
      expect(await lazy.cache.list()).toEqual([]);
      // The source heals (a proxy that stops corrupting): the same path now reads fine.
      corrupting = false;
      expect((await readFile(path)).toString()).toBe('esgz\n');
      // Written behind the read: on disk once the pending batch is.
      await lazy.cache.drain();
      expect((await lazy.cache.list()).length).toBe(1);
    });
  });

  it('gives a bounded EIO when the blob stops answering, while cached files keep working', async () => {
    let gone = false;
    const honest = bufferBlobReader(blob);
    const vanishing: BlobReader = {
      size: blob.length,
      read: (offset, length) => (gone ? new Promise<Buffer>(() => undefined) : honest.read(offset, length)),
    };
    await withMount(
      'gone',
      vanishing,
      async (m) => {
        const cached = join(m.mountpoint, 'etc/hostname');
        expect((await readFile(cached)).toString()).toBe('esgz\n');
        gone = true;
        const started = Date.now();
        await expect(readFile(join(m.mountpoint, 'bin/exact'))).rejects.toMatchObject({ code: 'EIO' });
        expect(Date.now() - started).toBeLessThan(10_000);
        // The kernel may have the first read cached; drop that question by reading through a fresh open.
        expect((await readFile(cached)).toString()).toBe('esgz\n');
      },
      { deadlineMs: 1500 },
    );
  });

  it('fetches each member once for concurrent readers', async () => {
    let requests = 0;
    const honest = bufferBlobReader(blob);
    const counting: BlobReader = {
      size: blob.length,
      async read(offset, length) {
        requests++;
        await new Promise((r) => setTimeout(r, 50));
        return honest.read(offset, length);
      },
    };
    await withMount('dedup', counting, async (m, lazy) => {
      const path = join(m.mountpoint, 'bin/exact');
      // Readers are other processes, as in a container: reads from this process would park libuv's
      // small thread pool in the kernel while the FUSE server needs it to decompress and cache.
      const results = await Promise.all([1, 2, 3, 4].map(() => execa('sha256sum', [path])));
      const want = createHash('sha256')
        .update(entries.find((e) => e.name === 'bin/exact')!.content as Buffer)
        .digest('hex');
      for (const r of results) expect(r.stdout.split(' ')[0]).toBe(want);
      expect(lazy.stats.chunksFetched).toBe(2);
      expect(requests).toBeLessThanOrEqual(2);
    });
  });

  it('prefetches the prioritized range in one request (a few past the size limit) and serves it without more', async () => {
    const prioritized = await toEstargz(tar, {
      chunkSize: CHUNK,
      prioritizedFiles: ['bin/tool', 'bin/exact', 'etc/hostname'],
    });
    const prioritizedReader = await EstargzReader.open(bufferBlobReader(prioritized.blob), {
      where: 'prioritized layer',
    });
    const landmark = prioritizedReader.landmark();
    expect(landmark.kind).toBe('prefetch');
    for (const [limit, expectedRequests] of [
      [undefined, 1],
      [2 * CHUNK, 3],
    ] as const) {
      const requests: Array<[number, number]> = [];
      const honest = bufferBlobReader(prioritized.blob);
      const counting: BlobReader = {
        size: prioritized.blob.length,
        read: (o, l) => (requests.push([o, l]), honest.read(o, l)),
      };
      const lazy = new LazyLayer(prioritizedReader, counting, new ChunkCache(join(work, `prefetch-${limit}`)), {
        maxPrefetchBytes: limit,
      });
      const got = await lazy.prefetch(landmark.offset!);
      expect(requests.length, JSON.stringify(requests)).toBeGreaterThanOrEqual(expectedRequests);
      if (limit === undefined) expect(requests).toEqual([[requests[0]![0], landmark.offset! - requests[0]![0]]]);
      // 4 chunks of bin/tool, 2 of bin/exact, 1 of etc/hostname.
      expect(got.chunks).toBe(7);
      const before = requests.length;
      for (const name of ['bin/tool', 'bin/exact', 'etc/hostname']) {
        const want = entries.find((e) => e.name === name)!.content as Buffer | string;
        const data = await lazy.readRange(name, prioritizedReader.lookup(name)!, 0, Buffer.byteLength(want));
        expect(data.equals(Buffer.from(want))).toBe(true);
      }
      expect(requests.length).toBe(before);
      // A file outside the prioritized set still needs its own request.
      await lazy.readRange('attrs.txt', prioritizedReader.lookup('attrs.txt')!, 0, 5);
      expect(requests.length).toBe(before + 1);
    }
  });
});
