// Awkward but valid layers (issue #16) through `image convert` and `image verify` for eStargz and
// zstd:chunked: a path twice in one layer (readers follow the later entry), times before 1970, at
// the epoch, past 2038 and with nanoseconds (the TOC keeps them as stargz's formatModtime does),
// owner names (userName/groupName); and, when containerd + ctr-remote are installed, ctr-remote's
// reader accepts every layer and its own conversion has the same TOC once the earlier duplicate
// (which its converter drops) is left out.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOC_DIGEST_ANNOTATION } from '../../src/estargz/constants.js';
import { cleanEntryName, type JTOC, type TOCEntry } from '../../src/estargz/toc.js';
import { awkwardLayer, EARLIER_DUP_SIZE, LATER_DUP_CONTENT, OWNER, preEpochLayer } from '../fixtures/awkward-layers.js';
import { writeOciImage } from '../fixtures/oci-image.js';
import { readLayoutBlob, readOciLayout } from '../fixtures/oci-layout.js';
import { buildTar, sha256Digest } from '../fixtures/tar.js';
import { esgz } from '../harness/cli.js';
import { containerdAvailable, startContainerd, type RunningContainerd } from '../harness/containerd.js';
import { convertWithCtrRemote, ctrRemoteTOCDigest, readTOC, tocStructure } from './reference.js';
import { execa } from 'execa';

/** Small chunks, so the earlier `zoo/dup.txt` spans several. */
const CHUNK_SIZE = 4096;

const FORMATS = [
  { name: 'estargz', flags: ['--estargz', '--estargz-chunk-size', String(CHUNK_SIZE)], getTocDigestFlags: [] },
  {
    name: 'zstdchunked',
    flags: ['--zstdchunked', '--zstdchunked-chunk-size', String(CHUNK_SIZE)],
    getTocDigestFlags: ['--zstdchunked'],
  },
] as const;

const LAYERS = [awkwardLayer(), preEpochLayer()];

function decompress(blob: Buffer, format: string): Promise<Buffer> {
  const tool = format === 'estargz' ? ['gzip', '-dc'] : ['zstd', '-dcq'];
  return execa(tool[0]!, tool.slice(1), { input: blob, encoding: 'buffer' }).then((r) => Buffer.from(r.stdout));
}

/** The non-chunk entries named `name`, in TOC order. */
const entriesNamed = (toc: JTOC, name: string): TOCEntry[] =>
  toc.entries.filter((e) => e.type !== 'chunk' && cleanEntryName(e.name) === name);

/** The TOC as stargz's converter writes it: of a name listed twice only the later entry (with its chunks) stays. */
function withoutEarlierDuplicates(toc: JTOC): JTOC {
  const last = new Map<string, TOCEntry>();
  for (const e of toc.entries) if (e.type !== 'chunk') last.set(cleanEntryName(e.name), e);
  let keep = true;
  const entries = toc.entries.filter((e) => {
    if (e.type !== 'chunk') keep = last.get(cleanEntryName(e.name)) === e;
    return keep;
  });
  return { ...toc, entries };
}

describe.each(FORMATS)('awkward layers as $name', (format) => {
  let work: string;
  const out = () => join(work, 'layout');
  let layers: Array<{ blob: Buffer; toc: JTOC; annotations: Record<string, string> }>;

  beforeAll(async () => {
    work = await mkdtemp(join(os.tmpdir(), 'esgz-fidelity-'));
    await writeOciImage(out(), { tag: 'src', layers: LAYERS });
    const converted = await esgz('image', 'convert', ...format.flags, '--oci', `oci:${out()}:src`, `oci:${out()}:dst`);
    expect(converted.exitCode, converted.stderr).toBe(0);
    const image = readOciLayout(out(), 'dst').manifests[0]!;
    layers = [];
    for (const layer of image.layers) {
      const blob = readLayoutBlob(out(), layer.digest);
      layers.push({ blob, toc: (await readTOC(blob)).toc, annotations: layer.annotations ?? {} });
    }
  }, 120_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('image verify passes: every chunk, the TOC digests and the diffIDs', async () => {
    const verified = await esgz('image', 'verify', `oci:${out()}:dst`);
    expect(verified.exitCode, verified.stderr).toBe(0);
    const image = readOciLayout(out(), 'dst').manifests[0]!;
    for (const [i, { blob }] of layers.entries())
      expect(image.config.rootfs.diff_ids[i]).toBe(sha256Digest(await decompress(blob, format.name)));
  });

  it('keeps both entries of a path found twice, and the reader follows the later one', async () => {
    const { toc } = layers[0]!;
    const dups = entriesNamed(toc, 'zoo/dup.txt');
    expect(dups.map((e) => e.size)).toEqual([EARLIER_DUP_SIZE, LATER_DUP_CONTENT.length]);
    // The earlier entry's chunks are in the TOC too: a reader must not join them to the later file's.
    expect(toc.entries.filter((e) => e.type === 'chunk' && e.name === 'zoo/dup.txt').length).toBeGreaterThan(1);
    const { reader } = await readTOC(layers[0]!.blob);
    expect(reader.lookup('zoo/dup.txt')).toMatchObject({ size: LATER_DUP_CONTENT.length, mode: 0o640 });
    expect((await reader.readFile('zoo/dup.txt')).toString()).toBe(LATER_DUP_CONTENT);
    expect(reader.lookup('zoo/link-then-file')?.type).toBe('reg');
    expect((await reader.readFile('zoo/link-then-file')).toString()).toBe('now a file\n');
    expect(reader.lookup('zoo/file-then-dir')?.type).toBe('dir');
    const old = await readTOC(layers[1]!.blob);
    expect((await old.reader.readFile('old/dup')).toString()).toBe('second\n');
    expect(await reader.verifyAll()).toMatchObject({ chunks: expect.any(Number) });
  });

  it('keeps times before 1970, past 2038 and rounds nanoseconds as stargz does; the epoch is omitted', () => {
    const modtime = (layer: number, name: string) => entriesNamed(layers[layer]!.toc, name).at(-1)?.modtime;
    expect(modtime(0, 'times/epoch')).toBeUndefined();
    expect(modtime(0, 'times/epoch-and-a-bit')).toBeUndefined();
    expect(modtime(1, 'old/just-before-epoch')).toBe('1970-01-01T00:00:00Z');
    expect(modtime(0, 'times/past-2038')).toBe('2100-01-01T00:00:00Z');
    expect(modtime(0, 'times/nanos-down')).toBe('2020-09-13T12:26:40Z');
    expect(modtime(0, 'times/nanos-up')).toBe('2020-09-13T12:26:41Z');
    expect(modtime(1, 'old/1969')).toBe('1969-01-01T00:00:00Z');
    // -31536000.5 s: Go's Time.Round takes halfway up, to the later second.
    expect(modtime(1, 'old/1969-nanos')).toBe('1969-01-01T00:00:00Z');
    expect(modtime(1, 'old/dup')).toBe('1968-12-31T23:59:00Z');
  });

  it('keeps owner names, once per owner as ctr-remote writes them', () => {
    const { toc } = layers[0]!;
    const firstOf = (uid: number) => toc.entries.find((e) => e.type !== 'chunk' && (e.uid ?? 0) === uid);
    expect(firstOf(OWNER.uid)).toMatchObject({ userName: OWNER.uname, groupName: OWNER.gname });
    expect(entriesNamed(toc, 'owners')[0]).toMatchObject({ userName: 'root', groupName: 'root' });
    expect(entriesNamed(toc, 'owners/nobody')[0]).toMatchObject({ userName: 'nobody', groupName: 'nogroup' });
    // The second file of the same owner does not repeat the names (stargz's nameIfChanged).
    expect(entriesNamed(toc, 'owners/app')[0]!.userName).toBeUndefined();
  });

  describe.skipIf(!containerdAvailable())('against ctr-remote 0.12', () => {
    let containerd: RunningContainerd;
    beforeAll(async () => {
      containerd = await startContainerd({ namespace: `esgz-fidelity-${format.name}` });
    }, 60_000);
    afterAll(async () => {
      await containerd?.stop();
    });

    it("ctr-remote's reader opens every layer and agrees on its TOC digest", async () => {
      for (const { blob, annotations } of layers)
        expect(await ctrRemoteTOCDigest(containerd, blob, [...format.getTocDigestFlags])).toBe(
          annotations[TOC_DIGEST_ANNOTATION],
        );
    });

    it("ctr-remote's conversion has our TOC, owner names and times included, less the earlier duplicates", async () => {
      const ctrRemoteFlags = [format.flags[0], '--estargz-chunk-size', String(CHUNK_SIZE)];
      for (const [i, entries] of LAYERS.entries()) {
        const ref = await convertWithCtrRemote(containerd, await buildTar(entries), ctrRemoteFlags);
        const refTOC = (await readTOC(ref.blob)).toc;
        expect(tocStructure(withoutEarlierDuplicates(layers[i]!.toc))).toEqual(tocStructure(refTOC));
      }
    }, 120_000);
  });
});
