import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { EsgzError } from '../errors.js';

/**
 * Content digests (image-spec descriptor.md "Digests"): `algorithm:encoded`. sha256 is what
 * every registry and layout uses; sha512 is accepted because the spec registers it.
 */
const HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };
const DIGEST_PATTERN = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export interface ParsedDigest {
  algorithm: 'sha256' | 'sha512';
  hex: string;
}

/** Splits and validates a digest string; throws BAD_FORMAT naming `where` when it is malformed. */
export function parseDigest(digest: string, where = 'digest'): ParsedDigest {
  const match = DIGEST_PATTERN.exec(digest);
  if (!match) throw new EsgzError('BAD_FORMAT', `${where}: "${digest}" is not a digest (expected sha256:<64 hex>)`);
  const algorithm = match[1]!;
  const hex = match[2]!;
  const length = HEX_LENGTH[algorithm];
  if (length === undefined)
    throw new EsgzError('UNSUPPORTED', `${where}: digest algorithm "${algorithm}" is not supported (sha256, sha512)`);
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) {
    throw new EsgzError(
      'BAD_FORMAT',
      `${where}: "${digest}" is not a valid ${algorithm} digest (${length} lowercase hex digits)`,
    );
  }
  return { algorithm: algorithm as ParsedDigest['algorithm'], hex };
}

export function isDigest(value: string): boolean {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

export function sha256Hex(data: Buffer | Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** `sha256:<hex>` of `data`. */
export function digestOf(data: Buffer | Uint8Array | string): string {
  return `sha256:${sha256Hex(data)}`;
}

/** Hashes `data` with the algorithm `expected` names and compares; for whole in-memory objects (manifests, configs). */
export function verifyBuffer(data: Buffer, expected: { digest: string; size?: number }, what: string): void {
  const { algorithm, hex } = parseDigest(expected.digest, what);
  if (expected.size !== undefined && data.length !== expected.size) {
    throw new EsgzError('SIZE_MISMATCH', `${what}: expected ${expected.size} bytes, got ${data.length}`);
  }
  const actual = createHash(algorithm).update(data).digest('hex');
  if (actual !== hex) {
    throw new EsgzError(
      'DIGEST_MISMATCH',
      `${what}: digest mismatch: expected ${expected.digest}, got ${algorithm}:${actual}`,
    );
  }
}

/**
 * A pass-through stream that hashes (sha256) and counts what flows through it; read `digest`
 * and `size` after it ends. For writers that learn a blob's descriptor while producing it.
 */
export class DigestCounter extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private finalDigest: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.finalDigest = `sha256:${this.hash.digest('hex')}`;
    callback();
  }

  get size(): number {
    return this.bytes;
  }

  /** Available once the stream has flushed. */
  get digest(): string {
    if (this.finalDigest === undefined)
      throw new EsgzError('INTERNAL', 'DigestCounter.digest read before the stream ended');
    return this.finalDigest;
  }
}

/**
 * A pass-through stream that checks bytes against a descriptor while they stream: it errors as
 * soon as more than `size` bytes arrive, and at the end when fewer arrived or the digest differs.
 * So a consumer that reads it to the end has either the exact blob or an error, never a silently
 * wrong one. `what` names the blob and where it came from in the messages.
 */
export class DigestVerifier extends Transform {
  private readonly hash: Hash;
  private readonly expectedHex: string;
  private readonly algorithm: string;
  private bytes = 0;

  constructor(
    private readonly expected: { digest: string; size?: number },
    private readonly what: string,
  ) {
    super();
    const parsed = parseDigest(expected.digest, what);
    this.algorithm = parsed.algorithm;
    this.expectedHex = parsed.hex;
    this.hash = createHash(parsed.algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.expected.size !== undefined && this.bytes > this.expected.size) {
      callback(new EsgzError('SIZE_MISMATCH', `${this.what}: more than the expected ${this.expected.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.expected.size !== undefined && this.bytes !== this.expected.size) {
      callback(
        new EsgzError('SIZE_MISMATCH', `${this.what}: truncated: got ${this.bytes} of ${this.expected.size} bytes`),
      );
      return;
    }
    const actual = this.hash.digest('hex');
    if (actual !== this.expectedHex) {
      callback(
        new EsgzError(
          'DIGEST_MISMATCH',
          `${this.what}: digest mismatch: expected ${this.expected.digest}, got ${this.algorithm}:${actual}`,
        ),
      );
      return;
    }
    callback();
  }

  get size(): number {
    return this.bytes;
  }
}

/** The 12 hex digits of a digest that people read in messages and tables (docker's short ID). */
export function shortDigest(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}
