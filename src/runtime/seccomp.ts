/**
 * The workload's seccomp filter: the profile podman and CRI-O use (containers/common's
 * seccomp.json, shipped by Debian's golang-github-containers-common and installed by
 * scripts/install-deps.sh), reduced to this machine's architecture and the container's
 * capabilities the way containers/common's setupSeccomp does, then tightened with containerd's
 * rule for namespaces and mounts (see hardenNamespaceSyscalls).
 */
import { readFile } from 'node:fs/promises';
import { release } from 'node:os';
import { EsgzError } from '../errors.js';

/** Where golang-github-containers-common (Debian, Ubuntu) and containers-common (Fedora) put the profile. */
export const CONTAINERS_SECCOMP_PROFILE = '/usr/share/containers/seccomp.json';

/** runtime-spec config-linux.md#seccomp */
export interface SeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}

export interface SeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: SeccompArg[];
}

export interface LinuxSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  syscalls: SeccompRule[];
}

/** containers/common's file format (pkg/seccomp/types.go): rules carry includes/excludes conditions. */
interface ProfileCondition {
  caps?: string[] | null;
  arches?: string[] | null;
  minKernel?: string | null;
}

interface ProfileRule {
  name?: string;
  names?: string[] | null;
  action: string;
  errnoRet?: number | null;
  args?: SeccompArg[] | null;
  includes?: ProfileCondition | null;
  excludes?: ProfileCondition | null;
}

interface Profile {
  defaultAction: string;
  defaultErrnoRet?: number | null;
  architectures?: string[] | null;
  archMap?: Array<{ architecture: string; subArchitectures?: string[] | null }> | null;
  syscalls?: ProfileRule[] | null;
}

/** Node's process.arch as libseccomp names it (the names the profile's arch conditions use). */
const LIBSECCOMP_ARCH: Record<string, string> = {
  x64: 'amd64',
  ia32: 'x86',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  mips64el: 'mipsel64',
};

/** containers/common's nativeToSeccomp: the archMap entry chosen for the native architecture. */
const NATIVE_SCMP_ARCH: Record<string, string> = {
  amd64: 'SCMP_ARCH_X86_64',
  arm64: 'SCMP_ARCH_AARCH64',
  mips64: 'SCMP_ARCH_MIPS64',
  mips64n32: 'SCMP_ARCH_MIPS64N32',
  mipsel64: 'SCMP_ARCH_MIPSEL64',
  mipsel64n32: 'SCMP_ARCH_MIPSEL64N32',
  s390x: 'SCMP_ARCH_S390X',
};

/**
 * Syscalls that create or join namespaces or change mounts. podman's profile allows them to
 * everyone (for nested containers, relying on capabilities), but a user namespace gives the
 * workload a full capability set inside it, so `unshare -Urm` then `mount` would work; containerd
 * allows them only with CAP_SYS_ADMIN, and so does esgz. The new mount API is included: it mounts too.
 */
export const NAMESPACE_SYSCALLS = [
  'unshare',
  'setns',
  'mount',
  'umount',
  'umount2',
  'pivot_root',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'move_mount',
  'open_tree',
  'mount_setattr',
];

/** CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET (linux/sched.h). */
export const CLONE_NAMESPACE_FLAGS =
  0x00020000 + 0x02000000 + 0x04000000 + 0x08000000 + 0x10000000 + 0x20000000 + 0x40000000;
const EPERM = 1;
/** clone3 passes its flags in a struct seccomp cannot read: ENOSYS makes libcs fall back to clone, which can be filtered. */
const ENOSYS = 38;

/** Reads the profile file and builds the filter for a container with `capabilities` (its bounding set). */
export async function loadSeccompProfile(
  capabilities: string[],
  path = CONTAINERS_SECCOMP_PROFILE,
): Promise<LinuxSeccomp> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new EsgzError(
      'RUNTIME',
      missing
        ? `the seccomp profile ${path} is missing: install it (Debian: apt-get install golang-github-containers-common; scripts/install-deps.sh does), or run the container privileged (without the sandbox)`
        : `cannot read the seccomp profile ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  let profile: unknown;
  try {
    profile = JSON.parse(text);
  } catch (err) {
    throw new EsgzError('RUNTIME', `the seccomp profile ${path} is not JSON`, { cause: err });
  }
  return seccompForContainer(checkProfile(profile, path), capabilities);
}

function checkProfile(value: unknown, path: string): Profile {
  const p = value as Profile;
  const bad = (why: string) =>
    new EsgzError('RUNTIME', `the seccomp profile ${path} is not a containers/common profile: ${why}`);
  if (typeof p !== 'object' || p === null || typeof p.defaultAction !== 'string') throw bad('no defaultAction');
  if (!Array.isArray(p.syscalls) || p.syscalls.length === 0) throw bad('no syscalls');
  for (const rule of p.syscalls) {
    if (typeof rule?.action !== 'string') throw bad('a rule has no action');
    if (rule.name && rule.names?.length) throw bad(`a rule has both "name" and "names" (${rule.name})`);
  }
  return p;
}

/**
 * containers/common's setupSeccomp: keep the rules whose includes hold and whose excludes do not,
 * for the native architecture and the container's bounding capabilities; then the namespace rule.
 */
export function seccompForContainer(
  profile: Profile,
  capabilities: string[],
  arch = LIBSECCOMP_ARCH[process.arch] ?? process.arch,
  kernel = release(),
): LinuxSeccomp {
  const out: LinuxSeccomp = { defaultAction: profile.defaultAction, syscalls: [] };
  if (profile.defaultErrnoRet != null) out.defaultErrnoRet = profile.defaultErrnoRet;
  const architectures = [...(profile.architectures ?? [])];
  const native = profile.archMap?.find((a) => a.architecture === NATIVE_SCMP_ARCH[arch]);
  if (native) architectures.push(native.architecture, ...(native.subArchitectures ?? []));
  if (architectures.length > 0) out.architectures = architectures;
  const caps = new Set(capabilities);
  for (const rule of profile.syscalls ?? []) {
    if (!ruleApplies(rule, caps, arch, kernel)) continue;
    const names = rule.name ? [rule.name] : (rule.names ?? []);
    if (names.length === 0) continue;
    const spec: SeccompRule = { names, action: rule.action };
    if (rule.errnoRet != null) spec.errnoRet = rule.errnoRet;
    if (rule.args?.length)
      spec.args = rule.args.map((a) => ({ index: a.index, value: a.value, valueTwo: a.valueTwo ?? 0, op: a.op }));
    out.syscalls.push(spec);
  }
  if (!caps.has('CAP_SYS_ADMIN')) hardenNamespaceSyscalls(out, arch);
  return out;
}

function ruleApplies(rule: ProfileRule, caps: Set<string>, arch: string, kernel: string): boolean {
  const exc = rule.excludes ?? {};
  const inc = rule.includes ?? {};
  if (exc.arches?.includes(arch)) return false;
  if (exc.caps?.some((c) => caps.has(c))) return false;
  if (exc.minKernel && kernelAtLeast(kernel, exc.minKernel)) return false;
  if (inc.arches?.length && !inc.arches.includes(arch)) return false;
  if (inc.caps?.length && !inc.caps.every((c) => caps.has(c))) return false;
  if (inc.minKernel && !kernelAtLeast(kernel, inc.minKernel)) return false;
  return true;
}

/** `release` (e.g. 6.1.0-18-amd64) is at least `min` (e.g. 5.8). */
function kernelAtLeast(release: string, min: string): boolean {
  const version = (v: string) => (/^(\d+)\.(\d+)/.exec(v) ?? ['', '0', '0']).slice(1).map(Number) as [number, number];
  const [major, minor] = version(release);
  const [minMajor, minMinor] = version(min);
  return major > minMajor || (major === minMajor && minor >= minMinor);
}

/**
 * containerd's default profile for a container without CAP_SYS_ADMIN: the namespace and mount
 * syscalls fail with EPERM, clone is allowed only without namespace flags, clone3 answers ENOSYS.
 * Their names are taken out of the profile's rules first, so no earlier allow rule overrides these.
 */
function hardenNamespaceSyscalls(filter: LinuxSeccomp, arch: string): void {
  const gated = new Set([...NAMESPACE_SYSCALLS, 'clone', 'clone3']);
  filter.syscalls = filter.syscalls
    .map((rule) => ({ ...rule, names: rule.names.filter((n) => !gated.has(n)) }))
    .filter((rule) => rule.names.length > 0);
  filter.syscalls.push(
    { names: [...NAMESPACE_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
    // s390 passes the flags as clone's second argument.
    {
      names: ['clone'],
      action: 'SCMP_ACT_ALLOW',
      args: [
        { index: arch.startsWith('s390') ? 1 : 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' },
      ],
    },
    { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
  );
}
