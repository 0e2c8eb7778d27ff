import { EsgzError } from '../errors.js';
import type { Platform } from './types.js';

/**
 * Platforms as `os/arch[/variant]` (image-spec image-index.md). Names are normalised the way
 * containerd's `platforms` package does, so `linux/x86_64` picks the `linux/amd64` manifest and
 * `linux/aarch64` the `linux/arm64` one.
 */
const ARCH_ALIASES: Record<string, string> = {
  x86_64: 'amd64',
  'x86-64': 'amd64',
  aarch64: 'arm64',
  armhf: 'arm',
  armel: 'arm',
  i386: '386',
  i686: '386',
};

/** Node's `process.arch` names → OCI architecture names. */
const NODE_ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

export function normalizeArchitecture(arch: string): string {
  const lower = arch.toLowerCase();
  return ARCH_ALIASES[lower] ?? lower;
}

/** Fills in the variant a bare architecture implies: arm64 means v8, arm means v7. */
function normalizeVariant(architecture: string, variant: string | undefined): string | undefined {
  if (architecture === 'arm64') return variant === undefined || variant === '' || variant === '8' ? 'v8' : variant;
  if (architecture === 'arm') {
    if (variant === undefined || variant === '') return 'v7';
    return /^\d+$/.test(variant) ? `v${variant}` : variant;
  }
  return variant === '' ? undefined : variant;
}

export function normalizePlatform(platform: Platform): Platform {
  const architecture = normalizeArchitecture(platform.architecture);
  const variant = normalizeVariant(architecture, platform.variant);
  const out: Platform = { os: normalizeOs(platform.os.toLowerCase()), architecture };
  if (variant !== undefined) out.variant = variant;
  return out;
}

/** GOOS values containerd's platforms.Parse knows, to tell `--platform linux` from `--platform arm64`. */
const KNOWN_OS = new Set(
  'aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 solaris windows zos'.split(
    ' ',
  ),
);

/** GOARCH values containerd's platforms.Parse knows (after the aliases: x86_64 is amd64). */
const KNOWN_ARCH = new Set(
  (
    '386 amd64 amd64p32 arm armbe arm64 arm64be loong64 mips mipsle mips64 mips64le mips64p32 mips64p32le ' +
    'ppc ppc64 ppc64le riscv riscv64 s390 s390x sparc sparc64 wasm'
  ).split(' '),
);

const PLATFORM_SYNTAX = 'expected os, arch or os/arch[/variant], e.g. linux/amd64, arm64 or linux/arm/v7';

/**
 * Parses a platform as containerd's `platforms.Parse` does: `os/arch[/variant]`, or one word
 * that is an OS (`linux`: this machine's architecture) or an architecture (`arm64`: this
 * machine's OS). Throws BAD_FLAG naming the bad value (the caller names its flag).
 */
export function parsePlatform(spec: string): Platform {
  const parts = spec.trim().toLowerCase().split('/');
  if (parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p))) {
    throw new EsgzError('BAD_FLAG', `"${spec}" is not a platform: ${PLATFORM_SYNTAX}`);
  }
  if (parts.length === 1) return parseOnePart(spec, parts[0]!);
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform({ os: normalizeOs(os), architecture, ...(variant !== undefined ? { variant } : {}) });
}

function parseOnePart(spec: string, word: string): Platform {
  const host = hostPlatform();
  const os = normalizeOs(word);
  if (KNOWN_OS.has(os)) {
    return normalizePlatform({
      os,
      architecture: host.architecture,
      ...(host.variant ? { variant: host.variant } : {}),
    });
  }
  const architecture = normalizeArchitecture(word);
  if (KNOWN_ARCH.has(architecture)) return normalizePlatform({ os: host.os, architecture });
  throw new EsgzError(
    'BAD_FLAG',
    `"${spec}" is not a platform: unknown operating system or architecture (${PLATFORM_SYNTAX})`,
  );
}

/** containerd's normalizeOS: lower case, and `macos` is `darwin`. */
function normalizeOs(os: string): string {
  return os === 'macos' ? 'darwin' : os;
}

/**
 * Parses repeated and comma-separated `--platform` values (`linux/amd64,linux/arm64`), in the
 * order given, without duplicates; throws BAD_FLAG naming a bad one.
 */
export function parsePlatforms(specs: readonly string[]): Platform[] {
  const out: Platform[] = [];
  for (const spec of specs.flatMap((s) => s.split(','))) {
    const platform = parsePlatform(spec);
    if (!out.some((p) => formatPlatform(p) === formatPlatform(platform))) out.push(platform);
  }
  return out;
}

/** The platform this process runs on (the default when an index offers several). */
export function hostPlatform(): Platform {
  return normalizePlatform({
    os: process.platform === 'win32' ? 'windows' : process.platform,
    architecture: NODE_ARCH[process.arch] ?? process.arch,
  });
}

export function formatPlatform(platform: Platform): string {
  const p = normalizePlatform(platform);
  // arm64's implied v8 is left out, as everyone writes `linux/arm64`.
  const showVariant = p.variant !== undefined && !(p.architecture === 'arm64' && p.variant === 'v8');
  return `${p.os}/${p.architecture}${showVariant ? `/${p.variant}` : ''}`;
}

/** True when a manifest for `candidate` satisfies a request for `wanted`. */
export function platformMatches(wanted: Platform, candidate: Platform): boolean {
  const w = normalizePlatform(wanted);
  const c = normalizePlatform(candidate);
  if (w.os !== c.os || w.architecture !== c.architecture) return false;
  return w.variant === undefined || w.variant === c.variant;
}
