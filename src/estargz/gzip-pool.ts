/**
 * The gzip backend: the libdeflate N-API addon (native/libdeflate) when it is built, else Node's
 * zlib; the caller may ask for zlib (tests compare both). Members compress on the shared
 * worker pool (./member-pool.ts); each is compressed independently, so the bytes depend only on
 * the input, the backend and the level.
 */
import { existsSync } from 'node:fs';
import { EsgzError } from '../errors.js';
import { LIBDEFLATE_ADDON_PATH as ADDON_PATH, MemberPool, defaultWorkerCount } from './member-pool.js';

export type GzipBackend = 'libdeflate' | 'zlib';
/** What a caller may ask for: a backend, or 'auto' (libdeflate when it loads, else zlib). */
export const GZIP_BACKEND_CHOICES = ['libdeflate', 'zlib', 'auto'] as const;
export type GzipBackendChoice = (typeof GZIP_BACKEND_CHOICES)[number];
/** ctr-remote's default: gzip.BestCompression. */
export const DEFAULT_GZIP_LEVEL = 9;

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

/** The backend `requested` means here: libdeflate unless it cannot load or zlib is asked for. */
export function selectGzipBackend(requested: GzipBackendChoice = 'auto'): GzipBackend {
  if (requested === 'zlib') return 'zlib';
  const probe = libdeflateAvailable();
  if (probe.available) return 'libdeflate';
  if (requested === 'libdeflate') {
    throw new EsgzError('UNSUPPORTED', `the libdeflate gzip backend cannot load: ${probe.error}`);
  }
  return 'zlib';
}

/** Highest level each backend accepts. */
export const MAX_GZIP_LEVEL: Record<GzipBackend, number> = { libdeflate: 12, zlib: 9 };

export interface GzipPoolOptions {
  /** Default DEFAULT_GZIP_LEVEL. */
  level?: number;
  workers?: number;
  backend?: GzipBackendChoice;
}

/**
 * A member pool compressing gzip members with `backend` at `level` (checked against the
 * backend's range). No thread starts until `start()` or the first batch.
 */
export function createGzipPool(options: GzipPoolOptions = {}): MemberPool {
  const backend = selectGzipBackend(options.backend);
  const level = options.level ?? DEFAULT_GZIP_LEVEL;
  const max = MAX_GZIP_LEVEL[backend];
  if (!Number.isInteger(level) || level < 0 || level > max) {
    const libdeflateOnly = backend === 'zlib' && level > max && level <= MAX_GZIP_LEVEL.libdeflate;
    const hint = libdeflateOnly ? ' (levels above 9 need libdeflate)' : '';
    throw new EsgzError(
      'BAD_FLAG',
      `gzip compression level ${level} is out of range 0-${max} for the ${backend} backend${hint}`,
    );
  }
  return new MemberPool({ kind: backend, level, workers: options.workers, label: `gzip (${backend})` });
}

export { defaultWorkerCount };
