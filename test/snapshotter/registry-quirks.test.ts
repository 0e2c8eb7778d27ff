/**
 * Lazy pull, run and copy through a registry that behaves like the ones in the wild (the quirk
 * proxy in front of the real test registry): for each behaviour, `image rpull` + `run` of an
 * eStargz and of a zstd:chunked busybox print the workload's output with the files read inside
 * the container equal to the originals byte for byte, `image copy` keeps every digest, and the
 * proxy's log shows the behaviour was met (so a pass means something).
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxImage } from '../fixtures/debian.js';
import { esgz, esgzMeasured } from '../harness/cli.js';
import { startQuirkProxy, type QuirkProxy, type Quirks } from '../harness/quirk-proxy.js';
import { registryAddress } from '../harness/registry.js';
import { longTests } from '../harness/long-tests.js';

const FORMATS = [
  { name: 'eStargz', flag: '--estargz', tag: 'esgz' },
  { name: 'zstd:chunked', flag: '--zstdchunked', tag: 'zstdchunked' },
] as const;
const FILES = ['/bin/busybox', '/etc/hello'];
const WORKLOAD = `sha256sum ${FILES.join(' ')}; cat /etc/hello`;
/** Short, so a stalled response costs a second, not the default 30. */
const READ_TIMEOUT = ['--http-read-timeout', '1'];

interface Case {
  name: string;
  quirks: Quirks;
  /** What the proxy's (and storage's) log must show, so the behaviour was really met. */
  met: (proxy: QuirkProxy) => void;
}

const rangeGets = (proxy: QuirkProxy) => proxy.log.filter((e) => e.method === 'GET' && e.range !== undefined);

const CASES: Case[] = [
  {
    name: 'multi-range refused (400)',
    quirks: { multiRange: 400 },
    // esgz reads one range per request on this path: nothing is refused.
    met: (proxy) => expect(proxy.count({ status: 400 })).toBe(0),
  },
  {
    name: 'Range answered 200 with the whole blob',
    quirks: { ignoreRange: true },
    met: (proxy) => expect(rangeGets(proxy).filter((e) => e.status === 200).length).toBeGreaterThan(0),
  },
  {
    name: 'HEAD on blobs refused with 403',
    quirks: { refuseHead: true },
    // Pulls take sizes from descriptors and never HEAD a blob; the push below meets the refusal.
    met: (proxy) => expect(proxy.count({ method: 'HEAD' })).toBe(0),
  },
  {
    name: '206 starting earlier than asked',
    quirks: { shiftRange: -333 },
    met: (proxy) => expect(rangeGets(proxy).filter((e) => e.status === 206).length).toBeGreaterThan(0),
  },
  {
    name: 'blob GETs redirected to storage whose signed URLs expire after 2 uses (403)',
    quirks: { redirect: { maxUses: 2, expiredStatus: 403 } },
    met: (proxy) => {
      expect(proxy.count({ method: 'GET', status: 307 })).toBeGreaterThan(0);
      expect(proxy.storage.count({ status: 403 })).toBeGreaterThan(0);
      expect(proxy.storage.log.filter((e) => e.authorization)).toEqual([]);
    },
  },
  {
    name: 'signed URLs that expire after 300 ms (410)',
    quirks: { redirect: { maxAgeMs: 300, expiredStatus: 410 }, bytesPerSecond: 4_000_000 },
    met: (proxy) => expect(proxy.storage.count({ status: 206 })).toBeGreaterThan(0),
  },
  {
    name: '429 with Retry-After on every other blob GET',
    quirks: { throttle: { status: 429, retryAfterSeconds: 1, every: 2 } },
    met: (proxy) => expect(proxy.count({ status: 429 })).toBeGreaterThan(0),
  },
  {
    name: '503 with Retry-After on every third blob GET',
    quirks: { throttle: { status: 503, retryAfterSeconds: 0, every: 3 } },
    met: (proxy) => expect(proxy.count({ status: 503 })).toBeGreaterThan(0),
  },
  {
    name: 'connection reset mid-body on every other blob GET',
    quirks: { resetMidBody: { every: 2 } },
    met: (proxy) => expect(proxy.log.filter((e) => e.path.includes('/blobs/')).length).toBeGreaterThan(2),
  },
  {
    name: 'stall mid-body on every other blob GET',
    quirks: { stallMidBody: { every: 2 } },
    met: (proxy) => expect(proxy.log.filter((e) => e.path.includes('/blobs/')).length).toBeGreaterThan(2),
  },
  {
    name: 'a slow link (2 MB/s)',
    quirks: { bytesPerSecond: 2_000_000 },
    met: (proxy) => expect(rangeGets(proxy).length).toBeGreaterThan(0),
  },
];

let proxy: QuirkProxy;
let work: string;
let expectedSums: string[];
const digests = new Map<string, string>();

beforeAll(async () => {
  work = await mkdtemp(join(os.tmpdir(), 'esgz-quirks-'));
  proxy = await startQuirkProxy(registryAddress());
  const fixture = await busyboxImage();
  await execa('tar', ['-xf', fixture.layers[0]!.tarPath, '-C', work, ...FILES.map((f) => f.slice(1))]);
  expectedSums = await Promise.all(
    FILES.map(async (f) =>
      createHash('sha256')
        .update(await readFile(join(work, f)))
        .digest('hex'),
    ),
  );
  for (const format of FORMATS) {
    const ref = `${registryAddress()}/quirks/busybox:${format.tag}`;
    const converted = await esgz('image', 'convert', format.flag, '--oci', '--plain-http', '--json', fixture.ref, ref);
    expect(converted.exitCode, converted.stderr).toBe(0);
    digests.set(format.tag, JSON.parse(converted.stdout).digest);
  }
}, 300_000);

afterAll(async () => {
  await proxy?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** rpull + run of one format through the proxy, the files read checked, then a copy out of it. */
async function pullRunCopy(format: (typeof FORMATS)[number], id: string): Promise<void> {
  const ref = `${proxy.address}/quirks/busybox:${format.tag}`;
  const root = join(work, `root-${id}`);
  const pulled = await esgz('image', 'rpull', '--plain-http', ...READ_TIMEOUT, '--root', root, ref);
  expect(pulled.exitCode, `${format.name}: ${pulled.stderr}`).toBe(0);
  const ran = await esgz('run', '--rm', '--plain-http', ...READ_TIMEOUT, '--root', root, ref, id, 'sh', '-c', WORKLOAD);
  expect(ran.exitCode, `${format.name}: ${ran.stderr}`).toBe(0);
  const sums = ran.stdout.split('\n').slice(0, FILES.length);
  expect(sums, format.name).toEqual(FILES.map((f, j) => `${expectedSums[j]}  ${f}`));
  expect(ran.stdout).toContain('hello from the esgz busybox fixture');
  const copy = `oci:${join(work, `copy-${id}`)}:c`;
  const copied = await esgz('image', 'copy', '--plain-http', ...READ_TIMEOUT, '--json', ref, copy);
  expect(copied.exitCode, `${format.name}: ${copied.stderr}`).toBe(0);
  expect(JSON.parse(copied.stdout).digest).toBe(digests.get(format.tag));
}

describe.skipIf(!longTests)('lazy pull, run and copy through registry quirks', () => {
  for (const [i, quirk] of CASES.entries()) {
    it(
      quirk.name,
      async () => {
        proxy.set(quirk.quirks);
        proxy.clearLog();
        // One format after the other: `every: N` faults count requests, so the two must not interleave.
        for (const format of FORMATS) await pullRunCopy(format, `quirk-${i}-${format.tag}`);
        quirk.met(proxy);
      },
      180_000,
    );
  }

  it('pushes through a registry that refuses HEAD (existence and size by a ranged GET)', async () => {
    proxy.set({ refuseHead: true });
    proxy.clearLog();
    const layout = `oci:${join(work, 'copy-quirk-2-esgz')}:c`;
    const pushed = await esgz('image', 'copy', '--plain-http', '--json', layout, `${proxy.address}/quirks/pushed:1`);
    expect(pushed.exitCode, pushed.stderr).toBe(0);
    expect(JSON.parse(pushed.stdout).digest).toBe(digests.get('esgz'));
    expect(proxy.count({ method: 'HEAD', status: 403 })).toBe(1); // remembered: one refusal is enough
    expect(proxy.log.filter((e) => e.range === 'bytes=0-0').length).toBeGreaterThan(0);
  }, 60_000);
});

describe.skipIf(!longTests)('memory on a registry that answers Range with the whole blob', () => {
  it('keeps rpull + run of a 1 GiB layer under 256 MiB peak RSS', async () => {
    const started = Date.now();
    const layout = await bigLayerImage(join(work, 'big'));
    const target = `${registryAddress()}/quirks/big:esgz`;
    const converted = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--estargz-compression-level',
      '1',
      '--plain-http',
      `oci:${layout}:big`,
      target,
    );
    expect(converted.exitCode, converted.stderr).toBe(0);
    await rm(join(layout, 'blobs'), { recursive: true, force: true });
    const prepared = (Date.now() - started) / 1000;

    proxy.set({ ignoreRange: true });
    proxy.clearLog();
    const ref = `${proxy.address}/quirks/big:esgz`;
    const root = join(work, 'root-big');
    const pulled = await esgzMeasured('image', 'rpull', '--plain-http', '--root', root, ref);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const ran = await esgzMeasured('run', '--rm', '--plain-http', '--root', root, ref, 'big', 'sh', '-c', BIG_WORKLOAD);
    expect(ran.exitCode, ran.stderr).toBe(0);
    expect(ran.stdout).toBe(`big layer\n${BIG_HEAD}`);
    // The whole-blob answers were met (and streamed: several GiB went by, the memory stayed flat).
    const ignored = proxy.log.filter((e) => e.range !== undefined && e.status === 200);
    expect(ignored.length).toBeGreaterThan(2);
    console.log(
      `1 GiB layer, Range answered 200: prepared in ${prepared.toFixed(0)} s; rpull ${pulled.peakRssMiB.toFixed(0)} MiB ` +
        `${pulled.seconds.toFixed(1)} s, run ${ran.peakRssMiB.toFixed(0)} MiB ${ran.seconds.toFixed(1)} s`,
    );
    expect(pulled.peakRssMiB).toBeLessThan(256);
    expect(ran.peakRssMiB).toBeLessThan(256);
  }, 900_000);
});

const BIG_SIZE = 1024 * 1024 * 1024;
/** The first bytes of the big file are known, so the run can check what it read. */
const BIG_HEAD = 'esgz-big-layer-head';
const BIG_WORKLOAD = 'cat /srv/hello; head -c 19 /srv/big; echo';

/**
 * An OCI layout: the busybox layer, then an uncompressed layer holding /srv/hello and a 1 GiB
 * file of random bytes (so its eStargz blob is about 1 GiB too). Built with head, tar and
 * sha256sum, streaming: nothing of it is held in memory.
 */
async function bigLayerImage(dir: string): Promise<string> {
  const fixture = await busyboxImage();
  const tree = join(dir, 'tree');
  await execa('mkdir', ['-p', join(tree, 'srv'), join(dir, 'layout/blobs/sha256')]);
  await execa(
    'sh',
    [
      '-c',
      `printf 'big layer\\n' > srv/hello && { printf '${BIG_HEAD}'; head -c ${BIG_SIZE - BIG_HEAD.length} /dev/urandom; } > srv/big`,
    ],
    { cwd: tree },
  );
  const layout = join(dir, 'layout');
  const tar = join(dir, 'layer.tar');
  await execa('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '-cf', tar, '-C', tree, 'srv']);
  await rm(tree, { recursive: true, force: true });
  const tarDigest = `sha256:${(await execa('sha256sum', [tar])).stdout.split(' ')[0]}`;
  const { size: tarSize } = await stat(tar);
  await execa('mv', [tar, join(layout, 'blobs/sha256', tarDigest.slice(7))]);
  const base = fixture.layers[0]!;
  await execa('cp', [base.blobPath, join(layout, 'blobs/sha256', base.blobDigest.slice(7))]);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [base.diffId, tarDigest] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(layout, config)) },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: base.blobDigest, size: base.blobSize },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: tarDigest, size: tarSize },
      ],
    }),
  );
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...(await put(layout, manifest)),
        annotations: { 'org.opencontainers.image.ref.name': 'big' },
      },
    ],
  };
  await writeFile(join(layout, 'index.json'), JSON.stringify(index));
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  return layout;
}

async function put(layout: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(layout, 'blobs/sha256', hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}
