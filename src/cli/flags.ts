// The flag sets every command draws from, defined once: a flag's name, range, default and help
// text live here, and so does the one mapping from flags to library options (ctr-remote's
// `getESGZConvertOpts` is the model). Commands spread the sets they need and call the mappers.
import { statSync } from 'node:fs';
import { Flags } from '@oclif/core';
import { EsgzError, isEsgzError } from '../errors.js';
import { DEFAULT_GZIP_LEVEL } from '../estargz/gzip-codec.js';
import { libdeflateAvailable, MAX_GZIP_LEVEL, selectGzipBackend } from '../estargz/gzip-pool.js';
import { readPrefetchList, readRecordFile, type PriorityItem } from '../estargz/priority.js';
import type { ChunkedTransformOptions, LayerFormat } from '../convert/transform.js';
import { DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL, MIN_ZSTD_LEVEL } from '../estargz/zstdchunked/pool.js';
import { WRITABLE_DIALECTS, type WritableDialect } from '../estargz/zstdchunked/dialect.js';
import { DEFAULT_PLAIN_ZSTD_LEVEL, resolveGzipHelper } from '../image/compression.js';
import type { EsgzEnvironment } from './environment.js';
import { DEFAULT_CONCURRENCY } from '../image/pipeline.js';
import { parsePlatform, parsePlatforms } from '../oci/platform.js';
import type { Platform } from '../oci/types.js';
import { parseTransportReference } from '../image/transports/index.js';
import {
  DEFAULT_NAMESERVERS,
  DEFAULT_PIDS_LIMIT,
  parseByteSize,
  parseCommaList,
  parseJsonArrayFlag,
  parseMountFlag,
  type RunOptions,
} from '../runtime/spec.js';
import { DEFAULT_STATE_ROOT } from '../snapshotter/state.js';
import type { RegistryOptions } from '../image/transports/registry.js';
import type { TransportOptions } from '../image/transports/index.js';
import { invokedAsCtrRemote } from './invocation.js';
import { CONTAINERD_CERTS_DIR } from '../registry/hosts.js';

// ---- namespace ------------------------------------------------------------------------------

/** The namespace a flag or CONTAINERD_NAMESPACE names when neither is given (ctr's default). */
export const DEFAULT_NAMESPACE = 'default';

/**
 * ctr's `-n/--namespace` (also CONTAINERD_NAMESPACE): which set of image names in the local
 * store a command sees; every command that reads or writes images has it. Given before the
 * command (`ctr-remote -n NS image ls`) it is moved after it by argv.ts (and dropped for a
 * command without images, such as `version`).
 */
export const namespaceFlags = {
  namespace: Flags.string({
    char: 'n',
    description: "Namespace of image names in the local store (ctr's -n)",
    env: 'CONTAINERD_NAMESPACE',
    default: DEFAULT_NAMESPACE,
  }),
};

// ---- state root ---------------------------------------------------------------------------

/** The state root (`--root`, else ESGZ_ROOT): every command that reads or writes images or lazily pulled layers. */
export const stateRootFlags = {
  root: Flags.string({
    description: 'State root: the local store, lazily pulled layers, containers (kept private: 0700)',
    env: 'ESGZ_ROOT',
    default: DEFAULT_STATE_ROOT,
  }),
};

// ---- registry transport -------------------------------------------------------------------

/** Connection flags every registry command shares (ctr's RegistryFlags: the names and -k are ctr's). */
const registryConnectionFlags = {
  'plain-http': Flags.boolean({ description: 'Talk plain HTTP to registries (no TLS)', default: false }),
  insecure: Flags.boolean({
    char: 'k',
    aliases: ['skip-verify'],
    description: 'Skip TLS certificate verification (-k, --skip-verify)',
    default: false,
  }),
  refresh: Flags.string({
    description: 'Refresh token for the authorization server (OAuth2 refresh_token grant); used when no user is given',
  }),
  'hosts-dir': Flags.string({
    description:
      "Directory of HOST/hosts.toml files, containerd's format " +
      `(default: ~/.config/esgz/certs.d, then ${CONTAINERD_CERTS_DIR})`,
  }),
  tlscacert: Flags.string({ description: 'PEM file of CA certificates trusted besides the system ones' }),
  tlscert: Flags.string({ description: 'PEM file of the TLS client certificate (with --tlskey)' }),
  tlskey: Flags.string({ description: 'PEM file of the TLS client key (with --tlscert)' }),
  'http-trace': Flags.boolean({
    description: 'Print every registry request and its status on stderr (secrets masked)',
    default: false,
  }),
  'http-dump': Flags.boolean({
    description: 'Like --http-trace, with request and response headers (secrets masked, no bodies)',
    default: false,
  }),
  'http-read-timeout': Flags.integer({
    description: 'Seconds a registry response may stay silent before the read is retried or resumed (default 10)',
    min: 1,
  }),
};

const REGISTRY_USER_HELP =
  'USER[:PASSWORD] for the registry named in the reference (asked on a terminal when only USER is given)';

/** Every command that reads or writes a registry: `-u/--user` is the registry user, as in `ctr pull`. */
export const registryFlags = {
  ...registryConnectionFlags,
  ...stateRootFlags,
  ...namespaceFlags,
  'registry-user': Flags.string({
    char: 'u',
    aliases: ['user'],
    description: `${REGISTRY_USER_HELP}; also --user, as in ctr`,
  }),
};

/**
 * `run` and `optimize`, whose `--user` (and run's `-u`, as in `ctr run`) is the container's user:
 * the registry user is `--registry-user` there.
 */
export const workloadRegistryFlags = {
  ...registryConnectionFlags,
  ...stateRootFlags,
  ...namespaceFlags,
  'registry-user': Flags.string({ description: REGISTRY_USER_HELP }),
};

export interface TransportFlagValues {
  'plain-http': boolean;
  insecure: boolean;
  refresh?: string;
  'hosts-dir'?: string;
  tlscacert?: string;
  tlscert?: string;
  tlskey?: string;
  'http-trace'?: boolean;
  'http-dump'?: boolean;
  'http-read-timeout'?: number;
  'registry-user'?: string;
  /** The state root and namespace `local:` names live in, for commands that have them. */
  root?: string;
  namespace?: string;
}

type TransportOptionValues = TransportOptions & { plainHttp: boolean; insecure: boolean };

/** The options `openSource`/`openSink`/rpull/run take, from `registryFlags`: the one mapping. */
export function transportOptions(flags: TransportFlagValues): TransportOptionValues {
  if ((flags.tlscert === undefined) !== (flags.tlskey === undefined)) {
    throw new EsgzError('BAD_FLAG', '--tlscert and --tlskey go together');
  }
  const options: TransportOptionValues = {
    plainHttp: flags['plain-http'],
    insecure: flags.insecure,
    // Under the name ctr-remote a bare image name is a local store name, as in ctr.
    unqualified: invokedAsCtrRemote() ? 'local' : 'registry',
    store: {
      ...(flags.root !== undefined ? { root: flags.root } : {}),
      ...(flags.namespace !== undefined ? { namespace: flags.namespace } : {}),
    },
  };
  const hostsDir = flags['hosts-dir'];
  if (hostsDir !== undefined) {
    // A mistyped directory would silently mean "no mirrors"; the default ones may be absent.
    if (!statSync(hostsDir, { throwIfNoEntry: false })?.isDirectory()) {
      throw new EsgzError('BAD_FLAG', `--hosts-dir ${hostsDir}: not a directory`);
    }
    options.hostsDirs = [hostsDir];
  }
  if (flags.tlscacert !== undefined || flags.tlscert !== undefined) {
    options.tlsFiles = { ca: flags.tlscacert, cert: flags.tlscert, key: flags.tlskey };
  }
  const credentials = credentialsFromFlags(flags['registry-user'], flags.refresh);
  if (credentials !== undefined) options.credentials = credentials;
  if (flags['http-read-timeout'] !== undefined) options.readTimeoutMs = flags['http-read-timeout'] * 1000;
  if (flags['http-trace'] || flags['http-dump']) {
    options.trace = { dump: flags['http-dump'] ?? false, write: (line) => process.stderr.write(`${line}\n`) };
  }
  return options;
}

/**
 * `-u USER:PASS`, `-u USER` (the password asked on the terminal once, when a registry is first
 * opened), or ctr's `--refresh TOKEN` when no user is given.
 */
function credentialsFromFlags(user: string | undefined, refresh: string | undefined): RegistryOptions['credentials'] {
  if (user === undefined) return refresh ? { username: '', password: '', identityToken: refresh } : undefined;
  const colon = user.indexOf(':');
  const username = colon >= 0 ? user.slice(0, colon) : user;
  if (username === '') throw new EsgzError('BAD_FLAG', '-u/--user needs USER[:PASSWORD]');
  if (colon >= 0) return { username, password: user.slice(colon + 1) };
  if (!process.stdin.isTTY) {
    const hint = `use -u ${username}:PASSWORD`;
    throw new EsgzError('BAD_FLAG', `-u ${username} has no password and stdin is not a terminal to ask: ${hint}`);
  }
  let asked: Promise<{ username: string; password: string }> | undefined;
  return () => (asked ??= promptPassword(username).then((password) => ({ username, password })));
}

/** Reads a password from the terminal without echoing it. */
function promptPassword(username: string): Promise<string> {
  const input = process.stdin;
  // Echo off before the prompt shows: what is typed after it is never displayed.
  input.setRawMode(true);
  process.stderr.write(`Password for ${username}: `);
  input.resume();
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (): void => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      process.stderr.write('\n');
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return void (finish(), resolve(value));
        if (ch === '\u0003') {
          return void (finish(), reject(new EsgzError('INTERRUPTED', 'interrupted at the password prompt')));
        }
        value = ch === '\u007f' || ch === '\b' ? value.slice(0, -1) : value + ch;
      }
    };
    input.on('data', onData);
  });
}

// ---- platforms ------------------------------------------------------------------------------

/** Commands that may write several platforms of an index (copy, convert, optimize, verify). */
export const platformsFlags = {
  platform: Flags.string({
    description:
      "Only these platforms, os/arch[/variant]; repeatable or comma-separated; several keep an index of them (default: this machine's)",
    multiple: true,
    multipleNonGreedy: true,
  }),
  'all-platforms': Flags.boolean({ description: 'Every platform of a multi-platform image', default: false }),
};

/** Commands that resolve exactly one platform (rpull, run). */
export const platformFlag = {
  platform: Flags.string({ description: "Platform to use, os/arch[/variant] (default: this machine's)" }),
};

/** What the platform flags choose (the library's PlatformChoice). */
export interface FlagPlatformChoice {
  platforms?: Platform[];
  allPlatforms: boolean;
  keepIndex?: boolean;
}

/**
 * The platform choice of `platformsFlags`, checked once for every command. With
 * `--all-platforms`, `--platform` is ignored (urfave/cli's ctr-remote lets all win).
 */
export function platformsFromFlags(flags: { platform?: string[]; 'all-platforms': boolean }): FlagPlatformChoice {
  if (flags['all-platforms']) return { allPlatforms: true };
  const given = flags.platform !== undefined && flags.platform.length > 0;
  const platforms = given ? { platforms: parseFlagValue('platform', () => parsePlatforms(flags.platform!)) } : {};
  return { ...platforms, allPlatforms: false };
}

/**
 * The platform choice of convert and optimize, which write what containerd's converter writes:
 * one platform taken from an index stays a one-entry index. Not for a docker archive, which
 * holds one image and no index.
 */
export function conversionPlatformsFromFlags(
  flags: { platform?: string[]; 'all-platforms': boolean },
  destination: string,
): FlagPlatformChoice {
  const keepIndex = parseTransportReference(destination).transport !== 'docker-archive';
  return { ...platformsFromFlags(flags), keepIndex };
}

/** The platform of `platformFlag`; none with `--all-platforms` where the command has it. */
export function platformFromFlag(flags: { platform?: string; 'all-platforms'?: boolean }): Platform | undefined {
  if (flags['all-platforms']) return undefined;
  return flags.platform ? parseFlagValue('platform', () => parsePlatform(flags.platform!)) : undefined;
}

/** Runs the library's parser of a flag's value; a BAD_FLAG error it throws then names the flag. */
function parseFlagValue<T>(name: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (!isEsgzError(err) || err.code !== 'BAD_FLAG') throw err;
    throw new EsgzError('BAD_FLAG', `--${name} ${err.message}`, { cause: err });
  }
}

/** Commands that read or write the local image store's names (pull, push, tag, ls, rm, export, import). */
export const storeFlags = {
  ...stateRootFlags,
  ...namespaceFlags,
};

// ---- conversion -----------------------------------------------------------------------------

/** Pipeline flags of every command that writes an image (copy, convert, optimize). */
export const transferFlags = {
  oci: Flags.boolean({ description: 'Convert Docker media types to OCI media types', default: false }),
  concurrency: Flags.integer({
    description: 'Layers transferred at once',
    default: DEFAULT_CONCURRENCY,
    min: 1,
    max: 16,
  }),
};

/** zstd:chunked instead of eStargz: what convert/optimize write, what get-toc-digest expects. */
export const zstdchunkedFlag = {
  zstdchunked: Flags.boolean({
    description:
      'zstd:chunked instead of eStargz (convert, optimize: needs --oci; get-toc-digest: the layer must be it)',
    default: false,
  }),
};

/** eStargz / zstd:chunked writer flags shared by convert and optimize (ctr-remote's names). */
export const conversionFlags = {
  ...transferFlags,
  reuse: Flags.boolean({
    description: 'Keep layers that already are valid eStargz / zstd:chunked as they are',
    default: false,
  }),
  ...zstdchunkedFlag,
  'estargz-compression-level': Flags.integer({
    description: 'gzip level: 0-9 (zlib) or 0-12 (libdeflate); 0 stores',
    default: DEFAULT_GZIP_LEVEL,
    min: 0,
    max: MAX_GZIP_LEVEL.libdeflate,
  }),
  'estargz-chunk-size': Flags.integer({ description: 'Chunk size in bytes (0: 4 MiB)', default: 0, min: 0 }),
  'estargz-min-chunk-size': Flags.integer({
    description: 'Minimal bytes in one gzip member; small files share members (adds innerOffset; 0: off)',
    default: 0,
    min: 0,
  }),
  'estargz-external-toc': Flags.boolean({
    description: 'Put TOCs in a separate image: DESTINATION with "-esgztoc" appended to its tag',
    default: false,
  }),
  'estargz-gzip-helper': Flags.string({
    aliases: ['GH'],
    description:
      'Decompress gzip source layers with this command instead of in-process: pigz, igzip, unpigz or gzip (must be installed; the output is the same bytes); also --GH, as in ctr-remote',
    helpValue: 'pigz|igzip|unpigz|gzip',
  }),
  'estargz-parallelism': Flags.integer({
    description:
      "ctr-remote's name for --workers (compression threads; --workers wins); the output is the same bytes whatever the value",
    min: 1,
    max: 256,
  }),
  'zstdchunked-compression-level': Flags.integer({
    description: 'zstd level',
    default: DEFAULT_ZSTD_LEVEL,
    min: MIN_ZSTD_LEVEL,
    max: MAX_ZSTD_LEVEL,
  }),
  'zstdchunked-chunk-size': Flags.integer({
    description: 'Chunk size in bytes for --zstdchunked (0: 4 MiB)',
    default: 0,
    min: 0,
  }),
  'zstdchunked-dialect': Flags.string({
    description:
      "Layout of --zstdchunked layers: stargz (stargz-snapshotter's, with toc.digest, as ctr-remote writes) or containers (containers/storage's: tar-split, TOC v1, 64-byte footer, io.github keys, for podman's partial pulls)",
    options: [...WRITABLE_DIALECTS],
    default: 'stargz',
  }),
  'prefetch-list': Flags.string({
    description: 'File of paths or globs (*, ?, [..], **) to prioritize in every layer, one per line, # comments',
  }),
  workers: Flags.integer({ description: 'Compression worker threads (default: number of cores)', min: 1, max: 256 }),
};

export interface ConversionFlagValues {
  oci: boolean;
  reuse: boolean;
  zstdchunked: boolean;
  'estargz-compression-level': number;
  'estargz-chunk-size': number;
  'estargz-min-chunk-size': number;
  'estargz-external-toc': boolean;
  'estargz-gzip-helper'?: string;
  'zstdchunked-compression-level': number;
  'zstdchunked-chunk-size': number;
  'zstdchunked-dialect'?: string;
  /** nerdctl's plain zstd level (`image convert --zstd`). */
  'zstd-compression-level'?: number;
  'prefetch-list'?: string;
  workers?: number;
  'estargz-parallelism'?: number;
  /** convert only: `--estargz-keep-diff-id`. */
  'estargz-keep-diff-id'?: boolean;
}

/** The ESGZ_* variables a conversion takes (`this.environment` of the command). */
export type ConversionEnvironment = Pick<EsgzEnvironment, 'workers' | 'gzipBackend' | 'zstdChunkedGithubAnnotations'>;

/**
 * The writer options of a chunked format from the conversion flags and the environment: the
 * one mapping convert and optimize share, with ctr-remote's flag conflicts. `recordIn` is the
 * command's record file flag (`--estargz-record-in` / `--zstdchunked-record-in`), when it has
 * one; prioritized files come from `prioritizedFromFlags`.
 */
export async function conversionOptionsFromFlags(
  flags: ConversionFlagValues,
  format: LayerFormat,
  environment: ConversionEnvironment,
  extra: { recordIn?: string; warn?: (message: string) => void } = {},
): Promise<ChunkedTransformOptions> {
  const options: ChunkedTransformOptions = {
    oci: flags.oci,
    reuse: flags.reuse,
    // --workers (or ctr-remote's --estargz-parallelism) overrides ESGZ_WORKERS.
    workers: flags.workers ?? flags['estargz-parallelism'] ?? environment.workers,
    ...(extra.warn ? { warn: extra.warn } : {}),
  };
  // ctr-remote treats an empty value as "no helper".
  if (flags['estargz-gzip-helper']) options.gzipHelper = await resolveGzipHelper(flags['estargz-gzip-helper']);
  if (flags['estargz-external-toc'] && flags.reuse)
    throw new EsgzError('BAD_FLAG', '"estargz-external-toc" can\'t be used with "reuse" flag');
  if (format === 'estargz') Object.assign(options, estargzOptions(flags, environment, extra.recordIn));
  else if (format === 'zstdchunked') {
    if (flags['estargz-external-toc'])
      throw new EsgzError('BAD_FLAG', '--estargz-external-toc needs eStargz, not --zstdchunked');
    Object.assign(options, {
      compressionLevel: flags['zstdchunked-compression-level'],
      chunkSize: flags['zstdchunked-chunk-size'] || undefined,
      containersStorageAnnotations: environment.zstdChunkedGithubAnnotations,
      zstdChunkedDialect: (flags['zstdchunked-dialect'] ?? 'stargz') as WritableDialect,
    });
  } else if (format === 'zstd') {
    options.compressionLevel = flags['zstd-compression-level'] ?? DEFAULT_PLAIN_ZSTD_LEVEL;
  }
  if (format !== 'zstdchunked' && (flags['zstdchunked-dialect'] ?? 'stargz') !== 'stargz') {
    throw new EsgzError('BAD_FLAG', '--zstdchunked-dialect needs --zstdchunked');
  }
  return options;
}

function estargzOptions(
  flags: ConversionFlagValues,
  environment: ConversionEnvironment,
  recordIn: string | undefined,
): ChunkedTransformOptions {
  const level = flags['estargz-compression-level'];
  const gzipBackend = selectGzipBackend(environment.gzipBackend);
  if (level > MAX_GZIP_LEVEL.zlib && gzipBackend === 'zlib') {
    const why = libdeflateAvailable().error ?? 'ESGZ_GZIP_BACKEND=zlib';
    throw new EsgzError('BAD_FLAG', `--estargz-compression-level ${level} needs libdeflate (${why}); zlib stops at 9`);
  }
  if (flags['estargz-keep-diff-id'] && !flags['estargz-external-toc']) {
    throw new EsgzError('BAD_FLAG', 'option --estargz-keep-diff-id must be used with --estargz-external-toc');
  }
  if (flags['estargz-keep-diff-id'] && recordIn) {
    throw new EsgzError('BAD_FLAG', 'option --estargz-keep-diff-id conflicts with --estargz-record-in');
  }
  return {
    compressionLevel: level,
    gzipBackend,
    chunkSize: flags['estargz-chunk-size'] || undefined,
    minChunkSize: flags['estargz-min-chunk-size'] || undefined,
    externalTOC: flags['estargz-external-toc'],
    keepDiffID: flags['estargz-keep-diff-id'] ?? false,
  };
}

/**
 * The prioritized files the flags name: the record file (`--estargz-record-in` /
 * `--zstdchunked-record-in`) first, then `--prefetch-list` (paths and globs).
 */
export async function prioritizedFromFlags(
  flags: { 'prefetch-list'?: string },
  format: LayerFormat,
  recordIn?: string,
): Promise<PriorityItem[]> {
  const prioritized: PriorityItem[] = [];
  if (recordIn) prioritized.push(...(await readRecordFile(recordIn)));
  if (flags['prefetch-list']) prioritized.push(...(await readPrefetchList(flags['prefetch-list'])));
  if (prioritized.length > 0 && format === 'uncompress')
    throw new EsgzError('BAD_FLAG', 'prioritized files need --estargz or --zstdchunked');
  return prioritized;
}

/** ctr-remote's rules for combining the format flags. */
export function chooseFormat(flags: {
  estargz: boolean;
  zstdchunked: boolean;
  uncompress: boolean;
  zstd?: boolean;
  oci: boolean;
}): LayerFormat {
  const chosen = (['estargz', 'zstdchunked', 'zstd', 'uncompress'] as const).filter((f) => flags[f]);
  if (chosen.length > 1) throw new EsgzError('BAD_FLAG', `option --${chosen[0]} conflicts with --${chosen[1]}`);
  const format = chosen[0];
  if (format === undefined)
    throw new EsgzError('BAD_FLAG', 'specify a layer format: --estargz, --zstdchunked, --zstd or --uncompress');
  // zstd layers exist only in OCI media types.
  if ((format === 'zstdchunked' || format === 'zstd') && !flags.oci)
    throw new EsgzError('BAD_FLAG', `option --${format} must be used in conjunction with --oci`);
  return format;
}

/**
 * nerdctl's `--format oci|docker` of `image convert`: `oci` is `--oci`; converting OCI media
 * types back to Docker's is not something esgz does, so `docker` is refused unless it changes
 * nothing the user did not ask for (no --oci).
 */
export function ociFromFormatFlag(flags: { oci: boolean; format?: string }): boolean {
  if (flags.format === 'docker') {
    if (flags.oci) throw new EsgzError('BAD_FLAG', 'option --format docker conflicts with --oci');
    throw new EsgzError(
      'UNSUPPORTED',
      "--format docker: esgz does not convert OCI media types to Docker ones; leave --format out to keep the source's",
    );
  }
  return flags.oci || flags.format === 'oci';
}

// ---- workload -------------------------------------------------------------------------------

/** How a container is set up, shared by `run` and `image optimize` (ctr-remote / nerdctl names). */
export const workloadFlags = {
  env: Flags.string({
    description: 'KEY=VALUE added to the environment (repeatable)',
    multiple: true,
    multipleNonGreedy: true,
  }),
  'env-file': Flags.string({ description: 'File of KEY=VALUE lines added to the environment' }),
  mount: Flags.string({
    description: 'Extra mount, e.g. type=bind,source=/src,destination=/dst,options=rbind:ro (repeatable)',
    multiple: true,
    multipleNonGreedy: true,
  }),
  cwd: Flags.string({ description: "Working directory (overrides the image's)" }),
  'dns-nameservers': Flags.string({
    description: 'Comma-separated nameservers for /etc/resolv.conf',
    default: DEFAULT_NAMESERVERS.join(','),
  }),
  'net-host': Flags.boolean({
    description: 'Use the host network (default: a private one with loopback only)',
    default: false,
  }),
  // Sandbox limits (nerdctl's names)
  'pids-limit': Flags.integer({
    description: `Most processes and threads the container may have (0: no limit; default ${DEFAULT_PIDS_LIMIT})`,
    min: 0,
  }),
  memory: Flags.string({
    description: "Memory limit, e.g. 512m, 2g (0: no limit; default: half of this machine's memory, at most 4g)",
  }),
  privileged: Flags.boolean({
    description: 'Run without the sandbox: every capability esgz holds, no seccomp filter, no masked paths',
    default: false,
  }),
  user: Flags.string({ char: 'u', description: 'user[:group] to run as (names looked up in the image)' }),
  // ctr's `-i`; named as nerdctl's, since oclif shows a one-letter name as "-i, --i".
  interactive: Flags.boolean({
    char: 'i',
    aliases: ['i'],
    description: "Attach stdin to the container's process",
    default: false,
  }),
};

/** Said on stderr whenever `--privileged` is given: it is an opt-out, never a default. */
export const PRIVILEGED_WARNING =
  '--privileged: the container runs WITHOUT the sandbox: every capability esgz holds, no seccomp filter, no masked or read-only /proc and /sys paths';

// ---- lazy pull ----------------------------------------------------------------------------

/** Commands that read lazily pulled layers (rpull, run). */
export const lazyPullFlags = {
  'background-fetch': Flags.boolean({
    description:
      'Fetch every remaining chunk of every layer after the prefetch (rpull: before returning; run: while the container runs)',
    default: false,
  }),
};

export interface WorkloadFlagValues {
  env?: string[];
  'env-file'?: string;
  mount?: string[];
  user?: string;
  cwd?: string;
  'dns-nameservers': string;
  'dns-search-domains'?: string;
  'dns-options'?: string;
  'add-hosts'?: string;
  'net-host': boolean;
  entrypoint?: string;
  args?: string;
  hostname?: string;
  'pids-limit'?: number;
  memory?: string;
  privileged: boolean;
}

/** The runtime options of a workload from its flags. */
export function runOptionsFromFlags(flags: WorkloadFlagValues, terminal: boolean): RunOptions {
  return {
    entrypoint: flags.entrypoint ? parseJsonArrayFlag('entrypoint', flags.entrypoint) : undefined,
    args: flags.args ? parseJsonArrayFlag('args', flags.args) : undefined,
    env: flags.env,
    envFile: flags['env-file'],
    user: flags.user,
    cwd: flags.cwd,
    mounts: (flags.mount ?? []).map(parseMountFlag),
    dnsNameservers: parseCommaList(flags['dns-nameservers']),
    dnsSearchDomains: parseCommaList(flags['dns-search-domains']),
    dnsOptions: parseCommaList(flags['dns-options']),
    addHosts: parseCommaList(flags['add-hosts']),
    netHost: flags['net-host'],
    terminal,
    hostname: flags.hostname,
    pidsLimit: flags['pids-limit'],
    ...(flags.memory !== undefined ? { memoryLimitBytes: parseByteSize('memory', flags.memory) } : {}),
    privileged: flags.privileged,
  };
}
