/**
 * The gzip backend: the libdeflate N-API addon (native/libdeflate) when it is built, else Node's
 * zlib. `ESGZ_GZIP_BACKEND=zlib` forces zlib (tests compare both). Members compress on the shared
 * worker pool (./member-pool.ts); each is compressed independently, so the bytes depend only on
 * the input, the backend and the level.
 */
import { existsSync } from 'node:fs';
import { EsgzError } from '../errors.js';
import { LIBDEFLATE_ADDON_PATH as ADDON_PATH, MemberPool, defaultWorkerCount } from './member-pool.js';

export type GzipBackend = 'libdeflate' | 'zlib';

let addonProbe: { available: boolean; error?: string } | undefined;

/** Whether the libdeflate addon loads in this process (probed once). */
export function libdeflateAvailable(): { available: boolean; error?: string } {
  if (addonProbe) return addonProbe;
  if (!existsSync(ADDON_PATH)) {
    addonProbe = { available: false, error: `addon not built (${ADDON_PATH} missing; run npm run build:native)` };
    return addonProbe;
  }
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, ADDON_PATH);
    addonProbe = { available: true };
  } catch (err) {
    addonProbe = { available: false, error: err instanceof Error ? err.message : String(err) };
  }
  return addonProbe;
}

/** The backend new pools use: libdeflate unless unavailable or ESGZ_GZIP_BACKEND=zlib. */
export function selectGzipBackend(requested: string | undefined = process.env.ESGZ_GZIP_BACKEND): GzipBackend {
  if (requested === 'zlib') return 'zlib';
  if (requested !== undefined && requested !== '' && requested !== 'libdeflate' && requested !== 'auto') {
    throw new EsgzError('BAD_FLAG', `ESGZ_GZIP_BACKEND=${requested} is not one of libdeflate, zlib, auto`);
  }
  const probe = libdeflateAvailable();
  if (probe.available) return 'libdeflate';
  if (requested === 'libdeflate') {
    throw new EsgzError('UNSUPPORTED', `ESGZ_GZIP_BACKEND=libdeflate but the addon cannot load: ${probe.error}`);
  }
  return 'zlib';
}

/** Highest level each backend accepts. */
export const MAX_GZIP_LEVEL: Record<GzipBackend, number> = { libdeflate: 12, zlib: 9 };

export interface GzipPoolOptions {
  level: number;
  workers?: number;
  backend?: GzipBackend;
}

/** A member pool compressing gzip members with `backend` at `level` (checked against the backend's range). */
export function createGzipPool(options: GzipPoolOptions): MemberPool {
  const backend = options.backend ?? selectGzipBackend();
  const max = MAX_GZIP_LEVEL[backend];
  if (!Number.isInteger(options.level) || options.level < 0 || options.level > max) {
    throw new EsgzError('BAD_FLAG', `gzip compression level ${options.level} is out of range 0-${max} for the ${backend} backend`);
  }
  return new MemberPool({ kind: backend, level: options.level, workers: options.workers, label: `gzip (${backend})` });
}

export { defaultWorkerCount };
