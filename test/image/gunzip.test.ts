import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createGunzip, isalAvailable, selectGunzipBackend, type GunzipBackend } from '../../src/image/gunzip.js';

/** Decompresses `chunks` (fed one by one) with `backend`; the output or the error message. */
async function gunzipWith(backend: GunzipBackend, chunks: Buffer[]): Promise<{ data?: Buffer; error?: string }> {
  const out: Buffer[] = [];
  try {
    for await (const piece of Readable.from(chunks).pipe(createGunzip(backend))) out.push(piece as Buffer);
    return { data: Buffer.concat(out) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** Text, zeros and random bytes: every kind of deflate block. */
function mixedPayload(size: number): Buffer {
  const parts: Buffer[] = [];
  for (let total = 0, i = 0; total < size; i++) {
    const part = i % 3 === 0 ? Buffer.from(`line ${i} of some text that repeats itself\n`.repeat(500)) : i % 3 === 1 ? Buffer.alloc(40_000) : randomBytes(30_000);
    parts.push(part);
    total += part.length;
  }
  return Buffer.concat(parts).subarray(0, size);
}

function split(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('gunzip (ISA-L addon, zlib fallback)', () => {
  it('the ISA-L addon is built and chosen by default; ESGZ_GUNZIP_BACKEND picks or rejects', () => {
    expect(isalAvailable()).toEqual({ available: true });
    expect(selectGunzipBackend(undefined)).toBe('isal');
    expect(selectGunzipBackend('zlib')).toBe('zlib');
    expect(() => selectGunzipBackend('pigz')).toThrow(/ESGZ_GUNZIP_BACKEND=pigz is not one of isal, zlib, auto/);
  });

  it('gives the same bytes as zlib for large inputs fed in any chunking, and for concatenated members', async () => {
    const payload = mixedPayload(6 * 1024 * 1024 + 123);
    const gz = zlib.gzipSync(payload, { level: 6 });
    for (const size of [1, 4096, 65_536, 1 << 20]) {
      const chunks = size === 1 ? split(gz.subarray(0, 5000), 1).concat([gz.subarray(5000)]) : split(gz, size);
      const got = await gunzipWith('isal', chunks);
      expect(got.error).toBeUndefined();
      expect(sha(got.data!)).toBe(sha(payload));
    }
    const members = Buffer.concat([zlib.gzipSync(payload.subarray(0, 1000)), zlib.gzipSync(Buffer.alloc(0)), zlib.gzipSync(payload.subarray(1000))]);
    const [isal, node] = await Promise.all([gunzipWith('isal', split(members, 777)), gunzipWith('zlib', split(members, 777))]);
    expect(sha(isal.data!)).toBe(sha(payload));
    expect(sha(node.data!)).toBe(sha(payload));
  });

  it('rejects what zlib rejects: truncation, a bad checksum, a bad header, trailing garbage, empty input; ignores zero padding', async () => {
    const gz = zlib.gzipSync(Buffer.from('hello world\n'.repeat(100)));
    const badCRC = Buffer.from(gz);
    badCRC[badCRC.length - 8]! ^= 0xff;
    const cases: Array<[string, Buffer, RegExp | string]> = [
      ['truncated', gz.subarray(0, gz.length - 5), /unexpected end of file/],
      ['bad checksum', badCRC, /checksum|data check/],
      ['not gzip', Buffer.from('plain text, not gzip at all'), /header/],
      ['trailing garbage', Buffer.concat([gz, Buffer.from('garbage!')]), /header|end of file/],
      ['empty', Buffer.alloc(0), /unexpected end of file/],
    ];
    for (const [name, input, expected] of cases) {
      for (const backend of ['isal', 'zlib'] as const) {
        const got = await gunzipWith(backend, [input]);
        expect(got.error, `${name} (${backend})`).toMatch(expected);
      }
    }
    const padded = await gunzipWith('isal', [gz, Buffer.alloc(1024)]);
    expect(padded.data?.toString()).toBe('hello world\n'.repeat(100));
  });
});
