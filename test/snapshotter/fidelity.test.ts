// Awkward but valid layers (issue #16) lazily pulled and run through the CLI, for eStargz and
// zstd:chunked, against the real test registry: the tree inside the container (busybox `stat` and
// `sha256sum` under runc) equals, field by field, a plain unpack of the source layers by GNU tar;
// times equal the TOC's (whole seconds) in layers served by FUSE, and the plain unpack's exactly in
// the layer with times before 1970, which fuse-native cannot show and `image rpull` unpacks instead.
import { lstat, mkdtemp, mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEntryName, type JTOC, type TOCEntry } from '../../src/estargz/toc.js';
import { mountLayer } from '../../src/snapshotter/fusefs.js';
import { awkwardLayer, LATER_DUP_CONTENT, preEpochLayer } from '../fixtures/awkward-layers.js';
import { busyboxRootfs } from '../fixtures/oci-image.js';
import { pushOciImage } from '../fixtures/oci-push.js';
import { buildTar } from '../fixtures/tar.js';
import { esgz } from '../harness/cli.js';
import { registryAddress } from '../harness/registry.js';

const LAYERS = [busyboxRootfs(), awkwardLayer(), preEpochLayer()];
/** The directories the awkward layers add; the busybox layer is the runtime, not the subject. */
const SUBJECTS = ['zoo', 'times', 'owners', 'old'];
/** Layers served by FUSE (their times come from the TOC) and the one unpacked (times before 1970). */
const KINDS = ['lazy', 'lazy', 'unpacked'];
/** name | raw mode (hex) | size | uid | gid | whole seconds | full time: the same in busybox and coreutils. */
const STAT_FORMAT = '%n|%f|%s|%u|%g|%Y|%y';

interface Stat {
  mode: string;
  size: string;
  uid: string;
  gid: string;
  seconds: number;
  time: string;
  sha256?: string;
}

/** `stat -c STAT_FORMAT` and `sha256sum` lines of a tree, by path relative to its root. */
function parseTree(statLines: string, sumLines: string): Map<string, Stat> {
  const tree = new Map<string, Stat>();
  for (const line of statLines.trim().split('\n')) {
    const [name, mode, size, uid, gid, seconds, time] = line.split('|') as [string, ...string[]];
    tree.set(cleanEntryName(name), { mode, size, uid, gid, seconds: Number(seconds), time } as Stat);
  }
  for (const line of sumLines.trim().split('\n')) {
    const [sum, name] = line.split(/\s+/) as [string, string];
    tree.get(cleanEntryName(name))!.sha256 = sum;
  }
  return tree;
}

/** The shell command listing SUBJECTS with `stat` and `sha256sum` (`bb` runs an applet). */
const listing = (bb: string) =>
  `cd / 2>/dev/null; ${bb}find ${SUBJECTS.join(' ')} -exec ${bb}stat -c '${STAT_FORMAT}' {} + && echo == && ` +
  `${bb}find ${SUBJECTS.join(' ')} -type f -exec ${bb}sha256sum {} +`;

/** The source layers unpacked one over the other by GNU tar, numeric owners (as containerd applies them) and times kept. */
async function plainUnpack(dir: string): Promise<Map<string, Stat>> {
  await mkdir(dir, { recursive: true });
  for (const entries of LAYERS)
    await execa('tar', ['-x', '--same-owner', '--numeric-owner', '-p', '-C', dir], { input: await buildTar(entries) });
  const out = await execa('sh', ['-c', listing('').replace('cd / 2>/dev/null;', `cd ${dir} &&`)]);
  const [stats, sums] = out.stdout.split('\n==\n') as [string, string];
  return parseTree(stats, sums);
}

/** Modification time (whole seconds) of each path of a TOC: its last entry's (the epoch when omitted). */
function tocSeconds(toc: JTOC): Map<string, number> {
  const seconds = new Map<string, number>();
  for (const e of toc.entries)
    if (e.type !== 'chunk') seconds.set(cleanEntryName(e.name), e.modtime ? Date.parse(e.modtime) / 1000 : 0);
  return seconds;
}

describe.each([
  { name: 'estargz', flags: ['--estargz', '--estargz-chunk-size', '4096'] },
  { name: 'zstdchunked', flags: ['--zstdchunked', '--zstdchunked-chunk-size', '4096'] },
])('awkward layers lazily pulled and run as $name', (format) => {
  let work: string;
  let plain: Map<string, Stat>;
  const source = `${registryAddress()}/fidelity/awkward:src`;
  const ref = `${registryAddress()}/fidelity/awkward:${format.name}`;

  beforeAll(async () => {
    work = await mkdtemp(join(os.tmpdir(), 'esgz-fidelity-run-'));
    await pushOciImage(source, { layers: LAYERS, config: { Env: ['PATH=/bin'] } });
    const converted = await esgz('image', 'convert', '--oci', '--plain-http', ...format.flags, source, ref);
    expect(converted.exitCode, converted.stderr).toBe(0);
    plain = await plainUnpack(join(work, 'plain'));
  }, 180_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('shows inside the container the tree a plain unpack gives, times as in the TOC', async () => {
    const root = join(work, 'state');
    const pulled = await esgz('image', 'rpull', '--plain-http', '--root', root, '--json', ref);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const layers = (JSON.parse(pulled.stdout) as { layers: Array<{ kind: string; digest: string }> }).layers;
    expect(layers.map((l) => l.kind)).toEqual(KINDS);

    const run = await esgz(
      'run',
      '--rm',
      '--root',
      root,
      ref,
      'fidelity',
      '/bin/busybox',
      'sh',
      '-c',
      listing('/bin/busybox '),
    );
    expect(run.exitCode, run.stderr).toBe(0);
    const [stats, sums] = run.stdout.split('\n==\n') as [string, string];
    const inside = parseTree(stats, sums);
    expect([...inside.keys()].sort()).toEqual([...plain.keys()].sort());
    expect(inside.get('zoo/dup.txt')?.size).toBe(String(LATER_DUP_CONTENT.length));

    const lazyTimes = new Map<string, number>();
    for (const layer of layers) {
      if (layer.kind !== 'lazy') continue;
      const dump = await esgz('get-toc-digest', '--dump-toc', '--plain-http', `${ref}@${layer.digest}`);
      expect(dump.exitCode, dump.stderr).toBe(0);
      for (const [path, seconds] of tocSeconds(JSON.parse(dump.stdout) as JTOC)) lazyTimes.set(path, seconds);
    }
    for (const [path, expected] of plain) {
      const { seconds, time, ...fields } = inside.get(path)!;
      const { seconds: plainSeconds, time: plainTime, ...plainFields } = expected;
      expect(fields, path).toEqual(plainFields);
      const tocTime = lazyTimes.get(path);
      if (tocTime === undefined) {
        // Unpacked (times before 1970): exactly the plain unpack's, nanoseconds included.
        expect(time, path).toBe(plainTime);
      } else {
        expect(seconds, path).toBe(tocTime);
        expect(time, path).toMatch(/\.000000000 /);
        // The TOC keeps whole seconds: within one of the original (0.6 s after the epoch is omitted).
        expect(Math.abs(seconds - plainSeconds), path).toBeLessThanOrEqual(1);
      }
    }
    expect(plain.get('old/1969')).toMatchObject({ seconds: -31_536_000 });
    expect(inside.get('old/1969')).toMatchObject({ seconds: -31_536_000 });
    expect(inside.get('times/past-2038')).toMatchObject({ seconds: 4_102_444_800 });
  }, 180_000);
});

describe('times a FUSE layer shows', () => {
  it('are the TOC times from the epoch to past 2038; a time before 1970 shows as the epoch, not wrapped', async () => {
    const work = await mkdtemp(join(os.tmpdir(), 'esgz-fidelity-fuse-'));
    const file = (name: string, modtime?: string): TOCEntry => ({ name, type: 'reg', mode: 0o644, modtime });
    const mounted = await mountLayer(join(work, 'mnt'), {
      entries: [
        file('epoch'),
        file('2020', '2020-09-13T12:26:40Z'),
        file('2100', '2100-01-01T00:00:00Z'),
        file('1969', '1969-01-01T00:00:00Z'),
      ],
      readRange: async () => Buffer.alloc(0),
      where: 'times',
    });
    try {
      const seconds = async (name: string) => (await lstat(join(mounted.mountpoint, name))).mtimeMs / 1000;
      expect(await seconds('epoch')).toBe(0);
      expect(await seconds('2020')).toBe(1_600_000_000);
      expect(await seconds('2100')).toBe(4_102_444_800);
      // fuse-native cannot carry it (unsigned milliseconds): `image rpull` unpacks such a layer instead.
      expect(await seconds('1969')).toBe(0);
    } finally {
      await mounted.unmount();
      await rm(work, { recursive: true, force: true });
    }
  });
});
