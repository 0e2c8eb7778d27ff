import { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import { EsgzError } from '../errors.js';
import { DigestVerifier, digestOf, isDigest, verifyBuffer } from '../oci/digest.js';
import { MediaType, isIndexMediaType, isManifestMediaType } from '../oci/media-types.js';
import type { Descriptor, RawManifest } from '../oci/types.js';
import { parseChallenges, type Challenge } from './challenge.js';
import { resolveCredentials, type Credentials } from './credentials.js';
import type { RegistryHost } from './hosts.js';
import { isLoopbackRegistry, registryApiHost } from './reference.js';
import { traceExchange, type HttpTraceOptions } from './trace.js';
import { MAX_MANIFEST_BYTES } from '../oci/limits.js';
import {
  MULTI_RANGE_REFUSED_STATUS,
  TruncatedResponse,
  multiRangeHeader,
  offsetInPartial,
  parseContentRange,
  readSlice,
  retryAfterMs,
  sizeFromProbe,
  splitByteranges,
  type ByteRange,
} from './range.js';
import { hostBehaviour, type HostBehaviour } from './behaviour.js';

/**
 * An OCI distribution-spec client for one registry: one undici Agent (connection pool), the
 * registry's auth state (Basic, or Bearer tokens cached per scope), retries with backoff, and the
 * manifest and blob endpoints. Knows nothing about images beyond descriptors and raw manifests.
 */
export interface RegistryClientOptions {
  /** Talk plain HTTP (no TLS). */
  plainHttp?: boolean;
  /** Skip TLS certificate verification. */
  insecure?: boolean;
  /** Where config.json lives (default $DOCKER_CONFIG, then ~/.docker). */
  dockerConfigDir?: string;
  userAgent?: string;
  /** Use these credentials instead of looking in the docker config. */
  credentials?: Credentials;
  /** Attempts per request for 429/5xx/connection failures (default 3). */
  attempts?: number;
  /** First retry delay; doubles each attempt (default 250 ms). */
  retryDelayMs?: number;
  /** Blobs up to this size go in one PUT; larger ones in PATCH chunks (default 32 MiB). */
  monolithicUploadMax?: number;
  /** PATCH chunk size for large blobs (default 16 MiB; chunks stream, none is held in memory). */
  uploadChunkSize?: number;
  /** The host to talk to, from hosts.toml (a mirror or the server); default: the registry itself. */
  host?: RegistryHost;
  /** TLS material for this host (PEM contents). */
  tls?: TlsMaterial;
  /** The upstream registry, sent to a mirror as `ns=` (as containerd does) so one mirror can serve several. */
  namespace?: string;
  /** `--http-trace` / `--http-dump`. */
  trace?: HttpTraceOptions;
  /** How long a response body may stay silent before the read fails and is retried or resumed (default 10 s). */
  readTimeoutMs?: number;
}

/** PEM contents: CAs added to the system roots, client certificates and their keys. */
export interface TlsMaterial {
  ca?: string[];
  cert?: string[];
  key?: string[];
}

export type UploadResult = 'exists' | 'mounted' | 'uploaded';

const DEFAULT_USER_AGENT = 'esgz/0.1';
const MAX_REDIRECTS = 5;
const MAX_RETRY_AFTER_MS = 10_000;
// Short enough that a stalled lazy read is resumed well within the FUSE read deadline (30 s); a
// stream that is merely slow keeps moving and never hits it.
const DEFAULT_READ_TIMEOUT_MS = 10_000;
/** What object storage answers to a signed URL that has expired (S3 403, GCS 400, some CDNs 410). */
const EXPIRED_LOCATION_STATUS = new Set([400, 401, 403, 410]);
/** Answers to a blob HEAD that mean "HEAD is not allowed here", not "no such blob" (ghcr.io: 403). */
const HEAD_REFUSED_STATUS = new Set([403, 405]);
/** Blob locations remembered per client; old ones are dropped first. */
const MAX_CACHED_LOCATIONS = 1024;
const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerManifestList,
  MediaType.dockerManifest,
].join(', ');
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRYABLE_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ECONNABORTED',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

type Method = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

interface HttpRequest {
  method: string;
  headers: Record<string, string>;
  body?: Buffer | Readable | string | null;
}

interface RequestSpec {
  method: Method;
  /** `/v2/...` on the registry, or an absolute URL (upload locations). */
  target: string;
  /** Token scopes the request needs, e.g. `repository:a/b:pull`. */
  scopes: string[];
  headers?: Record<string, string>;
  /** A Buffer can be re-sent, so the request is retried; a stream cannot (the caller retries). */
  body?: Buffer | Readable;
  /** Follow 3xx Location (blob downloads may redirect to storage). */
  followRedirects?: boolean;
  /** Remember where a blob GET was redirected, and go there directly next time (until it expires). */
  reuseLocation?: boolean;
}

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** How many attempts it took (for messages). */
  attempts: number;
  url: URL;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

export class RegistryClient {
  readonly registry: string;
  private readonly apiHost: string;
  private readonly agent: Dispatcher;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly userAgent: string;
  /** The API root path on the host: `/v2`, or what hosts.toml says. */
  private readonly apiRoot: string;
  /** A hosts.toml `header` Authorization, sent as is instead of credentials. */
  private readonly staticAuthorization: string | undefined;
  /** hosts.toml headers other than Authorization, for this host only. */
  private readonly extraHeaders: Record<string, string>;
  private baseUrl: Promise<URL> | undefined;
  private credentials: Promise<Credentials | undefined> | undefined;
  private authScheme: 'none' | 'basic' | 'bearer' = 'none';
  private bearer: { realm: string; service: string | undefined } | undefined;
  private readonly tokens = new Map<string, Promise<CachedToken>>();
  /** Origin of a plain-HTTP token realm the credentials were kept from, once that happened. */
  private withheldFrom: string | undefined;
  /** Where blob GETs were redirected (registry URL → storage URL), reused until the storage host refuses it. */
  private readonly locations = new Map<string, URL>();
  /** What this host was seen to do (shared by every client of the host in this process). */
  readonly behaviour: HostBehaviour;

  constructor(
    registry: string,
    private readonly options: RegistryClientOptions = {},
  ) {
    this.registry = registry;
    this.apiHost = options.host ? new URL(options.host.origin).host : registryApiHost(registry);
    this.apiRoot = options.host?.path ?? '/v2';
    const header = Object.entries(options.host?.header ?? {}).map(([name, values]) => [name, values.join(', ')]);
    const { authorization, ...extra } = Object.fromEntries(header) as Record<string, string>;
    this.staticAuthorization = options.credentials ? undefined : authorization;
    this.extraHeaders = extra;
    this.attempts = Math.max(1, options.attempts ?? 3);
    this.retryDelayMs = options.retryDelayMs ?? 250;
    this.userAgent = options.userAgent ?? DEFAULT_USER_AGENT;
    this.agent = createDispatcher(
      !(options.host?.skipVerify ?? options.insecure),
      options.tls ?? {},
      options.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS,
    );
    this.behaviour = hostBehaviour(this.apiHost);
  }

  /** Drops every connection; a blob stream still being read errors (so close never waits on a stalled consumer). */
  async close(): Promise<void> {
    await this.agent.destroy();
  }

  /** The API base the client settled on (scheme, host) and the auth scheme the registry asked for. */
  async endpoint(): Promise<{ url: string; auth: 'none' | 'basic' | 'bearer' }> {
    const base = await this.ensureBase();
    return { url: new URL(`${this.apiRoot}/`, base).toString(), auth: this.authScheme };
  }

  /** Where GETs of this blob were last redirected (a storage URL), if they were. */
  async blobLocation(repository: string, digest: string): Promise<URL | undefined> {
    const base = await this.ensureBase();
    return this.locations.get(this.apiUrl(`/v2/${repository}/blobs/${digest}`, base).href);
  }

  // ---- manifests ----

  /** GETs a manifest or index by tag or digest, verified against the digest (or the registry's Docker-Content-Digest). */
  async getManifest(repository: string, reference: string): Promise<RawManifest> {
    return this.retryTruncated(() => this.getManifestOnce(repository, reference));
  }

  private async getManifestOnce(repository: string, reference: string): Promise<RawManifest> {
    const what = `manifest ${this.name(repository, reference)}`;
    const response = await this.send({
      method: 'GET',
      target: `/v2/${repository}/manifests/${reference}`,
      scopes: [pullScope(repository)],
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (response.status !== 200) throw await this.failure(response, 'GET', what);
    const bytes = await readCapped(response.body, MAX_MANIFEST_BYTES, what);
    let digest: string;
    if (isDigest(reference)) {
      verifyBuffer(bytes, { digest: reference }, `${what} from ${this.registry}`);
      digest = reference;
    } else {
      digest = digestOf(bytes);
      const claimed = header(response.headers, 'docker-content-digest');
      if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
        throw new EsgzError('DIGEST_MISMATCH', `${what}: registry says ${claimed} but the bytes hash to ${digest}`);
      }
    }
    return { bytes, digest, mediaType: manifestMediaType(bytes, header(response.headers, 'content-type'), what) };
  }

  /** HEADs a manifest: its descriptor, or undefined when the registry does not have it. */
  async headManifest(repository: string, reference: string): Promise<Descriptor | undefined> {
    const what = `manifest ${this.name(repository, reference)}`;
    const response = await this.send({
      method: 'HEAD',
      target: `/v2/${repository}/manifests/${reference}`,
      scopes: [pullScope(repository)],
      headers: { accept: MANIFEST_ACCEPT },
    });
    await response.body.dump();
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw await this.failure(response, 'HEAD', what);
    const digest = header(response.headers, 'docker-content-digest') ?? (isDigest(reference) ? reference : undefined);
    if (digest === undefined)
      throw new EsgzError('REGISTRY', `${what}: registry ${this.registry} sent no Docker-Content-Digest`);
    return {
      mediaType: (header(response.headers, 'content-type') ?? '').split(';')[0]!.trim(),
      digest,
      size: Number(header(response.headers, 'content-length') ?? 0),
    };
  }

  /** PUTs a manifest under `reference` (a tag, or its own digest). */
  async putManifest(repository: string, reference: string, manifest: RawManifest): Promise<void> {
    const what = `manifest ${this.name(repository, reference)}`;
    const response = await this.send({
      method: 'PUT',
      target: `/v2/${repository}/manifests/${reference}`,
      scopes: [pushScope(repository)],
      headers: { 'content-type': manifest.mediaType },
      body: manifest.bytes,
    });
    if (response.status !== 201 && response.status !== 200) throw await this.failure(response, 'PUT', what);
    await response.body.dump();
    const stored = header(response.headers, 'docker-content-digest');
    if (stored !== undefined && stored !== manifest.digest) {
      throw new EsgzError('DIGEST_MISMATCH', `${what}: registry stored ${stored}, expected ${manifest.digest}`);
    }
  }

  // ---- blobs ----

  /**
   * Whether the repository has the blob. A redirect (to storage) already says yes; it is not
   * followed, because presigned storage URLs are often signed for GET only and refuse a HEAD.
   */
  async blobExists(repository: string, digest: string): Promise<boolean> {
    return (await this.probeBlob(repository, digest)) !== undefined;
  }

  /**
   * Whether the repository has the blob `desc` names, with `desc`'s size: a stored blob of
   * another length means the descriptor lies about it, and a manifest naming it must not be
   * written (SIZE_MISMATCH). A redirect answer carries no size and is taken as a yes.
   */
  async hasBlob(repository: string, desc: Descriptor): Promise<boolean> {
    const found = await this.probeBlob(repository, desc.digest);
    if (found === undefined) return false;
    if (found.size !== undefined && found.size !== desc.size) {
      throw new EsgzError(
        'SIZE_MISMATCH',
        `blob ${desc.digest} in ${this.registry}/${repository}: the registry has ${found.size} bytes but the descriptor says ${desc.size}`,
      );
    }
    return true;
  }

  /** HEAD without following redirects: undefined when absent, else the size the registry states (none for a redirect). */
  private async probeBlob(repository: string, digest: string): Promise<{ size: number | undefined } | undefined> {
    const response = await this.headOrRangedGet(repository, digest, false);
    await response.body.dump();
    if (response.status === 404) return undefined;
    if (response.status >= 300 && response.status < 400) return { size: undefined };
    return { size: await this.sizeOf(response, repository, digest) };
  }

  /** The blob's size when the repository has it, else undefined (follows redirects to storage). */
  async headBlob(repository: string, digest: string): Promise<number | undefined> {
    const response = await this.headOrRangedGet(repository, digest, true);
    await response.body.dump();
    if (response.status === 404) return undefined;
    return (await this.sizeOf(response, repository, digest)) ?? NaN;
  }

  /**
   * HEAD on a blob, or, on a host that refuses HEAD (ghcr.io answers 403), a GET of its first
   * byte: the same answer for existence, the size in Content-Range. The refusal is remembered.
   */
  private async headOrRangedGet(repository: string, digest: string, followRedirects: boolean): Promise<Response> {
    const spec = { target: `/v2/${repository}/blobs/${digest}`, scopes: [pullScope(repository)], followRedirects };
    if (!this.behaviour.headRefused) {
      const head = await this.send({ ...spec, method: 'HEAD' });
      if (!HEAD_REFUSED_STATUS.has(head.status)) return head;
      await head.body.dump();
      this.behaviour.headRefused = true;
    }
    return this.send({ ...spec, method: 'GET', headers: { range: 'bytes=0-0' }, reuseLocation: true });
  }

  /** The size a HEAD (or its ranged-GET stand-in) states; a failure status is an error. */
  private async sizeOf(response: Response, repository: string, digest: string): Promise<number | undefined> {
    const what = `blob ${digest} in ${this.registry}/${repository}`;
    if (response.status !== 200 && response.status !== 206) throw await this.failure(response, 'HEAD', what);
    return sizeFromProbe(
      response.status,
      header(response.headers, 'content-range'),
      header(response.headers, 'content-length'),
    );
  }

  /**
   * Streams a blob; the stream errors if the bytes do not match `desc` (digest and size). A
   * connection lost midway is resumed with a Range request from the last byte received (bounded
   * by the retry attempts); the digest still covers the whole stream, so a resume can never
   * splice in wrong bytes unnoticed.
   */
  async openBlob(repository: string, desc: Descriptor): Promise<Readable> {
    const what = `blob ${desc.digest} from ${this.registry}/${repository}`;
    const target = `/v2/${repository}/blobs/${desc.digest}`;
    const scopes = [pullScope(repository)];
    const first = await this.send({ method: 'GET', target, scopes, followRedirects: true, reuseLocation: true });
    if (first.status !== 200) throw await this.failure(first, 'GET', what);
    const announced = Number(header(first.headers, 'content-length'));
    if (Number.isSafeInteger(announced) && announced !== desc.size) {
      discard(first.body);
      throw new EsgzError(
        'SIZE_MISMATCH',
        `${what}: the registry sends ${announced} bytes but the descriptor says ${desc.size}`,
      );
    }

    const resume = async (from: number): Promise<Readable> => {
      const response = await this.send({
        method: 'GET',
        target,
        scopes,
        headers: { range: `bytes=${from}-` },
        followRedirects: true,
        reuseLocation: true,
      });
      // A registry that ignores Range resends the whole blob: what was already received is skipped.
      if (response.status === 200) return skipBytes(response.body, from);
      const contentRange = header(response.headers, 'content-range');
      if (response.status !== 206 || (contentRange !== undefined && !contentRange.startsWith(`bytes ${from}-`))) {
        await response.body.dump();
        throw new EsgzError(
          'SIZE_MISMATCH',
          `${what}: truncated after ${from} of ${desc.size} bytes and the registry did not resume (HTTP ${response.status})`,
        );
      }
      return response.body;
    };
    // Plain stream events rather than an async generator: this is the hot path of every pull.
    const verifier = new DigestVerifier(desc, what);
    let current: Readable = first.body;
    let received = 0;
    let attempt = 1;
    const attach = (body: Readable): void => {
      current = body;
      body.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (!verifier.write(chunk)) body.pause();
      });
      body.on('end', () => verifier.end());
      body.on('error', (err: Error) => {
        if (verifier.destroyed) return;
        if (attempt >= this.attempts || received >= desc.size) {
          verifier.destroy(
            new EsgzError(
              'SIZE_MISMATCH',
              `${what}: truncated: connection lost after ${received} of ${desc.size} bytes (${describeNetworkError(err)})`,
              { cause: err },
            ),
          );
          return;
        }
        const from = received;
        void sleep(this.backoff(attempt))
          .then(() => {
            attempt += 1;
            return resume(from);
          })
          .then(
            (body) => (verifier.destroyed ? discard(body) : attach(body)),
            (resumeError: unknown) => verifier.destroy(resumeError as Error),
          );
      });
    };
    verifier.on('drain', () => current.resume());
    // A consumer that stops reading (destroys the stream) stops the download.
    verifier.on('close', () => {
      if (!current.destroyed) current.destroy();
    });
    attach(first.body);
    return verifier;
  }

  /**
   * Reads `length` bytes at `offset` with a Range request. What the server sends is checked
   * against what was asked (see range.ts): a 206 for other bytes is trimmed or refused, a 200
   * with the whole blob is read up to the range's end and dropped. A connection lost midway is
   * resumed from the last byte received, within the client's attempts.
   */
  async readBlobRange(repository: string, desc: Descriptor, offset: number, length: number): Promise<Buffer> {
    const what = `blob ${desc.digest} bytes ${offset}+${length} from ${this.registry}/${repository}`;
    if (offset < 0 || length < 0 || offset + length > desc.size) {
      throw new EsgzError('INTERNAL', `${what}: range outside the blob's ${desc.size} bytes`);
    }
    const parts: Buffer[] = [];
    let received = 0;
    const keep = (piece: Buffer): void => {
      parts.push(piece);
      received += piece.length;
    };
    for (let attempt = 1; received < length; attempt += 1) {
      try {
        await this.readRangeInto(repository, desc, offset + received, length - received, keep, what);
      } catch (err) {
        if (!(err instanceof TruncatedResponse) || attempt >= this.attempts) throw err;
        await sleep(this.backoff(attempt));
      }
    }
    return Buffer.concat(parts, received);
  }

  /** One Range GET, its answer checked and cut to `offset`+`length`, handed to `sink` as it arrives. */
  private async readRangeInto(
    repository: string,
    desc: Descriptor,
    offset: number,
    length: number,
    sink: (piece: Buffer) => void,
    what: string,
  ): Promise<void> {
    const response = await this.send({
      method: 'GET',
      target: `/v2/${repository}/blobs/${desc.digest}`,
      scopes: [pullScope(repository)],
      headers: { range: `bytes=${offset}-${offset + length - 1}` },
      followRedirects: true,
      reuseLocation: true,
    });
    let skip: number;
    if (response.status === 200) {
      this.behaviour.rangeIgnored = true;
      skip = offset;
      const announced = Number(header(response.headers, 'content-length'));
      if (Number.isSafeInteger(announced) && announced !== desc.size) {
        discard(response.body);
        throw new EsgzError(
          'SIZE_MISMATCH',
          `${what}: the registry ignored the Range and sends ${announced} bytes, but the blob has ${desc.size}`,
        );
      }
    } else if (response.status === 206) {
      const contentRange = header(response.headers, 'content-range');
      try {
        skip = offsetInPartial(contentRange, { offset, length, blobSize: desc.size }, what);
      } catch (err) {
        this.behaviour.rangeMismatched = true;
        discard(response.body);
        throw err;
      }
      if (skip > 0) this.behaviour.rangeMismatched = true;
    } else {
      throw await this.failure(response, 'GET', what);
    }
    await readSlice(response.body, skip, length, sink, what);
  }

  /**
   * Reads several ranges of a blob, in one multi-range request where the host takes them. A
   * host that refuses multi-range (400/416/501) or ignores Range is remembered for the process
   * and gets one request per range from then on; every answer is checked as readBlobRange does.
   */
  async readBlobRanges(repository: string, desc: Descriptor, ranges: ByteRange[]): Promise<Buffer[]> {
    if (ranges.length < 2 || this.behaviour.multiRangeRefused || this.behaviour.rangeIgnored) {
      return Promise.all(ranges.map((r) => this.readBlobRange(repository, desc, r.offset, r.length)));
    }
    const what = `blob ${desc.digest} ${ranges.length} ranges from ${this.registry}/${repository}`;
    const response = await this.send({
      method: 'GET',
      target: `/v2/${repository}/blobs/${desc.digest}`,
      scopes: [pullScope(repository)],
      headers: { range: multiRangeHeader(ranges) },
      followRedirects: true,
      reuseLocation: true,
    });
    if (response.status === 206) {
      const wanted = ranges.reduce((n, r) => n + r.length, 0);
      // Part headers are small; a server that merges neighbours may send a little more than asked.
      const body = await readCapped(response.body, wanted + 4096 * ranges.length + desc.size / 64, what);
      const contentType = header(response.headers, 'content-type');
      if (!/^multipart\//i.test(contentType ?? '')) return this.sliceOnePart(response, body, desc, ranges, what);
      return splitByteranges(body, contentType, ranges, desc.size, what);
    }
    discard(response.body);
    if (response.status === 200) this.behaviour.rangeIgnored = true;
    else if (MULTI_RANGE_REFUSED_STATUS.has(response.status)) this.behaviour.multiRangeRefused = true;
    else throw await this.failure(response, 'GET', what);
    return this.readBlobRanges(repository, desc, ranges);
  }

  /** A multi-range request answered with one part (the server merged the ranges): each range is cut out of it. */
  private sliceOnePart(response: Response, body: Buffer, desc: Descriptor, ranges: ByteRange[], what: string) {
    const contentRange = header(response.headers, 'content-range');
    const start = parseContentRange(contentRange)?.start ?? 0;
    return ranges.map((r) => {
      const skip = offsetInPartial(contentRange, { ...r, blobSize: desc.size }, what);
      if (contentRange === undefined || start + body.length < r.offset + r.length)
        throw new EsgzError(
          'REGISTRY',
          `${what}: a single-part answer that does not hold bytes ${r.offset}+${r.length}`,
        );
      return body.subarray(skip, skip + r.length);
    });
  }

  /** Small whole-body reads (manifests, ranges) are cheap to repeat, so a connection lost midway is retried. */
  private async retryTruncated<T>(read: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await read();
      } catch (err) {
        if (!(err instanceof TruncatedResponse) || attempt >= this.attempts) throw err;
        await sleep(this.backoff(attempt));
      }
    }
  }

  /**
   * Puts a blob into `repository`: nothing when it is already there, a cross-repository mount
   * when `mountFrom` (a repository on this registry) has it, else an upload (one PUT for small
   * blobs, PATCH chunks then PUT for large ones). `open` must give a fresh stream of the blob's
   * bytes on each call: a failed upload is retried from the start. The bytes are verified against
   * `desc` on the way out, so a wrong source never lands under the wrong digest.
   */
  async uploadBlob(
    repository: string,
    desc: Descriptor,
    open: () => Promise<Readable> | Readable,
    hints: { mountFrom?: string } = {},
  ): Promise<UploadResult> {
    if (await this.hasBlob(repository, desc)) return 'exists';
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.uploadOnce(repository, desc, open, hints.mountFrom);
      } catch (err) {
        if (!(err instanceof RetryableUpload)) throw err;
        if (attempt >= this.attempts) throw err.error;
        await sleep(this.backoff(attempt));
      }
    }
  }

  private async uploadOnce(
    repository: string,
    desc: Descriptor,
    open: () => Promise<Readable> | Readable,
    mountFrom: string | undefined,
  ): Promise<UploadResult> {
    const what = `blob ${desc.digest} to ${this.registry}/${repository}`;
    const scopes = [pushScope(repository)];
    let query = '';
    if (mountFrom !== undefined && mountFrom !== repository) {
      scopes.push(pullScope(mountFrom));
      query = `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(mountFrom)}`;
    }
    const started = await this.send({ method: 'POST', target: `/v2/${repository}/blobs/uploads/${query}`, scopes });
    await started.body.dump();
    if (started.status === 201 && query !== '') {
      // A mount reads nothing: check the mounted blob's size against the descriptor instead.
      if (!(await this.hasBlob(repository, desc)))
        throw new EsgzError(
          'REGISTRY',
          `${what}: registry ${this.registry} reported a mount but does not have the blob`,
        );
      return 'mounted';
    }
    if (started.status !== 202) throw await this.failure(started, 'POST', what);
    let location = this.uploadLocation(started, what);

    const source = await open();
    const verified = new DigestVerifier(desc, `${what}: source`);
    source.on('error', (err) => verified.destroy(err));
    source.pipe(verified);

    const maxMonolithic = this.options.monolithicUploadMax ?? 32 * 1024 * 1024;
    if (desc.size <= maxMonolithic) {
      const url = new URL(location);
      url.searchParams.set('digest', desc.digest);
      const done = await this.sendStreaming(
        {
          method: 'PUT',
          target: url.toString(),
          scopes,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
          body: verified,
        },
        what,
      );
      await done.body.dump();
      if (done.status !== 201) throw await this.failure(done, 'PUT', what);
      this.checkStoredDigest(done, desc, what);
      return 'uploaded';
    }

    // Each PATCH body streams straight from the verified source (its length is known from
    // desc.size), so no chunk is ever held in memory; a failed chunk restarts the upload.
    const chunkSize = this.options.uploadChunkSize ?? 16 * 1024 * 1024;
    const pieces = (verified as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let carry: Buffer | undefined;
    async function* nextChunk(length: number): AsyncGenerator<Buffer> {
      let left = length;
      while (left > 0) {
        let piece = carry;
        carry = undefined;
        if (piece === undefined) {
          const next = await pieces.next();
          if (next.done) return; // short source: the verifier has already failed the stream
          piece = next.value;
        }
        if (piece.length > left) {
          carry = piece.subarray(left);
          piece = piece.subarray(0, left);
        }
        left -= piece.length;
        yield piece;
      }
    }
    try {
      for (let offset = 0; offset < desc.size;) {
        const length = Math.min(chunkSize, desc.size - offset);
        const response = await this.sendStreaming(
          {
            method: 'PATCH',
            target: location,
            scopes,
            headers: {
              'content-type': 'application/octet-stream',
              'content-range': `${offset}-${offset + length - 1}`,
              'content-length': String(length),
            },
            body: Readable.from(nextChunk(length)),
          },
          what,
        );
        await response.body.dump();
        if (response.status !== 202) throw new RetryableUpload(await this.failure(response, 'PATCH', what));
        offset += length;
        const range = header(response.headers, 'range');
        if (range !== undefined && range !== `0-${offset - 1}`) {
          throw new RetryableUpload(
            new EsgzError('REGISTRY', `${what}: registry holds range ${range} after ${offset} bytes were sent`),
          );
        }
        location = this.uploadLocation(response, what);
      }
      // Reading past the last byte lets the verifier report a long source or a digest mismatch
      // before the upload is committed under that digest.
      if (carry !== undefined || !(await pieces.next()).done) {
        throw new EsgzError('SIZE_MISMATCH', `${what}: source is longer than ${desc.size} bytes`);
      }
    } finally {
      // A failed chunk leaves the source half-read; the retry opens a fresh one.
      source.destroy();
    }
    const url = new URL(location);
    url.searchParams.set('digest', desc.digest);
    const done = await this.send({
      method: 'PUT',
      target: url.toString(),
      scopes,
      headers: { 'content-length': '0' },
      body: Buffer.alloc(0),
    });
    await done.body.dump();
    if (done.status !== 201) throw await this.failure(done, 'PUT', what);
    this.checkStoredDigest(done, desc, what);
    return 'uploaded';
  }

  private checkStoredDigest(response: Response, desc: Descriptor, what: string): void {
    const stored = header(response.headers, 'docker-content-digest');
    if (stored !== undefined && stored !== desc.digest) {
      throw new EsgzError('DIGEST_MISMATCH', `${what}: registry stored ${stored}, expected ${desc.digest}`);
    }
  }

  private uploadLocation(response: Response, what: string): string {
    const location = header(response.headers, 'location');
    if (location === undefined)
      throw new EsgzError('REGISTRY', `${what}: registry ${this.registry} started an upload without a Location`);
    return new URL(location, response.url).toString();
  }

  /** A request whose body is a one-shot stream: failures the caller may retry (with a new stream) become RetryableUpload. */
  private async sendStreaming(spec: RequestSpec, what: string): Promise<Response> {
    let response: Response;
    try {
      response = await this.send(spec);
    } catch (err) {
      if (err instanceof EsgzError && err.code === 'NETWORK') throw new RetryableUpload(err);
      throw err;
    }
    if (RETRYABLE_STATUS.has(response.status) || response.status === 401)
      throw new RetryableUpload(await this.failure(response, spec.method, what));
    return response;
  }

  // ---- transport: scheme, auth, retries ----

  private name(repository: string, reference: string): string {
    return `${this.registry}/${repository}${isDigest(reference) ? '@' : ':'}${reference}`;
  }

  /**
   * Sends with auth and retries: 429/5xx and connection failures are retried with exponential
   * backoff when the body can be re-sent; a 401 gets one more try after (re)authenticating.
   * Returns the last response whatever its status; callers turn unexpected ones into errors.
   */
  private async send(spec: RequestSpec): Promise<Response> {
    const base = await this.ensureBase();
    const url = this.apiUrl(spec.target, base);
    const replayable = spec.body === undefined || Buffer.isBuffer(spec.body);
    for (let attempt = 1; ; attempt += 1) {
      const last = !replayable || attempt >= this.attempts;
      let response: Response;
      try {
        response = await this.sendAuthorized(spec, url, base);
      } catch (err) {
        if (err instanceof EsgzError) throw err;
        const code = errorCode(err);
        if (!last && code !== undefined && RETRYABLE_NETWORK_CODES.has(code)) {
          await sleep(this.backoff(attempt));
          continue;
        }
        throw new EsgzError(
          'NETWORK',
          `registry ${this.registry}: ${spec.method} ${url.pathname}: ${describeNetworkError(err)}${attempt > 1 ? ` (after ${attempt} attempts)` : ''}`,
          { cause: err },
        );
      }
      response.attempts = attempt;
      if (!last && RETRYABLE_STATUS.has(response.status)) {
        const retryAfter = retryAfterMs(header(response.headers, 'retry-after'));
        await response.body.dump();
        // The server's Retry-After is honoured up to a bound, so a retry never waits unboundedly.
        await sleep(retryAfter !== undefined ? Math.min(retryAfter, MAX_RETRY_AFTER_MS) : this.backoff(attempt));
        continue;
      }
      return response;
    }
  }

  private backoff(attempt: number): number {
    return this.retryDelayMs * 2 ** (attempt - 1);
  }

  private async sendAuthorized(spec: RequestSpec, url: URL, base: URL): Promise<Response> {
    const first = await this.sendFollowing(spec, url, base, await this.authorization(spec.scopes));
    // Only the registry itself may change how esgz authenticates; a storage host's 401 is just a failure.
    if (first.status !== 401 || first.url.origin !== base.origin) return first;
    // The registry wants (other) credentials: learn its scheme from the challenge, then try once more.
    const challenges = parseChallenges(first.headers['www-authenticate']);
    const learned = this.learnChallenge(challenges, spec.scopes);
    // A stream body is spent: the caller retries the whole upload, which will use what was learned.
    if (!learned || spec.body instanceof Readable) return first;
    await first.body.dump();
    const scopes = mergeScopes(spec.scopes, challenges);
    return this.sendFollowing(spec, url, base, await this.authorization(scopes));
  }

  /**
   * Sends one request, following redirects when asked. The Authorization header goes only to the
   * registry's own origin (scheme, host and port of `base`): never to a storage host a blob
   * redirects to, nor to an upload Location on another host or scheme (containerd drops its
   * authorizer there too), so credentials and tokens stay with the host they were issued for.
   */
  private async sendFollowing(
    spec: RequestSpec,
    url: URL,
    base: URL,
    authorization: string | undefined,
  ): Promise<Response> {
    const remembered = spec.reuseLocation ? this.locations.get(url.href) : undefined;
    if (remembered !== undefined) {
      const response = await this.sendHops(spec, remembered, base, authorization);
      if (!this.locationExpired(response, base)) return response;
      // A signed URL that expired: the registry hands out a fresh one, the reader never notices.
      await response.body.dump();
      this.locations.delete(url.href);
      this.behaviour.expiredLocations += 1;
    }
    const response = await this.sendHops(spec, url, base, authorization);
    if (spec.reuseLocation && response.url.origin !== base.origin && !this.locationExpired(response, base)) {
      this.rememberLocation(url, response.url);
    }
    return response;
  }

  /** A refusal from a storage host (not the registry) of a URL the registry redirected to. */
  private locationExpired(response: Response, base: URL): boolean {
    return response.url.origin !== base.origin && EXPIRED_LOCATION_STATUS.has(response.status);
  }

  private rememberLocation(from: URL, to: URL): void {
    this.behaviour.redirected = true;
    if (this.locations.size >= MAX_CACHED_LOCATIONS) this.locations.delete(this.locations.keys().next().value!);
    this.locations.set(from.href, to);
  }

  private async sendHops(spec: RequestSpec, url: URL, base: URL, authorization: string | undefined): Promise<Response> {
    let current = url;
    for (let hop = 0; ; hop += 1) {
      const own = current.origin === base.origin;
      const headers: Record<string, string> = {
        'user-agent': this.userAgent,
        ...(own ? this.extraHeaders : {}),
        ...spec.headers,
      };
      if (authorization !== undefined && own) headers.authorization = authorization;
      const raw = await this.request(current, { method: spec.method, headers, body: spec.body ?? null });
      const location = header(raw.headers, 'location');
      if (
        spec.followRedirects &&
        [301, 302, 303, 307, 308].includes(raw.statusCode) &&
        location !== undefined &&
        hop < MAX_REDIRECTS
      ) {
        await raw.body.dump();
        current = new URL(location, current);
        continue;
      }
      return { status: raw.statusCode, headers: raw.headers, body: raw.body, attempts: 1, url: current };
    }
  }

  /** Updates the auth state from a 401's challenges; false when another try cannot help. */
  private learnChallenge(challenges: Challenge[], scopes: string[]): boolean {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer?.params.realm !== undefined) {
      const changed = this.authScheme !== 'bearer' || this.bearer?.realm !== bearer.params.realm;
      this.authScheme = 'bearer';
      this.bearer = { realm: bearer.params.realm, service: bearer.params.service };
      const key = mergeScopes(scopes, challenges).join(' ');
      // A token we already hold for these scopes was refused (expired early, or insufficient): fetch a new one, once.
      const hadToken = this.tokens.has(key);
      this.tokens.delete(key);
      return changed || hadToken || key !== scopes.join(' ');
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      const changed = this.authScheme !== 'basic';
      this.authScheme = 'basic';
      return changed;
    }
    return false;
  }

  private async authorization(scopes: string[]): Promise<string | undefined> {
    if (this.staticAuthorization !== undefined) return this.staticAuthorization;
    if (this.authScheme === 'none') return undefined;
    const credentials = await this.loadCredentials();
    if (this.authScheme === 'basic') {
      if (!credentials || credentials.identityToken) return undefined;
      return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
    }
    const key = [...scopes].sort().join(' ');
    // Concurrent requests share one token fetch per scope set; an expired or failed one is replaced once.
    for (;;) {
      const pending = this.tokens.get(key);
      if (!pending) break;
      const token = await pending.catch(() => undefined);
      if (token && token.expiresAt > Date.now()) return `Bearer ${token.token}`;
      if (this.tokens.get(key) === pending) {
        this.tokens.delete(key);
        break;
      }
    }
    const cached = this.fetchToken(scopes, credentials);
    this.tokens.set(key, cached);
    try {
      return `Bearer ${(await cached).token}`;
    } catch (err) {
      if (this.tokens.get(key) === cached) this.tokens.delete(key);
      throw err;
    }
  }

  private async fetchToken(scopes: string[], found: Credentials | undefined): Promise<CachedToken> {
    const { realm, service } = this.bearer!;
    const url = new URL(realm);
    // The realm comes from the registry's answer: a plain-HTTP one elsewhere would see the
    // credentials in clear text, so it gets an anonymous request instead (enough for public images).
    const withheld = found !== undefined && !mayCarryCredentials(url, await this.ensureBase());
    if (withheld) this.withheldFrom = url.origin;
    const credentials = withheld ? undefined : found;
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    let method: 'GET' | 'POST' = 'GET';
    let body: string | undefined;
    if (credentials?.identityToken) {
      // OAuth2 refresh-token grant (docker's identity tokens).
      method = 'POST';
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: credentials.identityToken,
        client_id: 'esgz',
      });
      if (service !== undefined) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      body = form.toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else {
      if (service !== undefined) url.searchParams.set('service', service);
      for (const scope of scopes) url.searchParams.append('scope', scope);
      if (credentials)
        headers.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
    }
    const where = `registry ${this.registry}: token server ${url.origin}${url.pathname}`;
    let response: Dispatcher.ResponseData;
    for (let attempt = 1; ; attempt += 1) {
      try {
        response = await this.request(url, { method, headers, body: body ?? null });
      } catch (err) {
        const code = errorCode(err);
        if (attempt < this.attempts && code !== undefined && RETRYABLE_NETWORK_CODES.has(code)) {
          await sleep(this.backoff(attempt));
          continue;
        }
        throw new EsgzError('NETWORK', `${where}: ${describeNetworkError(err)}`, { cause: err });
      }
      if (attempt < this.attempts && RETRYABLE_STATUS.has(response.statusCode)) {
        await response.body.dump();
        await sleep(this.backoff(attempt));
        continue;
      }
      break;
    }
    if (response.statusCode === 401 || response.statusCode === 403) {
      await response.body.dump();
      throw new EsgzError(
        'UNAUTHORIZED',
        credentials
          ? `${where} refused the credentials${credentials.username ? ` for user "${credentials.username}"` : ''}`
          : withheld
            ? `${where} requires credentials: ${this.withheldNote()}`
            : `${where} requires credentials and none were found (docker login ${this.registry})`,
      );
    }
    if (response.statusCode !== 200) {
      const text = (await readCapped(response.body, 64 * 1024, where).catch(() => Buffer.alloc(0))).toString('utf8');
      throw new EsgzError('REGISTRY', `${where}: HTTP ${response.statusCode}${text ? `: ${firstLine(text)}` : ''}`);
    }
    let answer: { token?: string; access_token?: string; expires_in?: number };
    try {
      answer = JSON.parse((await readCapped(response.body, 1024 * 1024, where)).toString('utf8')) as typeof answer;
    } catch (err) {
      if (err instanceof EsgzError) throw err;
      throw new EsgzError('REGISTRY', `${where}: answer is not JSON`, { cause: err });
    }
    const token = answer.token ?? answer.access_token;
    if (!token) throw new EsgzError('REGISTRY', `${where}: answer has no token`);
    // Spec default lifetime is 60 s; renew a little early so a token does not expire in flight.
    const lifetime = (answer.expires_in ?? 60) * 1000;
    return { token, expiresAt: Date.now() + Math.max(lifetime - 10_000, lifetime / 2) };
  }

  /** Why the credentials were not sent (for messages). */
  private withheldNote(): string {
    return `esgz sends credentials only over TLS or to the registry itself, not to the plain-HTTP token server ${this.withheldFrom ?? ''}`.trimEnd();
  }

  private loadCredentials(): Promise<Credentials | undefined> {
    if (this.options.credentials) return Promise.resolve(this.options.credentials);
    this.credentials ??= resolveCredentials(
      this.registry,
      this.options.dockerConfigDir !== undefined ? { dockerConfigDir: this.options.dockerConfigDir } : {},
    );
    return this.credentials;
  }

  /**
   * Picks the scheme once per client with a GET /v2/ (which also tells the auth scheme):
   * https unless plainHttp; a loopback registry that refuses TLS is retried over plain http.
   */
  private ensureBase(): Promise<URL> {
    this.baseUrl ??= this.ping().catch((err: unknown) => {
      this.baseUrl = undefined;
      throw err;
    });
    return this.baseUrl;
  }

  private async ping(): Promise<URL> {
    const candidates = this.schemeCandidates();
    let lastError: unknown;
    schemes: for (const scheme of candidates) {
      const base = new URL(`${scheme}://${this.apiHost}/`);
      for (let attempt = 1; attempt <= this.attempts; attempt += 1) {
        try {
          const ping = new URL(`${this.apiRoot}/`, base);
          const response = await this.request(ping, { method: 'GET', headers: { 'user-agent': this.userAgent } });
          if (response.statusCode === 401)
            this.learnChallenge(parseChallenges(response.headers['www-authenticate']), []);
          await response.body.dump();
          if (RETRYABLE_STATUS.has(response.statusCode) && attempt < this.attempts) {
            await sleep(this.backoff(attempt));
            continue;
          }
          return base;
        } catch (err) {
          lastError = err;
          const code = errorCode(err) ?? '';
          // plain http next, if allowed
          if (scheme === 'https' && isTlsRefusal(code) && !isClientCertificateRefusal(code)) continue schemes;
          if (attempt < this.attempts && RETRYABLE_NETWORK_CODES.has(code)) {
            await sleep(this.backoff(attempt));
            continue;
          }
          break schemes;
        }
      }
    }
    const code = errorCode(lastError) ?? '';
    const reason = `${describeNetworkError(lastError)}${this.tlsHint(code)}`;
    throw new EsgzError('NETWORK', `cannot reach registry ${this.registry}: ${reason}`, { cause: lastError });
  }

  /** What to try when the registry could not be reached over TLS. */
  private tlsHint(code: string): string {
    if (!this.schemeCandidates().includes('https')) return '';
    if (isTlsRefusal(code) && !isClientCertificateRefusal(code)) return ' (does it speak plain HTTP? try --plain-http)';
    if (isCertificateError(code)) return ' (to skip certificate verification: --insecure)';
    // A registry with clientcas ends the connection right after a handshake without a client certificate.
    const closed = isClientCertificateRefusal(code) || code === 'UND_ERR_SOCKET' || code === 'ECONNRESET';
    if (!this.options.tls?.cert?.length && closed) {
      return ' (does it require a client certificate? give one with --tlscert/--tlskey or "client" in hosts.toml)';
    }
    return '';
  }

  /** https unless told plain HTTP; a loopback registry named by nothing else tries https then http. */
  private schemeCandidates(): string[] {
    const host = this.options.host;
    if (host) return host.probeScheme ? ['https', 'http'] : [new URL(host.origin).protocol.slice(0, -1)];
    return this.options.plainHttp ? ['http'] : isLoopbackRegistry(this.registry) ? ['https', 'http'] : ['https'];
  }

  /** `/v2/...` targets under this host's API root (hosts.toml may move it), with `ns=` for a mirror. */
  private apiUrl(target: string, base: URL): URL {
    const path = target.startsWith('/v2/') ? `${this.apiRoot}${target.slice('/v2'.length)}` : target;
    const url = new URL(path, base);
    const namespace = this.options.namespace;
    if (namespace !== undefined && url.origin === base.origin) url.searchParams.set('ns', namespace);
    return url;
  }

  /** Every HTTP exchange goes through here, so `--http-trace` sees them all. */
  private async request(url: URL, options: HttpRequest): Promise<Dispatcher.ResponseData> {
    const trace = this.options.trace;
    const started = performance.now();
    const method = options.method as Dispatcher.HttpMethod;
    try {
      const response = await request(url, { ...options, method, dispatcher: this.agent });
      const answer = { status: response.statusCode, headers: response.headers };
      if (trace) traceExchange(trace, { ...options, url }, answer, performance.now() - started);
      return response;
    } catch (err) {
      const failure = { error: describeNetworkError(err) };
      if (trace) traceExchange(trace, { ...options, url }, failure, performance.now() - started);
      throw err;
    }
  }

  /** Turns an unexpected response into a one-line EsgzError naming registry, request and status. */
  private async failure(response: Response, method: string, what: string): Promise<EsgzError> {
    const text = response.body.destroyed
      ? ''
      : (await readCapped(response.body, 64 * 1024, what).catch(() => Buffer.alloc(0))).toString('utf8');
    const detail = registryErrorMessage(text);
    const request = `${method} ${response.url.pathname}`;
    const suffix = `${detail ? `: ${detail}` : ''}${response.attempts > 1 ? ` (after ${response.attempts} attempts)` : ''}`;
    switch (response.status) {
      case 404:
        return new EsgzError('NOT_FOUND', `${what}: not found (registry ${this.registry}, ${request})`);
      case 401: {
        const credentials = await this.loadCredentials().catch(() => undefined);
        const user = credentials?.username ? ` for user "${credentials.username}"` : '';
        let message: string;
        if (!credentials) {
          message = `requires authentication (or the repository does not exist) and no credentials were found`;
        } else if (this.withheldFrom !== undefined) {
          message = `did not grant anonymous access (${this.withheldNote()})`;
        } else if (this.authScheme === 'bearer') {
          // The token server accepted the credentials, so the token just lacks this scope.
          message = `did not grant access${user} (no permission, or the repository does not exist)`;
        } else {
          message = `refused the credentials${user}`;
        }
        return new EsgzError('UNAUTHORIZED', `${what}: registry ${this.registry} ${message} (${request})`);
      }
      case 403:
        return new EsgzError('DENIED', `${what}: registry ${this.registry} denied access (${request})${suffix}`);
      default:
        return new EsgzError(
          'REGISTRY',
          `${what}: registry ${this.registry} answered HTTP ${response.status} to ${request}${suffix}`,
        );
    }
  }
}

/**
 * Whether credentials (Basic, or a refresh token) may be sent to `target`: over TLS, or to the
 * registry's own origin, which is plain HTTP only when the user named it so (`--plain-http`) or
 * it is a loopback registry without TLS.
 */
function mayCarryCredentials(target: URL, registryBase: URL): boolean {
  return target.protocol === 'https:' || target.origin === registryBase.origin;
}

const PROXY_VARIABLES = ['https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'];
/** Loopback registries are never reached through a proxy (a proxy cannot reach our 127.0.0.1). */
const LOOPBACK_NO_PROXY = 'localhost,127.0.0.1,[::1]';

/**
 * One connection pool per registry; HTTP(S)_PROXY / NO_PROXY are honoured like docker does.
 * Header and body timeouts are idle timers (undici refreshes them as bytes move), so a long
 * upload or download on a slow link is fine as long as it keeps moving.
 */
function createDispatcher(verifyTls: boolean, tls: TlsMaterial, readTimeoutMs: number): Dispatcher {
  // Extra CAs join the system roots (containerd appends to the system pool), never replace them.
  const material = {
    ...(tls.ca?.length ? { ca: [...rootCertificates, ...tls.ca] } : {}),
    ...(tls.cert?.length ? { cert: tls.cert } : {}),
    ...(tls.key?.length ? { key: tls.key } : {}),
  };
  const options = {
    connect: { rejectUnauthorized: verifyTls, timeout: 30_000, ...material },
    headersTimeout: 60_000,
    bodyTimeout: readTimeoutMs,
    keepAliveTimeout: 10_000,
  };
  if (!PROXY_VARIABLES.some((name) => process.env[name])) return new Agent(options);
  const noProxy = process.env.no_proxy ?? process.env.NO_PROXY ?? '';
  return new EnvHttpProxyAgent({
    ...options,
    requestTls: { rejectUnauthorized: verifyTls, ...material },
    noProxy: noProxy.trim() === '*' ? '*' : [noProxy, LOOPBACK_NO_PROXY].filter((v) => v.trim() !== '').join(','),
  });
}

/** Marks an upload failure that a fresh attempt (new session, new source stream) may fix. */
class RetryableUpload extends Error {
  constructor(readonly error: EsgzError) {
    super(error.message);
  }
}

function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

function mergeScopes(scopes: string[], challenges: Challenge[]): string[] {
  const extra = challenges.flatMap((c) => (c.params.scope ?? '').split(' ')).filter((s) => s.length > 0);
  return [...new Set([...scopes, ...extra])].sort();
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function manifestMediaType(bytes: Buffer, contentType: string | undefined, what: string): string {
  const fromHeader = contentType?.split(';')[0]?.trim();
  if (isManifestMediaType(fromHeader) || isIndexMediaType(fromHeader)) return fromHeader!;
  let parsed: { mediaType?: unknown; schemaVersion?: unknown; manifests?: unknown; layers?: unknown };
  try {
    parsed = JSON.parse(bytes.toString('utf8')) as typeof parsed;
  } catch {
    throw new EsgzError('BAD_MANIFEST', `${what}: not JSON (Content-Type ${contentType ?? 'none'})`);
  }
  if (parsed.schemaVersion === 1)
    throw new EsgzError('UNSUPPORTED', `${what}: Docker schema 1 manifests are not supported`);
  if (
    typeof parsed.mediaType === 'string' &&
    (isManifestMediaType(parsed.mediaType) || isIndexMediaType(parsed.mediaType))
  )
    return parsed.mediaType;
  if (Array.isArray(parsed.manifests)) return MediaType.ociIndex;
  if (Array.isArray(parsed.layers)) return MediaType.ociManifest;
  throw new EsgzError('BAD_MANIFEST', `${what}: unknown manifest type (Content-Type ${contentType ?? 'none'})`);
}

/** Reads a whole (small) response body; a connection lost midway is a one-line "truncated" error. */
async function readCapped(body: AsyncIterable<Buffer | Uint8Array>, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body) {
      total += chunk.length;
      if (total > max) {
        (body as unknown as Readable).destroy?.();
        throw new EsgzError('SIZE_MISMATCH', `${what}: response larger than ${max} bytes`);
      }
      chunks.push(Buffer.from(chunk));
    }
  } catch (err) {
    if (err instanceof EsgzError) throw err;
    throw new TruncatedResponse(
      `${what}: truncated: connection lost after ${total} bytes (${describeNetworkError(err)})`,
      { cause: err },
    );
  }
  return Buffer.concat(chunks, total);
}

function registryErrorMessage(text: string): string {
  if (text === '') return '';
  try {
    const parsed = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const first = parsed.errors?.[0];
    if (first) return [first.code, first.message].filter(Boolean).join(' ');
  } catch {
    // not a registry error document
  }
  return firstLine(text).slice(0, 200);
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined;
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.cause?.code === 'string') return e.cause.code;
  return undefined;
}

function isTlsRefusal(code: string): boolean {
  return code.startsWith('ERR_SSL_') || code === 'EPROTO';
}

function isClientCertificateRefusal(code: string): boolean {
  return /CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|BAD_CERTIFICATE/.test(code);
}

function isCertificateError(code: string): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code);
}

function describeNetworkError(err: unknown): string {
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  const short = firstLine(message)
    .replace(/^\w+:error:[0-9A-F]+:SSL routines:([^:]+:)?/, '')
    .slice(0, 160);
  return code !== undefined && !short.includes(code) ? `${short} (${code})` : short;
}

/** Stops a response body nobody will read (an error listener first: undici reports the abort as one). */
function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

/** The body after its first `count` bytes, as a stream (the bytes before are dropped as they arrive). */
function skipBytes(body: Readable, count: number): Readable {
  let left = count;
  const rest = Readable.from(
    (async function* () {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        const from = Math.min(left, chunk.length);
        left -= from;
        if (from < chunk.length) yield chunk.subarray(from);
      }
    })(),
  );
  rest.on('close', () => discard(body));
  return rest;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
