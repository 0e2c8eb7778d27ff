// Hostile layers against the format library (issue #12 items 4, 5, 7, 8, 13), through the built
// CLI (npm run build first): decompression bombs in a chunk, the TOC and a zstd frame; TOCs that
// leave chunks unverified; 50k global PAX headers; binary xattrs; absolute entry names. Each
// command must give a clean one-line error or a correct result, stay under 512 MiB peak RSS and
// 30 s, and leave nothing behind.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TOC_ENTRIES, MAX_TOC_SIZE } from '../../src/estargz/constants.js';
import { bufferBlobReader, EstargzReader } from '../../src/estargz/reader.js';
import { MediaType } from '../../src/oci/media-types.js';
import { ChunkCache, LazyLayer } from '../../src/snapshotter/cache.js';
import { mountLayer } from '../../src/snapshotter/fusefs.js';
import { busyboxImage } from '../fixtures/debian.js';
import {
  END_OF_ARCHIVE,
  estargzBlob,
  estargzBlobWithTOCMember,
  gunzipDigest,
  gzipOf,
  paxGlobalFlood,
  paxRecord,
  pushLayers,
  retoc,
  sha256,
  tarEntry,
  ustarHeader,
  zeroFileEntry,
  zstdChunkedBlob,
  zstdOf,
  zstdZeros,
  type PushedLayer,
} from '../fixtures/hostile-format.js';
import { writeOciImage } from '../fixtures/oci-image.js';
import { readOciLayout } from '../fixtures/oci-layout.js';
import {
  esgz,
  esgzMeasured,
  expectBounded,
  expectOneLineError,
  HOSTILE_RSS_LIMIT_MIB,
  repoRoot,
  type MeasuredRun,
} from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';
import { toEstargz, xattrsOf } from '../snapshotter/helpers.js';

/** What a bomb member inflates to: more than the whole RSS budget. */
const BOMB = 512 << 20;

let scratch: string;
let busybox: PushedLayer;

/**
 * A failed command that reports progress on stderr (rpull): non-zero exit, exactly one error line
 * (`esgz: …`, the last one) matching `pattern`, no stack trace.
 */
function expectFailure(run: MeasuredRun, pattern: RegExp): void {
  expect(run.exitCode).not.toBe(0);
  const errors = run.stderr.split('\n').filter((l) => l.startsWith('esgz: '));
  expect(errors, run.stderr).toHaveLength(1);
  expect(errors[0]).toMatch(pattern);
  expect(run.stderr.trimEnd().endsWith(errors[0]!)).toBe(true);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}

/** FUSE or overlay mounts left under a state root. */
async function mountsUnder(root: string): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.includes(` ${root}/`));
}

const repo = (name: string) => `${registryAddress()}/sec-format/${name}`;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/run.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  scratch = await mkdtemp(join(tmpdir(), 'esgz-sec-format-'));
  const fixture = await busyboxImage();
  const tar = await readFile(fixture.layers[0]!.tarPath);
  const { blob, result } = await toEstargz(tar);
  busybox = {
    blob,
    mediaType: MediaType.ociLayerGzip,
    annotations: { 'containerd.io/snapshot/stargz/toc.digest': result.tocDigest },
    diffID: result.diffID,
  };
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** A gzip eStargz layer whose file `bomb` is honestly 4096 zero bytes in a member that inflates to 512 MiB. */
async function gzipBombLayer(): Promise<PushedLayer> {
  const header = Buffer.from(await gzipOf(ustarHeader({ name: 'bomb', size: 4096 }), 0));
  const bomb = await gzipOf(Buffer.alloc(0), BOMB);
  const { blob, tocDigest } = estargzBlob([header, bomb], {
    version: 1,
    entries: [zeroFileEntry('bomb', 4096, header.length)],
  });
  return {
    blob,
    mediaType: MediaType.ociLayerGzip,
    annotations: { 'containerd.io/snapshot/stargz/toc.digest': tocDigest },
    diffID: await gunzipDigest(blob),
  };
}

/** How every reader words a TOC over the limit. */
const TOC_TOO_LARGE = new RegExp(`TOC .*more than ${MAX_TOC_SIZE >> 20} MiB`);

describe('decompression bombs (item 4)', () => {
  it('a chunk whose member inflates to 512 MiB: verify, rpull and a read inside the container stay bounded', async () => {
    const layer = await gzipBombLayer();
    expect(layer.blob.length).toBeLessThan(1 << 20);
    const ref = repo('gzip-bomb:v1');
    await pushLayers(ref, [busybox, layer], { Env: ['PATH=/bin'] });

    const verify = await esgzMeasured('image', 'verify', '--plain-http', ref);
    expectBounded(verify);
    expect(verify.exitCode, verify.stderr).toBe(0);

    const root = join(scratch, 'state-gzip-bomb');
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', root, ref);
    expectBounded(pulled);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const run = await esgzMeasured(
      'run',
      '--rm',
      '--root',
      root,
      ref,
      'bomb1',
      'sh',
      '-c',
      'wc -c < /bomb; od -An -tx1 /bomb | sort -u',
    );
    expectBounded(run);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout.trim().split('\n')[0]!.trim()).toBe('4096');
    expect(await readdir(join(root, 'containers')).catch(() => [])).toEqual([]);
    expect(await mountsUnder(root)).toEqual([]);
  });

  it('a TOC member that inflates to 512 MiB: get-toc-digest, verify and rpull refuse it in one line', async () => {
    const header = await gzipOf(tarEntry({ name: 'a.txt' }, Buffer.from('a\n')), 0);
    const tocJSON = Buffer.from('{"version":1,"entries":[]}');
    const tocMember = await gzipOf(
      Buffer.concat([ustarHeader({ name: 'stargz.index.json', size: tocJSON.length + BOMB }), tocJSON]),
      BOMB,
      0x20,
    );
    const blob = estargzBlobWithTOCMember([header], tocMember);
    const file = join(scratch, 'toc-bomb.blob');
    await writeFile(file, blob);

    const local = await esgzMeasured('get-toc-digest', file);
    expectBounded(local);
    expectOneLineError(local, 'nonzero', TOC_TOO_LARGE);

    const ref = repo('toc-bomb:v1');
    await pushLayers(ref, [
      {
        blob,
        mediaType: MediaType.ociLayerGzip,
        annotations: { 'containerd.io/snapshot/stargz/toc.digest': sha256('x') },
        diffID: sha256('x'),
      },
    ]);
    const remote = await esgzMeasured('get-toc-digest', '--plain-http', `${ref}@${sha256(blob)}`);
    expectBounded(remote);
    expectOneLineError(remote, 'nonzero', TOC_TOO_LARGE);
    const verify = await esgzMeasured('image', 'verify', '--plain-http', ref);
    expectBounded(verify);
    expect(verify.exitCode).not.toBe(0);
    const root = join(scratch, 'state-toc-bomb');
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', root, ref);
    expectBounded(pulled);
    expectFailure(pulled, TOC_TOO_LARGE);
    expect((await esgz('image', 'ls', '--root', root)).stdout).toContain('no images');
  });

  it('a zstd:chunked frame with no content size that inflates to 512 MiB: verify and a lazy read stay bounded', async () => {
    const header = await zstdOf(ustarHeader({ name: 'bomb', size: 4096 }));
    const bomb = await zstdZeros(BOMB);
    const crafted = await zstdChunkedBlob([header, bomb], {
      version: 1,
      entries: [zeroFileEntry('bomb', 4096, header.length)],
    });
    const layer: PushedLayer = {
      blob: crafted.blob,
      mediaType: MediaType.ociLayerZstd,
      annotations: { ...crafted.annotations, 'containerd.io/snapshot/stargz/toc.digest': crafted.tocDigest },
      diffID: sha256('not checked here'),
    };
    const ref = repo('zstd-bomb:v1');
    await pushLayers(ref, [busybox, layer], { Env: ['PATH=/bin'] });
    const verify = await esgzMeasured('image', 'verify', '--plain-http', '--json', ref);
    expectBounded(verify);
    // The diffID cannot match (a made-up one); every chunk must still have been checked.
    expect(verify.stdout).toContain('"chunks": 1');

    const root = join(scratch, 'state-zstd-bomb');
    expect((await esgz('image', 'rpull', '--plain-http', '--root', root, ref)).exitCode).toBe(0);
    const run = await esgzMeasured('run', '--rm', '--root', root, ref, 'zbomb1', 'sh', '-c', 'wc -c < /bomb');
    expectBounded(run);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe('4096');
  });
});

describe('TOCs with absurd counts (item 4)', () => {
  it('a TOC of 1.1M tiny entries (under the size limit) is refused before it is parsed', async () => {
    const names = Array.from({ length: 1_100_000 }, (_, i) => `{"name":"d${i}","type":"dir"}`);
    const tocJSON = Buffer.from(`{"version":1,"entries":[${names.join(',')}]}`);
    const tocMember = await gzipOf(
      Buffer.concat([
        ustarHeader({ name: 'stargz.index.json', size: tocJSON.length }),
        tocJSON,
        Buffer.alloc(512 - (tocJSON.length % 512)),
        END_OF_ARCHIVE,
      ]),
      0,
    );
    const file = join(scratch, 'toc-count.blob');
    await writeFile(file, estargzBlobWithTOCMember([await gzipOf(Buffer.alloc(512), 0)], tocMember));
    const run = await esgzMeasured('get-toc-digest', file);
    expectBounded(run);
    expectOneLineError(run, 'nonzero', new RegExp(`more than ${MAX_TOC_ENTRIES} entries`));
  });

  it('a TOC at both limits (MAX_TOC_ENTRIES entries of long names, MAX_TOC_SIZE bytes): rpull and a run over it stay bounded', async () => {
    const fixed = '{"name":"","type":"dir"},'.length + String(MAX_TOC_ENTRIES).length;
    const pad = 'n'.repeat(Math.floor((MAX_TOC_SIZE - 4096) / MAX_TOC_ENTRIES) - fixed);
    const names = Array.from({ length: MAX_TOC_ENTRIES }, (_, i) => `{"name":"${pad}${i}","type":"dir"}`);
    const tocJSON = Buffer.from(`{"version":1,"entries":[${names.join(',')}]}`);
    expect(tocJSON.length).toBeLessThanOrEqual(MAX_TOC_SIZE);
    expect(tocJSON.length).toBeGreaterThan(MAX_TOC_SIZE - (1 << 20));
    const tocMember = await gzipOf(
      Buffer.concat([
        ustarHeader({ name: 'stargz.index.json', size: tocJSON.length }),
        tocJSON,
        Buffer.alloc(512 - (tocJSON.length % 512)),
        END_OF_ARCHIVE,
      ]),
      0,
    );
    const blob = estargzBlobWithTOCMember([await gzipOf(Buffer.alloc(512), 0)], tocMember);
    const ref = repo('toc-limits:v1');
    await pushLayers(ref, [
      busybox,
      {
        blob,
        mediaType: MediaType.ociLayerGzip,
        annotations: { 'containerd.io/snapshot/stargz/toc.digest': sha256(tocJSON) },
        diffID: sha256('unused by a lazy pull'),
      },
    ]);
    const root = join(scratch, 'state-toc-limits');
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', root, ref);
    expectBounded(pulled);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    // Listing 262k directories through FUSE would take minutes: the first and last show the whole tree is mounted.
    const run = await esgzMeasured(
      'run',
      '--rm',
      '--root',
      root,
      ref,
      'toclimits',
      'sh',
      '-c',
      `test -d /${pad}0 && test -d /${pad}${MAX_TOC_ENTRIES - 1} && echo mounted`,
    );
    expectBounded(run);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe('mounted');
  });
});

describe('unverifiable TOCs (item 5)', () => {
  it('rpull refuses a layer whose chunks carry no digest, in one line, and keeps nothing', async () => {
    const tar = Buffer.concat([
      tarEntry({ name: 'etc/', typeflag: '5', mode: 0o755 }),
      tarEntry({ name: 'etc/motd' }, Buffer.from('trust me\n')),
      END_OF_ARCHIVE,
    ]);
    const { blob, result } = await toEstargz(tar);
    const stripped = retoc(blob, result.tocOffset, result.toc, (entries) =>
      entries.map(({ digest: _d, chunkDigest: _c, ...e }) =>
        e.name === 'etc/motd' ? e : { ...e, digest: _d, chunkDigest: _c },
      ),
    );
    const ref = repo('no-digest:v1');
    await pushLayers(ref, [
      busybox,
      {
        blob: stripped.blob,
        mediaType: MediaType.ociLayerGzip,
        annotations: { 'containerd.io/snapshot/stargz/toc.digest': stripped.tocDigest },
        diffID: result.diffID,
      },
    ]);
    const root = join(scratch, 'state-no-digest');
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', root, ref);
    expectBounded(pulled);
    expectFailure(pulled, /etc\/motd.*no chunkDigest/);
    expect((await esgz('image', 'ls', '--root', root)).stdout).toContain('no images');
  });

  it('rpull refuses two files sharing one member (a duplicate chunk offset)', async () => {
    const tar = Buffer.concat([
      tarEntry({ name: 'a' }, Buffer.from('same\n')),
      tarEntry({ name: 'b' }, Buffer.from('other\n')),
      END_OF_ARCHIVE,
    ]);
    const { blob, result } = await toEstargz(tar);
    const dup = retoc(blob, result.tocOffset, result.toc, (entries) => {
      const a = entries.find((e) => e.name === 'a')!;
      const b = entries.find((e) => e.name === 'b')!;
      return entries.map((e) =>
        e === b ? { ...b, offset: a.offset, size: a.size, digest: a.digest, chunkDigest: a.chunkDigest } : e,
      );
    });
    const ref = repo('dup-offset:v1');
    await pushLayers(ref, [
      {
        blob: dup.blob,
        mediaType: MediaType.ociLayerGzip,
        annotations: { 'containerd.io/snapshot/stargz/toc.digest': dup.tocDigest },
        diffID: result.diffID,
      },
    ]);
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', join(scratch, 'state-dup'), ref);
    expectBounded(pulled);
    expectFailure(pulled, /used twice in the TOC/);
  });
});

describe('global PAX headers (item 7)', () => {
  it('50k global PAX headers with distinct keys convert in under 5 s and 512 MiB', async () => {
    const tar = paxGlobalFlood(50_000);
    const image = await writeOciImage(join(scratch, 'pax-flood'), { tag: 'v1', layers: [tar] });
    const out = join(scratch, 'pax-flood-out');
    const run = await esgzMeasured('image', 'convert', '--estargz', '--oci', `oci:${image.dir}:v1`, `oci:${out}:v1`);
    console.log(`measured: ${run.peakRssMiB.toFixed(0)} MiB peak RSS, ${run.seconds.toFixed(1)} s`);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.seconds).toBeLessThan(5);
    expect(run.peakRssMiB).toBeLessThan(HOSTILE_RSS_LIMIT_MIB);
  });
});

describe('binary xattrs (item 8)', () => {
  it('security.capability with byte 0x80 survives convert into the TOC and the lazy mount byte for byte', async () => {
    // VFS_CAP_REVISION_2, effective, cap_setuid (bit 7) permitted: `setcap cap_setuid+ep`. Byte 0x80 is not UTF-8.
    const capability = Buffer.from('0100000280000000000000000000000000000000', 'hex');
    const pax = paxRecord('SCHILY.xattr.security.capability', capability);
    const tar = Buffer.concat([
      tarEntry({ name: 'PaxHeaders/ping', typeflag: 'x' }, pax),
      tarEntry({ name: 'ping', mode: 0o755 }, Buffer.from('#!/bin/sh\n')),
      END_OF_ARCHIVE,
    ]);
    const image = await writeOciImage(join(scratch, 'xattr'), { tag: 'v1', layers: [tar] });
    const out = join(scratch, 'xattr-out');
    expect(
      (await esgz('image', 'convert', '--estargz', '--oci', `oci:${image.dir}:v1`, `oci:${out}:v1`)).exitCode,
    ).toBe(0);
    const blobs = join(out, 'blobs', 'sha256');
    let layerBlob: Buffer | undefined;
    for (const name of await readdir(blobs)) {
      const bytes = await readFile(join(blobs, name));
      if (bytes[0] === 0x1f && bytes[1] === 0x8b) layerBlob = bytes;
    }
    const reader = await EstargzReader.open(bufferBlobReader(layerBlob!), { where: 'converted layer' });
    expect(reader.lookup('ping')!.xattrs!['security.capability']).toBe(capability.toString('base64'));

    const cache = new ChunkCache(join(scratch, 'xattr-cache'));
    const lazy = new LazyLayer(reader, bufferBlobReader(layerBlob!), cache, {});
    const mnt = join(scratch, 'xattr-mnt');
    const mounted = await mountLayer(mnt, {
      entries: reader.toc.entries,
      readRange: (n, e, o, l) => lazy.readRange(n, e, o, l),
      where: 'xattr',
    });
    try {
      expect((await xattrsOf(join(mnt, 'ping')))['security.capability']).toBe(capability.toString('base64'));
    } finally {
      await mounted.unmount();
    }
  });
});

describe('absolute entry names (item 13)', () => {
  const layerTar = () =>
    Buffer.concat([
      tarEntry({ name: '/abs/', typeflag: '5', mode: 0o755 }),
      tarEntry({ name: '/abs/file' }, Buffer.from('absolute\n')),
      tarEntry({ name: 'rel/../inside' }, Buffer.from('cleaned\n')),
      tarEntry({ name: '/abs/link', typeflag: '1', linkname: '/abs/file' }),
      END_OF_ARCHIVE,
    ]);

  it('convert re-roots them like rpull does, keeps the names (as stargz writes them) and the diffID when lossless', async () => {
    const tar = layerTar();
    const image = await writeOciImage(join(scratch, 'abs'), { tag: 'v1', layers: [tar] });
    const ref = repo('abs:esgz');
    const converted = await esgzMeasured(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--plain-http',
      `oci:${image.dir}:v1`,
      ref,
    );
    expectBounded(converted);
    expect(converted.exitCode, converted.stderr).toBe(0);
    const toc = JSON.parse((await esgz('get-toc-digest', '--plain-http', '--dump-toc', '--json', ref)).stdout);
    expect(JSON.stringify(toc)).toContain('/abs/file');

    const lossless = join(scratch, 'abs-lossless');
    const kept = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--estargz-keep-diff-id',
      '--estargz-external-toc',
      `oci:${image.dir}:v1`,
      `oci:${lossless}:v1`,
    );
    expect(kept.exitCode, kept.stderr).toBe(0);
    const [{ config }] = readOciLayout(lossless, 'v1').manifests;
    expect(config.rootfs.diff_ids).toEqual([sha256(tar)]);

    // The lazily pulled image serves the re-rooted names.
    const base = repo('abs-run:v1');
    const esgzLayer = await toEstargz(tar);
    await pushLayers(
      base,
      [
        busybox,
        {
          blob: esgzLayer.blob,
          mediaType: MediaType.ociLayerGzip,
          annotations: { 'containerd.io/snapshot/stargz/toc.digest': esgzLayer.result.tocDigest },
          diffID: esgzLayer.result.diffID,
        },
      ],
      { Env: ['PATH=/bin'] },
    );
    const root = join(scratch, 'state-abs');
    expect((await esgz('image', 'rpull', '--plain-http', '--root', root, base)).exitCode).toBe(0);
    const run = await esgz('run', '--rm', '--root', root, base, 'abs1', 'cat', '/abs/file', '/inside', '/abs/link');
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toBe('absolute\ncleaned\nabsolute');
  });

  it('optimize accepts them too and runs the workload over the re-rooted files', async () => {
    const fixture = await busyboxImage();
    const image = await writeOciImage(join(scratch, 'abs-opt'), {
      tag: 'v1',
      layers: [await readFile(fixture.layers[0]!.tarPath), layerTar()],
      config: { Env: ['PATH=/bin'] },
    });
    const out = join(scratch, 'abs-opt-out');
    const record = join(scratch, 'abs-opt.record');
    const run = await esgzMeasured(
      'image',
      'optimize',
      '--oci',
      '--period',
      '5',
      '--record-out',
      record,
      '--entrypoint',
      '["/bin/sh","-c"]',
      '--args',
      '["cat /abs/file /inside"]',
      `oci:${image.dir}:v1`,
      `oci:${out}:v1`,
    );
    expectBounded(run);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(existsSync(join(out, 'index.json'))).toBe(true);
    // The workload read the re-rooted files (the trace saw them).
    const recorded = await readFile(record, 'utf8');
    expect(recorded).toContain('abs/file');
    expect(recorded).toContain('inside');
  });

  it('".." that climbs above the root stays an error for convert', async () => {
    const tar = Buffer.concat([tarEntry({ name: '/abs/../../escape' }, Buffer.from('x')), END_OF_ARCHIVE]);
    const image = await writeOciImage(join(scratch, 'climb'), { tag: 'v1', layers: [tar] });
    const out = join(scratch, 'climb-out');
    const res = await esgzMeasured('image', 'convert', '--estargz', '--oci', `oci:${image.dir}:v1`, `oci:${out}:v1`);
    expectBounded(res);
    expectOneLineError(res, 'nonzero', /abs\/\.\.\/\.\.\/escape.*above the layer root/);
    expect(existsSync(join(out, 'index.json'))).toBe(false);
  });
});
