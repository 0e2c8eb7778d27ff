import { readdir, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { EsgzError } from '../errors.js';
import { DOCKER_HUB, DOCKER_HUB_API_HOST, isLoopbackRegistry } from './reference.js';

/**
 * containerd's registry host configuration (`docs/hosts.md`): a directory per registry host
 * (`certs.d/HOST[:PORT]/hosts.toml`) naming mirrors (`[host."URL"]` tables, tried in file order)
 * and the upstream `server` (tried last), each with capabilities, CA bundles, client certificates,
 * `skip_verify`, extra headers and `override_path`.
 */
export type HostCapability = 'pull' | 'resolve' | 'push';

export interface RegistryHost {
  /** `https://mirror.example:5000`: scheme, host and port. */
  origin: string;
  /** The API root path: `/v2` unless the URL's path says otherwise (`override_path`). */
  path: string;
  capabilities: ReadonlySet<HostCapability>;
  /** PEM files added to the system roots (absolute paths). */
  ca?: string[];
  /** Client certificate and key files; a missing key means the key is in the certificate's file. */
  client?: Array<{ cert: string; key?: string }>;
  skipVerify?: boolean;
  /** Extra headers sent to this host (lower-case names). */
  header?: Record<string, string[]>;
  /** The upstream registry itself (the last entry), rather than a mirror. */
  isServer: boolean;
  /** A loopback registry named by nothing but its reference: try https, then plain http (as before hosts.toml). */
  probeScheme?: boolean;
}

export const HOSTS_FILE = 'hosts.toml';
/** containerd's CRI default `config_path`. */
export const CONTAINERD_CERTS_DIR = '/etc/containerd/certs.d';
/** containerd's fallback directory for every registry without its own. */
const DEFAULT_HOST_DIR = '_default';
const ALL_CAPABILITIES: readonly HostCapability[] = ['pull', 'resolve', 'push'];
const API_ROOT = '/v2';
/** hosts.toml files are a few hundred bytes; a huge one is a mistake or hostile. */
const MAX_HOSTS_FILE_BYTES = 1024 * 1024;

/** The esgz-native directory, searched before containerd's: `$XDG_CONFIG_HOME/esgz/certs.d`. */
export function esgzCertsDir(): string {
  const config = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(config, 'esgz', 'certs.d');
}

/** Where hosts directories are looked for when `--hosts-dir` is not given. */
export function defaultHostsDirs(): string[] {
  return [esgzCertsDir(), CONTAINERD_CERTS_DIR];
}

/**
 * The directories containerd tries for `registry` under `root`, first match wins:
 * `host_port_` (its portable spelling), `host:port`, then `_default`.
 */
export function hostDirCandidates(root: string, registry: string): string[] {
  const colon = registry.lastIndexOf(':');
  const candidates = colon > 0 ? [`${registry.slice(0, colon)}_${registry.slice(colon + 1)}_`] : [];
  candidates.push(registry, DEFAULT_HOST_DIR);
  return candidates.map((name) => path.join(root, name));
}

export interface LoadHostsOptions {
  /** Roots searched in order; the first with a directory for the registry is used (no merging). */
  hostsDirs?: string[];
  /** The default server's scheme is http (`--plain-http`); a configured `server` keeps its own. */
  plainHttp?: boolean;
}

/**
 * The hosts to try for `registry`, mirrors first and the server last. Without any hosts.toml this
 * is one host: the registry itself (Docker Hub's API host for docker.io), over https, or http with
 * `plainHttp`, or either for a loopback registry (`scheme` undefined: the client probes).
 */
export async function loadRegistryHosts(registry: string, options: LoadHostsOptions = {}): Promise<RegistryHost[]> {
  for (const root of options.hostsDirs ?? defaultHostsDirs()) {
    for (const dir of hostDirCandidates(root, registry)) {
      if (!(await isDirectory(dir))) continue;
      const file = path.join(dir, HOSTS_FILE);
      const text = await readHostsFile(file);
      if (text === undefined)
        return [{ ...defaultServer(registry, options.plainHttp), ...(await dockerCertFiles(dir)) }];
      return withDefaultServer(parseHostsToml(text, dir, file), registry, options.plainHttp);
    }
  }
  return [defaultServer(registry, options.plainHttp)];
}

/** A parsed server entry without `server = ...` names no origin yet: the registry fills it in. */
type ParsedHost = Omit<RegistryHost, 'origin' | 'path'> & { origin?: string; path?: string };

/**
 * Parses one hosts.toml (`where` names it in errors; relative paths are taken from `baseDir`).
 * Hosts come back in file order, the server entry last.
 */
export function parseHostsToml(text: string, baseDir: string, where: string): ParsedHost[] {
  let document: Record<string, unknown>;
  try {
    document = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new EsgzError('BAD_FORMAT', `${where}: not valid TOML: ${message}`, { cause: err });
  }
  const hosts: ParsedHost[] = [];
  const tables = document.host ?? {};
  if (!isTable(tables)) throw new EsgzError('BAD_FORMAT', `${where}: "host" must be a table of [host."URL"] tables`);
  // TOML tables keep their keys in file order (no URL is an integer-like key), as containerd reads them.
  for (const [url, table] of Object.entries(tables)) {
    if (!isTable(table)) throw new EsgzError('BAD_FORMAT', `${where}: host."${url}" must be a table`);
    const here = `${where}: host."${url}"`;
    hosts.push({ ...parseHostTable(table, baseDir, here, HOST_KEYS), ...hostUrl(url, table, here), isServer: false });
  }
  const server = document.server;
  if (server !== undefined && typeof server !== 'string')
    throw new EsgzError('BAD_FORMAT', `${where}: "server" must be a string`);
  const serverUrl = server !== undefined && server !== '' ? hostUrl(server, document, `${where}: server`) : {};
  hosts.push({ ...parseHostTable(document, baseDir, where, TOP_LEVEL_KEYS), ...serverUrl, isServer: true });
  return hosts;
}

/** What a host table may hold; the top level (the server's table) also has `server` and the `host` tables. */
const HOST_KEYS = new Set(['capabilities', 'ca', 'client', 'skip_verify', 'header', 'override_path', 'dial_timeout']);
const TOP_LEVEL_KEYS = new Set([...HOST_KEYS, 'server', 'host']);

function parseHostTable(
  table: Record<string, unknown>,
  baseDir: string,
  where: string,
  known: ReadonlySet<string>,
): Omit<ParsedHost, 'isServer'> {
  const unknown = Object.keys(table).find((key) => !known.has(key));
  if (unknown !== undefined) throw new EsgzError('BAD_FORMAT', `${where}: unknown key "${unknown}"`);
  const result: Omit<ParsedHost, 'isServer'> = { capabilities: parseCapabilities(table.capabilities, where) };
  if (table.ca !== undefined) result.ca = stringList(table.ca, `${where}: ca`).map((p) => path.resolve(baseDir, p));
  if (table.client !== undefined) result.client = parseClient(table.client, baseDir, `${where}: client`);
  if (table.skip_verify !== undefined) result.skipVerify = boolean(table.skip_verify, `${where}: skip_verify`);
  if (table.header !== undefined) result.header = parseHeader(table.header, `${where}: header`);
  if (table.override_path !== undefined) boolean(table.override_path, `${where}: override_path`);
  return result;
}

/** containerd's rule: a URL without a scheme is https; its path gets `/v2` appended unless `override_path`. */
function hostUrl(raw: string, table: Record<string, unknown>, where: string): { origin: string; path: string } {
  const withScheme = /^https?:\/\//i.test(raw) ? raw : `https://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new EsgzError('BAD_FORMAT', `${where}: "${raw}" is not a URL`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new EsgzError(
      'BAD_FORMAT',
      `${where}: "${raw}" must be scheme://host[:port][/path] (credentials go in "header" or docker login)`,
    );
  }
  const override = table.override_path === true;
  let root = path.posix.normalize(url.pathname).replace(/\/+$/, '');
  if (!override && !root.endsWith(API_ROOT)) root += API_ROOT;
  return { origin: url.origin, path: root };
}

function parseCapabilities(value: unknown, where: string): Set<HostCapability> {
  if (value === undefined) return new Set(ALL_CAPABILITIES);
  const list = stringList(value, `${where}: capabilities`).map((c) => c.toLowerCase());
  const bad = list.find((c) => !(ALL_CAPABILITIES as readonly string[]).includes(c));
  if (bad !== undefined)
    throw new EsgzError('BAD_FORMAT', `${where}: unknown capability "${bad}" (pull, resolve or push)`);
  return new Set(list as HostCapability[]);
}

/** `client`: one file holding certificate and key, a list of such files, or a list of [cert, key] pairs. */
function parseClient(value: unknown, baseDir: string, where: string): Array<{ cert: string; key?: string }> {
  const items = Array.isArray(value) ? value : [value];
  return items.map((item) => {
    if (typeof item === 'string') return { cert: path.resolve(baseDir, item) };
    if (Array.isArray(item) && item.length === 2 && item.every((p) => typeof p === 'string')) {
      return { cert: path.resolve(baseDir, item[0] as string), key: path.resolve(baseDir, item[1] as string) };
    }
    throw new EsgzError('BAD_FORMAT', `${where}: expected a file, a list of files or a list of ["cert", "key"] pairs`);
  });
}

function parseHeader(value: unknown, where: string): Record<string, string[]> {
  if (!isTable(value)) throw new EsgzError('BAD_FORMAT', `${where}: must be a table of name = "value" or ["values"]`);
  const header: Record<string, string[]> = {};
  for (const [name, values] of Object.entries(value)) {
    // A header value with a line break would let the file inject a second header or request.
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
      throw new EsgzError('BAD_FORMAT', `${where}: "${name}" is not a header name`);
    const list = stringList(values, `${where}.${name}`);
    if (list.some((v) => /[\r\n\0]/.test(v)))
      throw new EsgzError('BAD_FORMAT', `${where}.${name}: a value holds a line break`);
    header[name.toLowerCase()] = list;
  }
  return header;
}

function stringList(value: unknown, where: string): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value as string[];
  throw new EsgzError('BAD_FORMAT', `${where}: expected a string or a list of strings`);
}

function boolean(value: unknown, where: string): boolean {
  if (typeof value !== 'boolean') throw new EsgzError('BAD_FORMAT', `${where}: expected true or false`);
  return value;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** The server entry without `server = ...` is the registry itself, as containerd fills it in. */
function withDefaultServer(hosts: ParsedHost[], registry: string, plainHttp: boolean | undefined): RegistryHost[] {
  return hosts.map((host) => {
    if (host.origin !== undefined && host.path !== undefined) return host as RegistryHost;
    const fallback = defaultServer(registry, plainHttp);
    return { ...host, origin: fallback.origin, path: fallback.path };
  });
}

function defaultServer(registry: string, plainHttp: boolean | undefined): RegistryHost {
  const apiHost = registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
  const scheme = plainHttp ? 'http' : 'https';
  const probeScheme = !plainHttp && isLoopbackRegistry(registry);
  return {
    origin: `${scheme}://${apiHost}`,
    path: API_ROOT,
    capabilities: new Set(ALL_CAPABILITIES),
    isServer: true,
    ...(probeScheme ? { probeScheme } : {}),
  };
}

/**
 * A host directory without hosts.toml, in docker's `certs.d` layout: `*.crt` are CA bundles,
 * `NAME.cert` a client certificate with its key in `NAME.key` (or in the same file).
 */
async function dockerCertFiles(dir: string): Promise<Pick<RegistryHost, 'ca' | 'client'>> {
  const names = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => e.name)
    .sort();
  const ca = names.filter((n) => n.endsWith('.crt')).map((n) => path.join(dir, n));
  const client = names
    .filter((n) => n.endsWith('.cert'))
    .map((n) => {
      const key = `${n.slice(0, -'.cert'.length)}.key`;
      return { cert: path.join(dir, n), ...(names.includes(key) ? { key: path.join(dir, key) } : {}) };
    });
  return { ...(ca.length > 0 ? { ca } : {}), ...(client.length > 0 ? { client } : {}) };
}

async function isDirectory(dir: string): Promise<boolean> {
  try {
    return (await stat(dir)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return false;
    throw new EsgzError('BAD_FORMAT', `${dir}: ${(err as Error).message}`, { cause: err });
  }
}

async function readHostsFile(file: string): Promise<string | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new EsgzError('BAD_FORMAT', `${file}: ${(err as Error).message}`, { cause: err });
  }
  if (bytes.length > MAX_HOSTS_FILE_BYTES)
    throw new EsgzError('BAD_FORMAT', `${file}: larger than ${MAX_HOSTS_FILE_BYTES} bytes`);
  return bytes.toString('utf8');
}
