import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { isAbsolute, join, posix } from 'node:path';
import { EsgzError } from '../errors.js';
import type { ImageConfig } from '../oci/types.js';
import { resolveInRoot } from '../rootfs/root-path.js';
import { loadSeccompProfile, type LinuxSeccomp } from './seccomp.js';

/** The parts of the OCI runtime spec (runtime-spec config.md, config-linux.md) esgz writes. */
export interface RuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    rlimits: Array<{ type: string; hard: number; soft: number }>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: RuntimeMount[];
  linux: {
    namespaces: Array<{ type: string; path?: string }>;
    maskedPaths: string[];
    readonlyPaths: string[];
    resources: {
      devices: Array<{ allow: boolean; access: string }>;
      pids?: { limit: number };
      memory?: { limit: number };
    };
    seccomp?: LinuxSeccomp;
  };
}

export interface RuntimeMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

/** ctr-remote's sampler flags (cmd/ctr-remote/commands/flags.go), already parsed. */
export interface RunOptions {
  /** Replaces the image's Entrypoint (`--entrypoint '["/bin/sh","-c"]'`). */
  entrypoint?: string[];
  /** Replaces the image's Cmd (`--args '["ls"]'`). */
  args?: string[];
  /** `K=V`, added to or replacing the image's Env; applied after `envFile`. */
  env?: string[];
  /** A file of `K=V` lines (blank lines and `#` comments skipped). */
  envFile?: string;
  /** `user`, `uid`, `user:group`, `uid:gid`: names are looked up in the image's /etc/passwd and /etc/group. */
  user?: string;
  cwd?: string;
  mounts?: RuntimeMount[];
  /** Written to the container's /etc/resolv.conf; ctr-remote's default is 8.8.8.8. */
  dnsNameservers?: string[];
  dnsSearchDomains?: string[];
  dnsOptions?: string[];
  /** `host:IP` pairs added to the container's /etc/hosts. */
  addHosts?: string[];
  /** Share the host's network namespace (and its /etc/hosts, /etc/resolv.conf). Default: a private one with loopback only. */
  netHost?: boolean;
  /** Allocate a terminal (the caller's stdin must be one). */
  terminal?: boolean;
  hostname?: string;
  /**
   * Most processes (and threads) the container may have (its pids cgroup); default
   * DEFAULT_PIDS_LIMIT, 0 or less for no limit.
   */
  pidsLimit?: number;
  /** Memory the container may use, tmpfs pages it writes included; default defaultMemoryLimitBytes(), 0 for no limit. */
  memoryLimitBytes?: number;
  /**
   * Size of the private tmpfs holding the profiled workload's writable layer (image optimize only;
   * default DEFAULT_UPPER_SIZE_BYTES in rootfs/overlay.ts). Writes beyond it fail with ENOSPC.
   */
  upperSizeBytes?: number;
  /**
   * Opt out of the sandbox, as `docker run --privileged` does: every capability esgz has, no
   * seccomp filter, no masked or read-only paths, /sys writable. Namespaces, limits, no device
   * access and no_new_privileges stay.
   */
  privileged?: boolean;
  /** The containers/common seccomp profile to load (default CONTAINERS_SECCOMP_PROFILE). */
  seccompProfile?: string;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_NAMESERVERS = ['8.8.8.8'];

/**
 * containerd 2.0's default capability set (pkg/oci/spec.go defaultUnixCaps): Docker's 14 without
 * MKNOD, NET_RAW, SETFCAP, SYS_CHROOT and AUDIT_WRITE. Without SETFCAP the workload cannot map
 * uid 0 in a user namespace either (Linux 5.12+).
 */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_KILL',
];

/** Every capability Linux 5.9+ defines, in bit order (linux/capability.h). */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

/** containerd 2.0's masked paths (pkg/oci/spec.go): runc covers each with /dev/null or an empty read-only tmpfs. */
export const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/sys/firmware',
  // RAPL energy counters: a side channel on the host's other workloads (CVE-2020-8694).
  '/sys/devices/virtual/powercap',
  '/proc/scsi',
];
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/**
 * The default pids limit: CRI-O's long-time default (podman's is 2048). Enough for ordinary
 * services and thread pools; a fork bomb stops at it instead of exhausting the host's pid space.
 */
export const DEFAULT_PIDS_LIMIT = 1024;
const MEMORY_LIMIT_CAP_BYTES = 4 * 1024 ** 3;
/** Docker's minimum (6 MiB): less and the runtime's own setup is OOM-killed. */
const MIN_MEMORY_LIMIT_BYTES = 6 * 1024 ** 2;

/**
 * The default memory limit: half of this machine's memory, at most 4 GiB, so a hostile or runaway
 * workload is OOM-killed inside its cgroup before the host runs short (containerd sets none).
 */
export function defaultMemoryLimitBytes(): number {
  return Math.min(Math.floor(totalmem() / 2), MEMORY_LIMIT_CAP_BYTES);
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Parses a size flag as docker and nerdctl do (`512m`, `2g`, `1048576`; binary units). */
export function parseByteSize(flag: string, value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?$/i.exec(value.trim());
  const bytes = match ? Math.floor(Number(match[1]) * SIZE_UNITS[match[2]!.toLowerCase()]!) : NaN;
  if (!Number.isSafeInteger(bytes))
    throw new EsgzError('BAD_FLAG', `--${flag} must be a size such as 512m or 2g (got ${value})`);
  return bytes;
}

/** Parses a flag holding a JSON array of strings (`--entrypoint`, `--args`). */
export function parseJsonArrayFlag(flag: string, value: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new EsgzError(
      'BAD_FLAG',
      `--${flag} must be a JSON array of strings, e.g. '["/bin/sh","-c"]' (got ${value})`,
    );
  }
  if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) {
    throw new EsgzError(
      'BAD_FLAG',
      `--${flag} must be a JSON array of strings, e.g. '["/bin/sh","-c"]' (got ${value})`,
    );
  }
  return parsed;
}

/** Splits a comma-separated flag value (`--dns-nameservers 1.1.1.1,8.8.8.8`), honouring "quoted,fields". */
export function parseCommaList(value: string | undefined): string[] {
  if (!value) return [];
  const out: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '"') {
      if (quoted && value[i + 1] === '"') {
        field += '"';
        i++;
      } else quoted = !quoted;
    } else if (c === ',' && !quoted) {
      out.push(field);
      field = '';
    } else field += c;
  }
  out.push(field);
  return out.map((f) => f.trim()).filter((f) => f !== '');
}

/** Parses `--mount type=bind,source=/a,destination=/b,options=rbind:ro` (ctr-remote's syntax). */
export function parseMountFlag(value: string): RuntimeMount {
  const mount: RuntimeMount = { destination: '' };
  for (const field of parseCommaList(value)) {
    const eq = field.indexOf('=');
    // Split at the first "=": option values such as size=1m contain one themselves.
    if (eq <= 0) {
      throw new EsgzError('BAD_FLAG', `--mount ${value}: "${field}" is not key=value`);
    }
    const key = field.slice(0, eq);
    const val = field.slice(eq + 1);
    switch (key) {
      case 'type':
        mount.type = val;
        break;
      case 'source':
      case 'src':
        mount.source = val;
        break;
      case 'destination':
      case 'dst':
        mount.destination = val;
        break;
      case 'options':
        mount.options = val.split(':').filter((o) => o !== '');
        break;
      default:
        throw new EsgzError(
          'BAD_FLAG',
          `--mount ${value}: option "${key}" is not supported (type, source, destination, options)`,
        );
    }
  }
  if (!mount.destination || !posix.isAbsolute(mount.destination)) {
    throw new EsgzError('BAD_FLAG', `--mount ${value}: needs an absolute destination=`);
  }
  if (mount.type === 'bind' || mount.options?.some((o) => o === 'bind' || o === 'rbind')) {
    if (!mount.source || !isAbsolute(mount.source))
      throw new EsgzError('BAD_FLAG', `--mount ${value}: a bind mount needs an absolute source=`);
    if (!existsSync(mount.source))
      throw new EsgzError('BAD_FLAG', `--mount ${value}: source ${mount.source} does not exist`);
    mount.type ??= 'bind';
    if (!mount.options?.some((o) => o === 'bind' || o === 'rbind')) mount.options = ['rbind', ...(mount.options ?? [])];
  }
  return mount;
}

/** Reads `K=V` lines from an env file. */
export async function readEnvFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new EsgzError(
      'BAD_FLAG',
      `env file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      { cause: err },
    );
  }
  const out: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    if (line.indexOf('=') <= 0)
      throw new EsgzError('BAD_FLAG', `env file ${path}:${i + 1}: "${line}" is not KEY=VALUE`);
    out.push(line);
  });
  return out;
}

/** Applies `overrides` (K=V) to `base`: same key replaced in place, new keys appended. */
export function mergeEnv(base: string[], overrides: string[]): string[] {
  const out = [...base];
  for (const entry of overrides) {
    const key = entry.split('=', 1)[0]!;
    const at = out.findIndex((e) => e.split('=', 1)[0] === key);
    if (at >= 0) out[at] = entry;
    else out.push(entry);
  }
  return out;
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home?: string;
}

/**
 * Resolves `user[:group]` the way container engines do: numbers are taken as they are, names are
 * looked up in the image's /etc/passwd and /etc/group (read inside the rootfs, never the host's).
 */
export async function resolveUser(rootfs: string, spec: string | undefined): Promise<ResolvedUser> {
  const value = (spec ?? '').trim();
  if (value === '')
    return { uid: 0, gid: 0, additionalGids: [], home: (await passwdEntries(rootfs)).find((p) => p.uid === 0)?.home };
  const [userPart, groupPart, extra] = value.split(':');
  if (extra !== undefined || userPart === '') throw new EsgzError('BAD_FLAG', `user "${value}" is not user[:group]`);
  const passwd = await passwdEntries(rootfs);
  let uid: number;
  let gid: number | undefined;
  let name: string | undefined;
  let home: string | undefined;
  if (/^\d+$/.test(userPart!)) {
    uid = Number(userPart);
    const entry = passwd.find((p) => p.uid === uid);
    if (entry) ({ gid, name, home } = entry);
  } else {
    const entry = passwd.find((p) => p.name === userPart);
    if (!entry) throw new EsgzError('RUNTIME', `user "${userPart}" is not in the image's /etc/passwd`);
    ({ uid, gid, name, home } = entry);
  }
  const groups = await groupEntries(rootfs);
  if (groupPart !== undefined && groupPart !== '') {
    if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else {
      const entry = groups.find((g) => g.name === groupPart);
      if (!entry) throw new EsgzError('RUNTIME', `group "${groupPart}" is not in the image's /etc/group`);
      gid = entry.gid;
    }
  }
  gid ??= 0;
  const additionalGids = name
    ? [...new Set(groups.filter((g) => g.members.includes(name!) && g.gid !== gid).map((g) => g.gid))]
    : [];
  return { uid, gid, additionalGids, home };
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

async function passwdEntries(rootfs: string): Promise<PasswdEntry[]> {
  const text = await readImageFile(rootfs, 'etc/passwd');
  return text
    .split('\n')
    .map((line) => line.split(':'))
    .filter((f) => f.length >= 6 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!))
    .map((f) => ({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! }));
}

async function groupEntries(rootfs: string): Promise<Array<{ name: string; gid: number; members: string[] }>> {
  const text = await readImageFile(rootfs, 'etc/group');
  return text
    .split('\n')
    .map((line) => line.split(':'))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[2]!))
    .map((f) => ({ name: f[0]!, gid: Number(f[2]), members: (f[3] ?? '').split(',').filter((m) => m !== '') }));
}

/** Reads a small regular file of the image (symlinks resolved inside the rootfs); '' when absent. */
async function readImageFile(rootfs: string, path: string): Promise<string> {
  const host = await resolveInRoot(rootfs, path, { followFinal: true });
  const st = await lstat(host).catch(() => undefined);
  // A FIFO or device planted at /etc/passwd would block or read host hardware: only regular files.
  if (!st?.isFile() || st.size > 4 * 1024 * 1024) return '';
  return readFile(host, 'utf8');
}

export interface BuildSpecInput {
  /** The container's root filesystem (already prepared). */
  rootfs: string;
  config: ImageConfig;
  options: RunOptions;
  /** Where generated files (/etc/hosts, /etc/resolv.conf) are written for bind mounting. */
  bundleDir: string;
}

/**
 * Builds the OCI runtime spec: the image config's Entrypoint, Cmd, Env, User and WorkingDir,
 * overridden by the flags, with containerd 2.0's default security or stricter: own pid, ipc,
 * uts, mount, network and cgroup namespaces, no_new_privileges, its capability set, its masked
 * and read-only paths, no device access, plus a seccomp filter and pids and memory limits.
 * `privileged` lifts the capability, seccomp and path restrictions only.
 */
export async function buildRuntimeSpec(input: BuildSpecInput): Promise<RuntimeSpec> {
  const { rootfs, config, options, bundleDir } = input;
  const image = config.config ?? {};
  const entrypoint =
    options.entrypoint && options.entrypoint.length > 0 ? options.entrypoint : (image.Entrypoint ?? []);
  const cmd = options.args && options.args.length > 0 ? options.args : (image.Cmd ?? []);
  const args = [...entrypoint, ...cmd];
  if (args.length === 0) {
    throw new EsgzError('BAD_FLAG', 'the image has no Entrypoint or Cmd: name the command to run');
  }
  const user = await resolveUser(rootfs, options.user ?? image.User);
  let env = [...(image.Env ?? [])];
  if (!env.some((e) => e.startsWith('PATH='))) env.unshift(`PATH=${DEFAULT_PATH}`);
  if (options.envFile) env = mergeEnv(env, await readEnvFile(options.envFile));
  env = mergeEnv(env, options.env ?? []);
  for (const e of env) {
    if (e.indexOf('=') <= 0) throw new EsgzError('BAD_FLAG', `environment entry "${e}" is not KEY=VALUE`);
  }
  if (!env.some((e) => e.startsWith('HOME='))) env.push(`HOME=${user.home || '/'}`);
  if (options.terminal && !env.some((e) => e.startsWith('TERM='))) env.push('TERM=xterm');
  const cwd = options.cwd || image.WorkingDir || '/';
  if (!posix.isAbsolute(cwd)) throw new EsgzError('BAD_FLAG', `working directory "${cwd}" must be absolute`);

  const privileged = options.privileged === true;
  const readOnly = privileged ? 'rw' : 'ro';
  const mounts: RuntimeMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', readOnly] },
    // With the cgroup namespace this shows the container's own cgroups (its limits), not the host's.
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', readOnly],
    },
  ];
  if (options.netHost) {
    for (const file of ['/etc/hosts', '/etc/resolv.conf']) {
      if (existsSync(file)) mounts.push({ destination: file, type: 'bind', source: file, options: ['rbind', 'ro'] });
    }
  } else {
    const files = await writeResolverFiles(bundleDir, options);
    mounts.push({ destination: '/etc/resolv.conf', type: 'bind', source: files.resolvConf, options: ['rbind', 'ro'] });
    mounts.push({ destination: '/etc/hosts', type: 'bind', source: files.hosts, options: ['rbind', 'ro'] });
  }
  mounts.push(...(options.mounts ?? []));

  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }];
  // A new network namespace: runc brings up its loopback and nothing else.
  if (!options.netHost) namespaces.push({ type: 'network' });
  const capabilities = privileged ? await ownCapabilities() : DEFAULT_CAPABILITIES;
  const seccomp = privileged ? undefined : await loadSeccompProfile(capabilities, options.seccompProfile);

  return {
    ociVersion: '1.0.2',
    process: {
      terminal: options.terminal ?? false,
      user: {
        uid: user.uid,
        gid: user.gid,
        ...(user.additionalGids.length > 0 ? { additionalGids: user.additionalGids } : {}),
      },
      args,
      env,
      cwd,
      capabilities: { bounding: capabilities, effective: capabilities, permitted: capabilities },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: false },
    hostname: options.hostname ?? 'esgz',
    mounts,
    linux: {
      namespaces,
      maskedPaths: privileged ? [] : MASKED_PATHS,
      readonlyPaths: privileged ? [] : READONLY_PATHS,
      resources: { devices: [{ allow: false, access: 'rwm' }], ...limits(options) },
      ...(seccomp ? { seccomp } : {}),
    },
  };
}

/**
 * What --privileged grants: every capability esgz itself may pass on (its bounding set), as
 * nerdctl does; runc refuses to start a container asking for more.
 */
async function ownCapabilities(): Promise<string[]> {
  const status = await readFile('/proc/self/status', 'utf8');
  const bounding = BigInt(`0x${/^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0'}`);
  return ALL_CAPABILITIES.filter((_, bit) => (bounding >> BigInt(bit)) & 1n);
}

/** The pids and memory cgroup limits (runtime-spec config-linux.md#control-groups). */
function limits(options: RunOptions): Pick<RuntimeSpec['linux']['resources'], 'pids' | 'memory'> {
  const pids = options.pidsLimit ?? DEFAULT_PIDS_LIMIT;
  const memory = options.memoryLimitBytes ?? defaultMemoryLimitBytes();
  if (!Number.isSafeInteger(pids)) throw new EsgzError('BAD_FLAG', `pids limit ${pids} is not a whole number`);
  if (!Number.isSafeInteger(memory) || memory < 0)
    throw new EsgzError('BAD_FLAG', `memory limit ${memory} is not a byte count`);
  // Below a few MiB runc's own init cannot start; say so instead of an OOM kill at start.
  if (memory > 0 && memory < MIN_MEMORY_LIMIT_BYTES)
    throw new EsgzError(
      'BAD_FLAG',
      `memory limit ${memory} bytes is below the minimum of ${MIN_MEMORY_LIMIT_BYTES / 1024 ** 2} MiB`,
    );
  return { ...(pids > 0 ? { pids: { limit: pids } } : {}), ...(memory > 0 ? { memory: { limit: memory } } : {}) };
}

async function writeResolverFiles(
  bundleDir: string,
  options: RunOptions,
): Promise<{ hosts: string; resolvConf: string }> {
  const nameservers = options.dnsNameservers ?? DEFAULT_NAMESERVERS;
  let resolv = nameservers.map((n) => `nameserver ${n}\n`).join('');
  if (options.dnsSearchDomains?.length) resolv += `search ${options.dnsSearchDomains.join(' ')}\n`;
  if (options.dnsOptions?.length) resolv += `options ${options.dnsOptions.join(' ')}\n`;
  let hosts = [
    ['127.0.0.1', 'localhost'],
    ['::1', 'localhost ip6-localhost ip6-loopback'],
    ['fe00::0', 'ip6-localnet'],
    ['ff00::0', 'ip6-mcastprefix'],
    ['ff02::1', 'ip6-allnodes'],
    ['ff02::2', 'ip6-allrouters'],
  ]
    .map(([ip, name]) => `${ip}\t${name}\n`)
    .join('');
  for (const entry of options.addHosts ?? []) {
    const colon = entry.indexOf(':');
    if (colon <= 0 || colon === entry.length - 1)
      throw new EsgzError('BAD_FLAG', `host entry "${entry}" is not host:IP`);
    hosts += `${entry.slice(colon + 1)}\t${entry.slice(0, colon)}\n`;
  }
  const dir = join(bundleDir, 'etc');
  await mkdir(dir, { recursive: true });
  const files = { hosts: join(dir, 'hosts'), resolvConf: join(dir, 'resolv.conf') };
  await writeAtomically(files.hosts, hosts);
  await writeAtomically(files.resolvConf, resolv);
  return files;
}

/** Writes `<bundleDir>/config.json` (temp name, then rename). */
export async function writeBundleConfig(bundleDir: string, spec: RuntimeSpec): Promise<string> {
  await mkdir(bundleDir, { recursive: true });
  const path = join(bundleDir, 'config.json');
  await writeAtomically(path, `${JSON.stringify(spec, null, 2)}\n`);
  return path;
}

async function writeAtomically(path: string, data: string): Promise<void> {
  await writeFile(`${path}.tmp`, data, { mode: 0o644 });
  await rename(`${path}.tmp`, path);
}

/**
 * Checks, before anything runs, that the command exists in the image as an executable file
 * (looked up in the container's PATH when it has no "/"), so a typo gives a clear message
 * instead of a runc exec error.
 */
export async function checkExecutable(rootfs: string, spec: RuntimeSpec): Promise<string> {
  const command = spec.process.args[0]!;
  const candidates: string[] = [];
  if (command.includes('/'))
    candidates.push(posix.isAbsolute(command) ? command : posix.join(spec.process.cwd, command));
  else {
    const pathVar = spec.process.env.find((e) => e.startsWith('PATH='))?.slice(5) ?? DEFAULT_PATH;
    for (const dir of pathVar.split(':').filter((d) => d !== '')) candidates.push(posix.join(dir, command));
  }
  for (const candidate of candidates) {
    const host = await resolveInRoot(rootfs, candidate, { followFinal: true });
    const st = await stat(host).catch(() => undefined);
    if (st?.isFile() && (st.mode & 0o111) !== 0) return candidate;
  }
  const where = command.includes('/') ? '' : ` (searched PATH ${candidates.map((c) => posix.dirname(c)).join(':')})`;
  throw new EsgzError('RUNTIME', `entrypoint "${command}" does not exist in the image or is not executable${where}`);
}
