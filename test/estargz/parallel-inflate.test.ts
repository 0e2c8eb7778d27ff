import { gunzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { inflateMembers, memberStarts } from '../../src/estargz/parallel-inflate.js';
import { buildTar, dir, file, generatedFile } from '../fixtures/tar.js';
import { convertBuffer } from './helpers.js';

/** A layer of many small files and a few multi-chunk ones, some compressible, some random. */
async function layerBlob(): Promise<{ blob: Buffer; starts: number[] }> {
  const entries = [dir('d')];
  for (let i = 0; i < 400; i++)
    entries.push(generatedFile(`d/small-${i}`, 3000 + i * 7, { compressible: i % 2 === 0 }));
  entries.push(generatedFile('d/big-random', 5 << 20), generatedFile('d/big-text', 9 << 20, { compressible: true }));
  entries.push(file('d/last', 'end\n'));
  const { blob, result } = await convertBuffer(await buildTar(entries), { chunkSize: 1 << 20, level: 1 });
  return { blob, starts: memberStarts(result.toc, result.tocOffset) };
}

/** The blob in stream-sized pieces, as a download delivers it. */
function pieces(blob: Buffer, size = 64 * 1024): Readable {
  const parts: Buffer[] = [];
  for (let at = 0; at < blob.length; at += size) parts.push(blob.subarray(at, at + size));
  return Readable.from(parts);
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of source) parts.push(part);
  return Buffer.concat(parts);
}

describe('parallel inflate of eStargz members', () => {
  it('gives the bytes one gunzip of the whole blob gives, in ranges cut at member starts', async () => {
    const { blob, starts } = await layerBlob();
    expect(starts.length).toBeGreaterThan(400);
    const inflated = await collect(inflateMembers(pieces(blob), starts, { where: 'test layer' }));
    expect(inflated.equals(gunzipSync(blob))).toBe(true);
  });

  it('fails, never changes bytes, when a cut is not a member start', async () => {
    const { blob, starts } = await layerBlob();
    const wrong = [...starts.slice(0, 200), starts[200]! + 5, ...starts.slice(201)];
    await expect(collect(inflateMembers(pieces(blob), wrong, { where: 'test layer' }))).rejects.toThrow(
      /test layer: gzip member inflate failed/,
    );
  });

  it('fails when a member declares a smaller size than it inflates to (the memory bound)', async () => {
    const { blob, starts } = await layerBlob();
    const lying = Buffer.from(blob);
    // The trailer of the member before the 100th start: ISIZE says 1 byte.
    lying.writeUInt32LE(1, starts[100]! - 4);
    await expect(collect(inflateMembers(pieces(lying), starts, { where: 'test layer' }))).rejects.toThrow(/test layer/);
  });
});
