import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { EsgzError } from '../errors.js';
import { DOCKER_HUB, DOCKER_HUB_API_HOST } from './reference.js';

/**
 * Registry credentials the way docker finds them: `$DOCKER_CONFIG/config.json` (default
 * `~/.docker/config.json`) with `credHelpers` (per registry), then `credsStore` (all registries),
 * then `auths` entries. Helpers are the `docker-credential-NAME` programs on PATH, speaking the
 * docker-credential-helpers protocol: `get` with the server URL on stdin, JSON on stdout.
 */
export interface Credentials {
  username: string;
  password: string;
  /**
   * An OAuth refresh token (docker's `identitytoken`, or a helper answering Username `<token>`):
   * exchanged at the token server with grant_type=refresh_token instead of Basic credentials.
   */
  identityToken?: string;
}

/** Docker Hub's credentials are stored under its v1 URL by `docker login`. */
const DOCKER_HUB_CONFIG_KEYS = ['https://index.docker.io/v1/', 'index.docker.io', DOCKER_HUB, DOCKER_HUB_API_HOST];
const DOCKER_HUB_SERVER_URL = 'https://index.docker.io/v1/';
const TOKEN_USERNAME = '<token>';

interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

export function dockerConfigDir(override?: string): string {
  return override ?? process.env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker');
}

/** Finds credentials for `registry` (as in a reference: `docker.io`, `host:port`); undefined means anonymous. */
export async function resolveCredentials(
  registry: string,
  options: { dockerConfigDir?: string } = {},
): Promise<Credentials | undefined> {
  const configPath = path.join(dockerConfigDir(options.dockerConfigDir), 'config.json');
  const config = await readDockerConfig(configPath);
  if (!config) return undefined;
  const keys = registry === DOCKER_HUB ? DOCKER_HUB_CONFIG_KEYS : [registry];

  const helper = findEntry(config.credHelpers, keys) ?? config.credsStore;
  if (helper !== undefined && helper !== '') {
    const fromHelper = await askHelper(helper, registry === DOCKER_HUB ? DOCKER_HUB_SERVER_URL : registry, configPath);
    if (fromHelper) return fromHelper;
    // A store without this registry falls through to auths, like docker.
  }

  const entry = findEntry(config.auths, keys);
  if (!entry) return undefined;
  let username = entry.username ?? '';
  let password = entry.password ?? '';
  if (entry.auth !== undefined && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0)
      throw new EsgzError('BAD_FORMAT', `${configPath}: auths["${registry}"].auth is not base64 of "user:password"`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const credentials: Credentials = { username, password };
  if (entry.identitytoken) credentials.identityToken = entry.identitytoken;
  if (username === '' && password === '' && !credentials.identityToken) return undefined;
  return credentials;
}

async function readDockerConfig(configPath: string): Promise<DockerConfigFile | undefined> {
  let text: string;
  try {
    text = await readFile(configPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new EsgzError('BAD_FORMAT', `cannot read docker config ${configPath}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as DockerConfigFile;
  } catch (err) {
    throw new EsgzError('BAD_FORMAT', `docker config ${configPath} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Keys in docker config may be bare hosts or URLs (`https://host/v1/`); compare by host. */
function findEntry<T>(entries: Record<string, T> | undefined, keys: string[]): T | undefined {
  if (!entries) return undefined;
  for (const key of keys) if (entries[key] !== undefined) return entries[key];
  for (const [key, value] of Object.entries(entries)) {
    const host = key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
    if (keys.includes(host)) return value;
  }
  return undefined;
}

async function askHelper(helper: string, serverUrl: string, configPath: string): Promise<Credentials | undefined> {
  const program = `docker-credential-${helper}`;
  const result = await execa(program, ['get'], { input: serverUrl, reject: false, timeout: 30_000 });
  if (result.failed) {
    const output = `${result.stdout}${result.stderr}`.trim();
    if ((result as { code?: string }).code === 'ENOENT') {
      throw new EsgzError('UNAUTHORIZED', `credential helper ${program} (from ${configPath}) is not on PATH`);
    }
    // The protocol's "not found" answer: no credentials stored for this server.
    if (/credentials not found/i.test(output)) return undefined;
    throw new EsgzError(
      'UNAUTHORIZED',
      `credential helper ${program} failed for ${serverUrl}: ${firstLine(output) || `exit code ${result.exitCode}`}`,
    );
  }
  let answer: { Username?: string; Secret?: string };
  try {
    answer = JSON.parse(result.stdout) as { Username?: string; Secret?: string };
  } catch {
    throw new EsgzError(
      'UNAUTHORIZED',
      `credential helper ${program} printed something that is not JSON for ${serverUrl}`,
    );
  }
  const username = answer.Username ?? '';
  const secret = answer.Secret ?? '';
  if (username === TOKEN_USERNAME) return { username: '', password: '', identityToken: secret };
  return { username, password: secret };
}

function firstLine(text: string): string {
  return text.split('\n')[0]?.trim() ?? '';
}
