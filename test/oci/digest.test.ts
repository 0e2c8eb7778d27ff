// The streaming digest verifier others use for every blob read; sha256sum is the oracle.
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import {
  DigestCounter,
  DigestVerifier,
  digestOf,
  isDigest,
  parseDigest,
  sha256Hex,
  verifyBuffer,
} from '../../src/oci/digest.js';
import { readAll, rejection, streamOf } from '../registry/helpers.js';

async function sha256sum(data: Buffer): Promise<string> {
  const { stdout } = await execa('sha256sum', { input: data });
  return stdout.split(' ')[0]!;
}

describe('digest helpers', () => {
  it('hash like sha256sum', async () => {
    for (const data of [Buffer.alloc(0), Buffer.from('esgz'), randomBytes(100_000)]) {
      const hex = await sha256sum(data);
      expect(sha256Hex(data)).toBe(hex);
      expect(digestOf(data)).toBe(`sha256:${hex}`);
    }
  });

  it('validate digest strings', () => {
    const good = digestOf('x');
    expect(parseDigest(good)).toEqual({ algorithm: 'sha256', hex: good.slice(7) });
    expect(isDigest(good)).toBe(true);
    expect(isDigest(`sha512:${'a'.repeat(128)}`)).toBe(true);
    for (const bad of [
      '',
      'sha256',
      'sha256:',
      `sha256:${'A'.repeat(64)}`,
      `sha256:${'a'.repeat(63)}`,
      `md5:${'a'.repeat(32)}`,
      'latest',
    ]) {
      expect(isDigest(bad)).toBe(false);
    }
    expect(() => parseDigest('sha256:abc', 'layer 3')).toThrow(/^layer 3: "sha256:abc" is not a valid sha256 digest/);
    expect(() => verifyBuffer(Buffer.from('y'), { digest: good }, 'config')).toThrow(/config: digest mismatch/);
    expect(() => verifyBuffer(Buffer.from('x'), { digest: good, size: 2 }, 'config')).toThrow(
      /expected 2 bytes, got 1/,
    );
    verifyBuffer(Buffer.from('x'), { digest: good, size: 1 }, 'config');
  });
});

describe('DigestVerifier', () => {
  const data = randomBytes(250_000);
  const desc = { digest: digestOf(data), size: data.length };

  it('passes the exact bytes through', async () => {
    const verifier = new DigestVerifier(desc, 'blob');
    const out = await readAll(streamOf(data).pipe(verifier));
    expect(out.equals(data)).toBe(true);
    expect(verifier.size).toBe(data.length);
  });

  it('errors on a flipped byte, a short stream and a long stream', async () => {
    const flipped = Buffer.from(data);
    flipped[77_777] = flipped[77_777]! ^ 0x10;
    const mismatch = await rejection(readAll(streamOf(flipped).pipe(new DigestVerifier(desc, 'blob X from Y'))));
    expect(mismatch.code).toBe('DIGEST_MISMATCH');
    expect(mismatch.message).toBe(`blob X from Y: digest mismatch: expected ${desc.digest}, got ${digestOf(flipped)}`);

    const short = await rejection(readAll(streamOf(data.subarray(0, 1000)).pipe(new DigestVerifier(desc, 'blob'))));
    expect(short.code).toBe('SIZE_MISMATCH');
    expect(short.message).toBe(`blob: truncated: got 1000 of ${data.length} bytes`);

    const long = await rejection(
      readAll(streamOf(Buffer.concat([data, Buffer.from('!')])).pipe(new DigestVerifier(desc, 'blob'))),
    );
    expect(long.code).toBe('SIZE_MISMATCH');
  });

  it('checks the digest alone when the size is unknown', async () => {
    const ok = await readAll(streamOf(data).pipe(new DigestVerifier({ digest: desc.digest }, 'blob')));
    expect(ok.length).toBe(data.length);
    const err = await rejection(
      readAll(streamOf(data.subarray(1)).pipe(new DigestVerifier({ digest: desc.digest }, 'blob'))),
    );
    expect(err.code).toBe('DIGEST_MISMATCH');
  });
});

describe('DigestCounter', () => {
  it('learns digest and size while passing bytes through', async () => {
    const data = randomBytes(123_457);
    const counter = new DigestCounter();
    const out = await readAll(streamOf(data).pipe(counter));
    expect(out.equals(data)).toBe(true);
    expect(counter.size).toBe(data.length);
    expect(counter.digest).toBe(`sha256:${await sha256sum(data)}`);
  });

  it('refuses to report a digest before the end', () => {
    expect(() => new DigestCounter().digest).toThrow(/before the stream ended/);
  });
});
