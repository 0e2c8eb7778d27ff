// The registry client against registries that behave like real ones do (the quirk proxy in front
// of the real test registry): what it reads is always the asked bytes, or an error, never a guess.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/registry/client.js';
import { retryAfterMs } from '../../src/registry/range.js';
import { startQuirkProxy, type QuirkProxy } from '../harness/quirk-proxy.js';
import { registryAddress } from '../harness/registry.js';
import { readAll, rejection, streamOf, tinyImage, uniqueRepo } from './helpers.js';

const image = tinyImage(300_000);
const repo = uniqueRepo('quirks');
const RANGES = [
  { offset: 10, length: 1000 },
  { offset: 100_000, length: 5000 },
  { offset: 299_000, length: 1000 },
];
let proxy: QuirkProxy;

/** A fresh client per case: host behaviour is remembered per process, so each case gets its own proxy port's worth. */
function client(): RegistryClient {
  return new RegistryClient(proxy.address, { plainHttp: true, retryDelayMs: 10, readTimeoutMs: 500 });
}

const blobLog = () => proxy.log.filter((e) => e.path.includes('/blobs/'));
const slice = (r: { offset: number; length: number }) => image.layer.bytes.subarray(r.offset, r.offset + r.length);

beforeAll(async () => {
  const direct = new RegistryClient(registryAddress(), { plainHttp: true });
  await direct.uploadBlob(repo, image.layer.desc, () => streamOf(image.layer.bytes));
  await direct.close();
});

describe('registry quirks (library)', () => {
  beforeAll(async () => {
    proxy = await startQuirkProxy(registryAddress());
  });
  afterAll(() => proxy.close());

  it('reads several ranges in one multi-range request where the registry takes them', async () => {
    proxy.set({});
    proxy.clearLog();
    const c = client();
    const parts = await c.readBlobRanges(repo, image.layer.desc, RANGES);
    expect(parts).toEqual(RANGES.map(slice));
    expect(blobLog().map((e) => [e.range, e.status])).toEqual([['bytes=10-1009,100000-104999,299000-299999', 206]]);
    await c.close();
  });

  for (const status of [400, 416, 501] as const) {
    it(`falls back to single ranges when multi-range is refused with ${status}, and remembers it`, async () => {
      proxy = await restart({ multiRange: status });
      const c = client();
      expect(await c.readBlobRanges(repo, image.layer.desc, RANGES)).toEqual(RANGES.map(slice));
      expect(await c.readBlobRanges(repo, image.layer.desc, RANGES)).toEqual(RANGES.map(slice));
      expect(c.behaviour.multiRangeRefused).toBe(true);
      expect(proxy.count({ status })).toBe(1);
      expect(blobLog().filter((e) => e.status === 206)).toHaveLength(2 * RANGES.length);
      await c.close();
    });
  }

  it('cuts a range out of a whole-blob 200 without reading the rest', async () => {
    proxy = await restart({ ignoreRange: true });
    const c = client();
    expect(await c.readBlobRange(repo, image.layer.desc, 1000, 500)).toEqual(slice({ offset: 1000, length: 500 }));
    expect(c.behaviour.rangeIgnored).toBe(true);
    expect(proxy.log[proxy.log.length - 1]!.status).toBe(200);
    // The proxy sends what the socket takes; far less than the blob is ever read by esgz.
    expect(await c.readBlobRanges(repo, image.layer.desc, RANGES)).toEqual(RANGES.map(slice));
    await c.close();
  });

  it('trims a 206 that starts early, and refuses one that holds other bytes', async () => {
    proxy = await restart({ shiftRange: -700 });
    let c = client();
    expect(await c.readBlobRange(repo, image.layer.desc, 5000, 300)).toEqual(slice({ offset: 5000, length: 300 }));
    await c.close();
    proxy.set({ shiftRange: 700 });
    c = client();
    const err = await rejection(c.readBlobRange(repo, image.layer.desc, 5000, 300));
    expect(err.code).toBe('REGISTRY');
    expect(err.message).toMatch(/answered range "bytes 5700-5999\/\d+", which does not hold bytes 5000-5299/);
    await c.close();
  });

  it('asks for sizes with a bytes=0-0 GET when HEAD is refused', async () => {
    proxy = await restart({ refuseHead: true });
    const c = client();
    expect(await c.headBlob(repo, image.layer.desc.digest)).toBe(image.layer.desc.size);
    expect(await c.hasBlob(repo, image.layer.desc)).toBe(true);
    expect(await c.blobExists(repo, `sha256:${'0'.repeat(64)}`)).toBe(false);
    expect(proxy.count({ method: 'HEAD' })).toBe(1);
    expect(blobLog().filter((e) => e.range === 'bytes=0-0')).toHaveLength(3);
    await c.close();
  });

  it('reuses a redirect location and renews it from the registry when it expires', async () => {
    proxy = await restart({ redirect: { maxUses: 2, expiredStatus: 410 } });
    const c = client();
    for (let i = 0; i < 5; i++) {
      const r = { offset: i * 1000, length: 100 };
      expect(await c.readBlobRange(repo, image.layer.desc, r.offset, r.length)).toEqual(slice(r));
    }
    expect((await readAll(await c.openBlob(repo, image.layer.desc))).equals(image.layer.bytes)).toBe(true);
    // 6 reads, 2 per signed URL: 3 URLs; each expired one was refused once and renewed.
    expect(proxy.count({ status: 307 })).toBe(3);
    expect(proxy.storage.count({ status: 410 })).toBe(2);
    expect(c.behaviour.expiredLocations).toBe(2);
    await c.close();
  });

  it('resumes a range after a reset and after a stall, from the last byte received', async () => {
    proxy = await restart({ resetMidBody: { every: 2 } });
    let c = client();
    expect(await c.readBlobRange(repo, image.layer.desc, 0, 200_000)).toEqual(slice({ offset: 0, length: 200_000 }));
    expectResumed();
    await c.close();
    proxy = await restart({ stallMidBody: { every: 2 } });
    c = client();
    const started = Date.now();
    expect(await c.readBlobRange(repo, image.layer.desc, 0, 200_000)).toEqual(slice({ offset: 0, length: 200_000 }));
    expect(Date.now() - started).toBeLessThan(5000);
    expectResumed();
    await c.close();
  });

  it('gives up on a stream that stalls every time, in bounded time, with a one-line error', async () => {
    proxy = await restart({ stallMidBody: { every: 1 } });
    const c = client();
    const started = Date.now();
    const err = await rejection(c.readBlobRange(repo, image.layer.desc, 0, 200_000));
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(err.message).not.toContain('\n');
    expect(Date.now() - started).toBeLessThan(5000);
    await c.close();
  });

  it('honours Retry-After (seconds or an HTTP date) on 429 and 503', async () => {
    expect(retryAfterMs('2')).toBe(2000);
    expect(retryAfterMs(new Date(Date.now() + 3000).toUTCString())).toBeGreaterThan(1000);
    expect(retryAfterMs('soon')).toBeUndefined();
    proxy = await restart({ throttle: { status: 429, retryAfterSeconds: 1, every: 2 } });
    const c = client();
    const started = Date.now();
    expect(await c.readBlobRange(repo, image.layer.desc, 0, 100)).toEqual(slice({ offset: 0, length: 100 }));
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(blobLog().map((e) => e.status)).toEqual([429, 206]);
    await c.close();
  });
});

/** One request cut short, then one for the rest: from where the first stopped, not from the start. */
function expectResumed(): void {
  const ranges = blobLog().map((e) => e.range);
  expect(ranges).toHaveLength(2);
  expect(ranges[0]).toBe('bytes=0-199999');
  const resumedAt = Number(/^bytes=(\d+)-199999$/.exec(ranges[1]!)?.[1]);
  expect(resumedAt).toBeGreaterThan(0);
  expect(resumedAt).toBeLessThanOrEqual(100_000);
}

/** A new proxy (a new port, so a new host to the per-process behaviour record) with `quirks`. */
async function restart(quirks: Parameters<QuirkProxy['set']>[0]): Promise<QuirkProxy> {
  await proxy.close();
  const next = await startQuirkProxy(registryAddress());
  next.set(quirks);
  return next;
}
