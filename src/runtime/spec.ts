import { existsSync } from 'node:fs';
import { lstat, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import { EsgzError } from '../errors.js';
import type { ImageConfig } from '../image/types.js';
import { resolveInRoot } from './root-path.js';

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
    resources: { devices: Array<{ allow: boolean; access: string }> };
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
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_NAMESERVERS = ['8.8.8.8'];

/** The capability set container engines grant by default (Docker's and containerd's). */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Parses a flag holding a JSON array of strings (`--entrypoint`, `--args`). */
export function parseJsonArrayFlag(flag: string, value: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new EsgzError('BAD_FLAG', `--${flag} must be a JSON array of strings, e.g. '["/bin/sh","-c"]' (got ${value})`);
  }
  if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) {
    throw new EsgzError('BAD_FLAG', `--${flag} must be a JSON array of strings, e.g. '["/bin/sh","-c"]' (got ${value})`);
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
        throw new EsgzError('BAD_FLAG', `--mount ${value}: option "${key}" is not supported (type, source, destination, options)`);
    }
  }
  if (!mount.destination || !posix.isAbsolute(mount.destination)) {
    throw new EsgzError('BAD_FLAG', `--mount ${value}: needs an absolute destination=`);
  }
  if (mount.type === 'bind' || mount.options?.some((o) => o === 'bind' || o === 'rbind')) {
    if (!mount.source || !isAbsolute(mount.source)) throw new EsgzError('BAD_FLAG', `--mount ${value}: a bind mount needs an absolute source=`);
    if (!existsSync(mount.source)) throw new EsgzError('BAD_FLAG', `--mount ${value}: source ${mount.source} does not exist`);
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
    throw new EsgzError('BAD_FLAG', `--env-file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { cause: err });
  }
  const out: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    if (line.indexOf('=') <= 0) throw new EsgzError('BAD_FLAG', `--env-file ${path}:${i + 1}: "${line}" is not KEY=VALUE`);
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
  if (value === '') return { uid: 0, gid: 0, additionalGids: [], home: (await passwdEntries(rootfs)).find((p) => p.uid === 0)?.home };
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
  const additionalGids = name ? [...new Set(groups.filter((g) => g.members.includes(name!) && g.gid !== gid).map((g) => g.gid))] : [];
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
 * overridden by the flags, with default security (own pid/ipc/uts/mount/network namespaces,
 * no_new_privileges, the default capability set, masked /proc paths, no device access).
 */
export async function buildRuntimeSpec(input: BuildSpecInput): Promise<RuntimeSpec> {
  const { rootfs, config, options, bundleDir } = input;
  const image = config.config ?? {};
  const entrypoint = options.entrypoint && options.entrypoint.length > 0 ? options.entrypoint : (image.Entrypoint ?? []);
  const cmd = options.args && options.args.length > 0 ? options.args : (image.Cmd ?? []);
  const args = [...entrypoint, ...cmd];
  if (args.length === 0) {
    throw new EsgzError('BAD_FLAG', 'the image has no Entrypoint or Cmd: pass --entrypoint and/or --args');
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

  const mounts: RuntimeMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
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

  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  // A new network namespace: runc brings up its loopback and nothing else.
  if (!options.netHost) namespaces.push({ type: 'network' });

  return {
    ociVersion: '1.0.2',
    process: {
      terminal: options.terminal ?? false,
      user: { uid: user.uid, gid: user.gid, ...(user.additionalGids.length > 0 ? { additionalGids: user.additionalGids } : {}) },
      args,
      env,
      cwd,
      capabilities: { bounding: DEFAULT_CAPABILITIES, effective: DEFAULT_CAPABILITIES, permitted: DEFAULT_CAPABILITIES },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: false },
    hostname: options.hostname ?? 'esgz',
    mounts,
    linux: {
      namespaces,
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      resources: { devices: [{ allow: false, access: 'rwm' }] },
    },
  };
}

async function writeResolverFiles(bundleDir: string, options: RunOptions): Promise<{ hosts: string; resolvConf: string }> {
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
    if (colon <= 0 || colon === entry.length - 1) throw new EsgzError('BAD_FLAG', `--add-hosts "${entry}" is not host:IP`);
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
  if (command.includes('/')) candidates.push(posix.isAbsolute(command) ? command : posix.join(spec.process.cwd, command));
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
