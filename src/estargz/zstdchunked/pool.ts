/**
 * zstd levels and the zstd member pool (zstd-napi, the bundled libzstd, on the shared worker pool
 * of ../member-pool.ts). Each member becomes exactly one zstd frame compressed single-threaded
 * with fixed parameters (checksum and content size always written, as stargz-snapshotter's
 * klauspost encoder writes them), so its bytes depend only on the input and the level.
 */
import { EsgzError } from '../../errors.js';
import { MemberPool } from '../member-pool.js';

export const DEFAULT_ZSTD_LEVEL = 3;
export const MIN_ZSTD_LEVEL = 1;
export const MAX_ZSTD_LEVEL = 22;

export function checkZstdLevel(level: number): number {
  if (!Number.isInteger(level) || level < MIN_ZSTD_LEVEL || level > MAX_ZSTD_LEVEL) {
    throw new EsgzError(
      'BAD_FLAG',
      `zstd compression level ${level} is out of range ${MIN_ZSTD_LEVEL}-${MAX_ZSTD_LEVEL}`,
    );
  }
  return level;
}

/** A member pool writing one zstd frame per member; no thread starts until `start()` or the first batch. */
export function createZstdPool(options: { level?: number; workers?: number } = {}): MemberPool {
  return new MemberPool({
    kind: 'zstd',
    level: checkZstdLevel(options.level ?? DEFAULT_ZSTD_LEVEL),
    workers: options.workers,
    label: 'zstd',
  });
}
