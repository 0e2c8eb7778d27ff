import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { EsgzError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import type { Descriptor, RawManifest } from '../oci/types.js';
import { RegistryClient, type RegistryClientOptions, type TlsMaterial, type UploadResult } from './client.js';
import type { Credentials } from './credentials.js';
import type { ByteRange } from './range.js';
import { loadRegistryHosts, type HostCapability, type RegistryHost } from './hosts.js';

/**
 * One registry as containerd sees it through hosts.toml: its mirrors in order, then its server.
 * Reads (manifests, blobs, ranges) go to the first host with the capability that answers; a host
 * that fails (unreachable, 5xx, 404, wrong bytes) hands the request to the next, and the last
 * host's error is the one reported. Writes go to the first host with `push` only. Every byte
 * is verified against its digest by the per-host client, so a mirror cannot serve wrong bytes.
 */
export interface RegistryHostsOptions extends Omit<
  RegistryClientOptions,
  'host' | 'tls' | 'namespace' | 'credentials'
> {
  /** Roots searched for `HOST/hosts.toml` (default: esgz's, then containerd's certs.d). */
  hostsDirs?: string[];
  /** `--tlscacert`, `--tlscert`, `--tlskey`: for every host, before what hosts.toml adds. */
  tlsFiles?: { ca?: string; cert?: string; key?: string };
  /**
   * `-u USER[:PASS]` / `--refresh`: for the registry's own server only. Mirrors get their
   * hosts.toml `header` or the docker config entry of their own host: credentials go only to
   * the host they are for.
   */
  credentials?: Credentials | (() => Promise<Credentials>);
}

export async function openRegistryHosts(registry: string, options: RegistryHostsOptions = {}): Promise<RegistryHosts> {
  const { hostsDirs, tlsFiles, credentials, ...common } = options;
  const hosts = await loadRegistryHosts(registry, {
    ...(hostsDirs ? { hostsDirs } : {}),
    ...(options.plainHttp ? { plainHttp: true } : {}),
  });
  const shared = await readTlsFiles(tlsFiles);
  const serverCredentials = typeof credentials === 'function' ? await credentials() : credentials;
  const clients = await Promise.all(
    hosts.map(async (host) => {
      const tls = mergeTls(shared, await readTlsFiles(host));
      const name = host.isServer ? registry : new URL(host.origin).host;
      const client = new RegistryClient(name, {
        ...common,
        host,
        tls,
        ...(host.isServer && serverCredentials ? { credentials: serverCredentials } : {}),
        ...(host.isServer ? {} : { namespace: registry }),
      });
      return { host, client };
    }),
  );
  return new RegistryHosts(registry, clients);
}

interface HostClient {
  host: RegistryHost;
  client: RegistryClient;
}

export class RegistryHosts {
  /** Hosts whose connection failed: skipped for the rest of this client's life (a pull makes many requests). */
  private readonly down = new Set<HostClient>();

  constructor(
    readonly registry: string,
    private readonly hosts: HostClient[],
  ) {}

  async close(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.client.close()));
  }

  getManifest(repository: string, reference: string): Promise<RawManifest> {
    return this.read(manifestCapability(reference), (c) => c.getManifest(repository, reference));
  }

  headManifest(repository: string, reference: string): Promise<Descriptor | undefined> {
    return this.read(manifestCapability(reference), (c) => c.headManifest(repository, reference), { absent: true });
  }

  headBlob(repository: string, digest: string): Promise<number | undefined> {
    return this.read('pull', (c) => c.headBlob(repository, digest), { absent: true });
  }

  openBlob(repository: string, desc: Descriptor): Promise<Readable> {
    return this.read('pull', (c) => c.openBlob(repository, desc));
  }

  readBlobRange(repository: string, desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    return this.read('pull', (c) => c.readBlobRange(repository, desc, offset, length));
  }

  readBlobRanges(repository: string, desc: Descriptor, ranges: ByteRange[]): Promise<Buffer[]> {
    return this.read('pull', (c) => c.readBlobRanges(repository, desc, ranges));
  }

  // ---- writes: the first host with `push` ----

  blobExists(repository: string, digest: string): Promise<boolean> {
    return this.pushHost().blobExists(repository, digest);
  }

  hasBlob(repository: string, desc: Descriptor): Promise<boolean> {
    return this.pushHost().hasBlob(repository, desc);
  }

  uploadBlob(
    repository: string,
    desc: Descriptor,
    open: () => Promise<Readable> | Readable,
    hints: { mountFrom?: string } = {},
  ): Promise<UploadResult> {
    return this.pushHost().uploadBlob(repository, desc, open, hints);
  }

  putManifest(repository: string, reference: string, manifest: RawManifest): Promise<void> {
    return this.pushHost().putManifest(repository, reference, manifest);
  }

  private pushHost(): RegistryClient {
    const host = this.hosts.find((h) => h.host.capabilities.has('push'));
    if (!host)
      throw new EsgzError(
        'UNSUPPORTED',
        `registry ${this.registry}: no host in its hosts.toml has the "push" capability`,
      );
    return host.client;
  }

  /**
   * Tries each host with `capability` in order. `absent`: an undefined answer (404 to a HEAD)
   * also moves on, and is the answer when no host has it.
   */
  private async read<T>(
    capability: HostCapability,
    attempt: (client: RegistryClient) => Promise<T>,
    options: { absent?: boolean } = {},
  ): Promise<T> {
    const candidates = this.hosts.filter((h) => h.host.capabilities.has(capability));
    if (candidates.length === 0)
      throw new EsgzError(
        'UNSUPPORTED',
        `registry ${this.registry}: no host in its hosts.toml has the "${capability}" capability`,
      );
    const usable = candidates.filter((h) => !this.down.has(h));
    // Every host down: try them all again rather than fail without a request.
    const order = usable.length > 0 ? usable : candidates;
    let lastError: unknown;
    for (const [i, host] of order.entries()) {
      const last = i === order.length - 1;
      try {
        const answer = await attempt(host.client);
        if (answer === undefined && options.absent && !last) continue;
        return answer;
      } catch (err) {
        if (!fallsThrough(err) || last) throw err;
        if ((err as EsgzError).code === 'NETWORK') this.down.add(host);
        lastError = err;
      }
    }
    throw lastError;
  }
}

/** A tag needs `resolve`; a digest is content, which `pull` hosts serve. */
function manifestCapability(reference: string): HostCapability {
  return isDigest(reference) ? 'pull' : 'resolve';
}

/** Anything a host got wrong sends the request on; only esgz's own faults and interrupts stop it. */
function fallsThrough(err: unknown): boolean {
  return err instanceof EsgzError && err.code !== 'INTERNAL' && err.code !== 'INTERRUPTED';
}

async function readTlsFiles(
  files: { ca?: string | string[]; cert?: string; key?: string; client?: RegistryHost['client'] } | undefined,
): Promise<TlsMaterial> {
  if (!files) return {};
  const ca = typeof files.ca === 'string' ? [files.ca] : (files.ca ?? []);
  const pairs = [...(files.cert !== undefined ? [{ cert: files.cert, key: files.key }] : []), ...(files.client ?? [])];
  if (files.key !== undefined && files.cert === undefined) throw new EsgzError('BAD_FLAG', '--tlskey needs --tlscert');
  const material: TlsMaterial = {};
  if (ca.length > 0) material.ca = await Promise.all(ca.map((f) => readPem(f, 'CA certificate')));
  if (pairs.length > 0) {
    material.cert = await Promise.all(pairs.map((p) => readPem(p.cert, 'client certificate')));
    // A pair without a key file has its key in the certificate's file (containerd's single-PEM form).
    material.key = await Promise.all(
      pairs.map((p, i) => (p.key !== undefined ? readPem(p.key, 'client key') : material.cert![i]!)),
    );
  }
  return material;
}

function mergeTls(a: TlsMaterial, b: TlsMaterial): TlsMaterial {
  const merged: TlsMaterial = {};
  for (const key of ['ca', 'cert', 'key'] as const) {
    const list = [...(a[key] ?? []), ...(b[key] ?? [])];
    if (list.length > 0) merged[key] = list;
  }
  return merged;
}

async function readPem(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new EsgzError(
      'BAD_FLAG',
      `${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err },
    );
  }
  if (!text.includes('-----BEGIN ')) throw new EsgzError('BAD_FORMAT', `${what} ${file}: not a PEM file`);
  return text;
}
