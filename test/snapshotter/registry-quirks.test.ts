/**
 * Lazy pull, run and copy through a registry that behaves like the ones in the wild (the quirk
 * proxy in front of the real test registry): for each behaviour, `image rpull` + `run` of an
 * eStargz and of a zstd:chunked busybox print the workload's output with the files read inside
 * the container equal to the originals byte for byte, `image copy` keeps every digest, and the
 * proxy's log shows the behaviour was met (so a pass means something).
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxImage } from '../fixtures/debian.js';
import { esgz } from '../harness/cli.js';
import { startQuirkProxy, type QuirkProxy, type Quirks } from '../harness/quirk-proxy.js';
import { registryAddress } from '../harness/registry.js';

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

describe('lazy pull, run and copy through registry quirks', () => {
  for (const [i, quirk] of CASES.entries()) {
    it(
      quirk.name,
      async () => {
        for (const format of FORMATS) {
          proxy.set(quirk.quirks);
          proxy.clearLog();
          const ref = `${proxy.address}/quirks/busybox:${format.tag}`;
          const root = join(work, `root-${i}-${format.tag}`);
          const pulled = await esgz('image', 'rpull', '--plain-http', ...READ_TIMEOUT, '--root', root, ref);
          expect(pulled.exitCode, `${format.name}: ${pulled.stderr}`).toBe(0);
          const ran = await esgz(
            'run',
            '--rm',
            '--plain-http',
            ...READ_TIMEOUT,
            '--root',
            root,
            ref,
            `quirk-${i}-${format.tag}`,
            'sh',
            '-c',
            WORKLOAD,
          );
          expect(ran.exitCode, `${format.name}: ${ran.stderr}`).toBe(0);
          const sums = ran.stdout.split('\n').slice(0, FILES.length);
          expect(sums, format.name).toEqual(FILES.map((f, j) => `${expectedSums[j]}  ${f}`));
          expect(ran.stdout).toContain('hello from the esgz busybox fixture');

          const copied = await esgz(
            'image',
            'copy',
            '--plain-http',
            ...READ_TIMEOUT,
            '--json',
            ref,
            `oci:${join(work, `copy-${i}-${format.tag}`)}:c`,
          );
          expect(copied.exitCode, `${format.name}: ${copied.stderr}`).toBe(0);
          expect(JSON.parse(copied.stdout).digest).toBe(digests.get(format.tag));
          quirk.met(proxy);
        }
      },
      180_000,
    );
  }

  it('pushes through a registry that refuses HEAD (existence and size by a ranged GET)', async () => {
    proxy.set({ refuseHead: true });
    proxy.clearLog();
    const layout = `oci:${join(work, 'copy-2-esgz')}:c`;
    const pushed = await esgz('image', 'copy', '--plain-http', '--json', layout, `${proxy.address}/quirks/pushed:1`);
    expect(pushed.exitCode, pushed.stderr).toBe(0);
    expect(JSON.parse(pushed.stdout).digest).toBe(digests.get('esgz'));
    expect(proxy.count({ method: 'HEAD', status: 403 })).toBe(1); // remembered: one refusal is enough
    expect(proxy.log.filter((e) => e.range === 'bytes=0-0').length).toBeGreaterThan(0);
  }, 60_000);
});
