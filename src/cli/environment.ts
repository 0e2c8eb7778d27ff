// The ESGZ_* environment variables, read once at the edge (a command's start) and handed to the
// library as options: nothing under src/ other than this file reads them. Each is documented in
// README.md's table and in every command's --help (ENVIRONMENT_HELP).
import { EsgzError } from '../errors.js';
import { GZIP_BACKEND_CHOICES, type GzipBackendChoice } from '../estargz/gzip-pool.js';

/** What the environment tells esgz; undefined means "not set: the library's default". */
export interface EsgzEnvironment {
  /** ESGZ_WORKERS: compression worker threads (a positive integer; default one per core). */
  workers?: number;
  /** ESGZ_GZIP_BACKEND: the gzip compressor of eStargz members. */
  gzipBackend?: GzipBackendChoice;
  /** ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS=1: also write containers/storage's annotations. */
  zstdChunkedGithubAnnotations: boolean;
  /** ESGZ_TMPFS: optimize's memory-backed work dir; `false` never uses one, a path always does. */
  tmpfs?: string | false;
  /** ESGZ_RUNC: the runc binary (default `runc` on PATH). */
  runc: string;
  /** ESGZ_FANOTIFY_BIN: the fanotify tracer helper (default: the one built in native/fanotify/). */
  fanotifyBinary?: string;
}

/** Reads and checks every ESGZ_* variable; a malformed one is a one-line BAD_FLAG error. */
export function readEnvironment(env: NodeJS.ProcessEnv = process.env): EsgzEnvironment {
  const result: EsgzEnvironment = {
    zstdChunkedGithubAnnotations: env.ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS === '1',
    runc: nonEmpty(env.ESGZ_RUNC) ?? 'runc',
  };
  const workers = nonEmpty(env.ESGZ_WORKERS);
  if (workers !== undefined) {
    const count = Number(workers);
    if (!Number.isInteger(count) || count < 1)
      throw new EsgzError('BAD_FLAG', `ESGZ_WORKERS=${workers} is not a positive integer`);
    result.workers = count;
  }
  const backend = nonEmpty(env.ESGZ_GZIP_BACKEND);
  if (backend !== undefined) {
    if (!(GZIP_BACKEND_CHOICES as readonly string[]).includes(backend))
      throw new EsgzError('BAD_FLAG', `ESGZ_GZIP_BACKEND=${backend} is not one of ${GZIP_BACKEND_CHOICES.join(', ')}`);
    result.gzipBackend = backend as GzipBackendChoice;
  }
  const tmpfs = nonEmpty(env.ESGZ_TMPFS);
  if (tmpfs !== undefined) {
    if (tmpfs !== '0' && !tmpfs.startsWith('/'))
      throw new EsgzError('BAD_FLAG', `ESGZ_TMPFS=${tmpfs} is neither 0 nor an absolute path`);
    result.tmpfs = tmpfs === '0' ? false : tmpfs;
  }
  const fanotify = nonEmpty(env.ESGZ_FANOTIFY_BIN);
  if (fanotify !== undefined) result.fanotifyBinary = fanotify;
  return result;
}

/** The ENVIRONMENT section of --help, the same text as README.md's table. */
export const ENVIRONMENT_HELP = [
  'ESGZ_WORKERS         compression worker threads (default: one per core; --workers overrides it)',
  'ESGZ_GZIP_BACKEND    libdeflate, zlib or auto (default): the gzip compressor of eStargz members',
  'ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS=1  also write containers/storage io.github.containers.zstd-chunked.* annotations',
  'ESGZ_TMPFS           optimize work dir: 0 never uses a tmpfs, /path always uses that directory (default: /dev/shm when the image fits)',
  'ESGZ_RUNC            the runc binary (default: runc on PATH)',
  'ESGZ_FANOTIFY_BIN    the fanotify tracer helper (default: native/fanotify/esgz-fanotify)',
  'ESGZ_ROOT            the state root when --root is not given (default: /var/lib/esgz)',
].join('\n');

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
