/**
 * `esgz registry probe`: asks a registry what lazy pulling depends on (Range, multi-range, HEAD,
 * redirects to storage and how long their URLs live, and with `push` chunked uploads and
 * cross-repository mounts) and says what esgz will do there. The answers come from the same
 * client code that pulls, so the report is what a pull will meet, and the host behaviour it
 * records is the one the client acts on.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { EsgzError } from '../errors.js';
import { digestOf } from '../oci/digest.js';
import { isAttestationManifest, isIndexMediaType, MediaType } from '../oci/media-types.js';
import type { Descriptor, ImageIndex, ImageManifest } from '../oci/types.js';
import { RegistryClient, type RegistryClientOptions } from './client.js';
import { parseReference } from './reference.js';

export interface ProbeOptions extends Omit<RegistryClientOptions, 'host' | 'namespace'> {
  /** Also check chunked upload and cross-repository mount (writes a small blob to REPO and mounts it into REPO-esgz-probe). */
  push?: boolean;
}

export type Support = 'yes' | 'no' | 'not checked';

export interface ProbeReport {
  registry: string;
  endpoint: string;
  auth: 'none' | 'basic' | 'bearer';
  repository?: string;
  /** The blob the read checks used (the largest layer of REPO's image). */
  blob?: { digest: string; size: number };
  head?: Support;
  range?: 'yes' | 'ignored (200 with the whole blob)' | 'other bytes than asked (trimmed)';
  multiRange?: Support;
  redirect?: { redirected: boolean; host?: string; lifetimeSeconds?: number };
  chunkedUpload: Support;
  crossRepoMount: Support;
  /** What esgz does on this registry, one line per behaviour. */
  plan: string[];
}

/** Probes `target` (`HOST` or `HOST/REPO[:TAG|@DIGEST]`). */
export async function probeRegistry(target: string, options: ProbeOptions = {}): Promise<ProbeReport> {
  const slash = target.indexOf('/');
  const registry = slash < 0 ? target : target.slice(0, slash);
  const { push, ...clientOptions } = options;
  const client = new RegistryClient(registry, clientOptions);
  try {
    const { url, auth } = await client.endpoint();
    const report: ProbeReport = {
      registry,
      endpoint: url,
      auth,
      chunkedUpload: 'not checked',
      crossRepoMount: 'not checked',
      plan: [],
    };
    if (slash >= 0) await probeRepository(client, parseReference(target), report, push ? clientOptions : undefined);
    report.plan = planFor(report);
    return report;
  } finally {
    await client.close();
  }
}

async function probeRepository(
  client: RegistryClient,
  ref: ReturnType<typeof parseReference>,
  report: ProbeReport,
  push: RegistryClientOptions | undefined,
): Promise<void> {
  const repository = ref.repository;
  report.repository = repository;
  const layer = await largestLayer(client, repository, ref.digest ?? ref.tag ?? 'latest');
  report.blob = { digest: layer.digest, size: layer.size };
  const behaviour = client.behaviour;

  await client.headBlob(repository, layer.digest);
  report.head = behaviour.headRefused ? 'no' : 'yes';
  await client.readBlobRange(repository, layer, 1, Math.min(1024, layer.size - 1));
  report.range = behaviour.rangeIgnored
    ? 'ignored (200 with the whole blob)'
    : behaviour.rangeMismatched
      ? 'other bytes than asked (trimmed)'
      : 'yes';
  if (!behaviour.rangeIgnored) {
    await client.readBlobRanges(repository, layer, [
      { offset: 0, length: 1 },
      { offset: layer.size - 1, length: 1 },
    ]);
    report.multiRange = behaviour.multiRangeRefused ? 'no' : 'yes';
  }
  const location = await client.blobLocation(repository, layer.digest);
  report.redirect = { redirected: location !== undefined };
  if (location !== undefined) {
    report.redirect.host = location.host;
    const lifetime = signedUrlLifetime(location);
    if (lifetime !== undefined) report.redirect.lifetimeSeconds = lifetime;
  }
  if (push) await probePush(client, push, repository, report);
}

/** The largest layer of the image (a platform's manifest when the reference names an index). */
async function largestLayer(client: RegistryClient, repository: string, reference: string): Promise<Descriptor> {
  let manifest = await client.getManifest(repository, reference);
  if (isIndexMediaType(manifest.mediaType)) {
    const index = JSON.parse(manifest.bytes.toString('utf8')) as ImageIndex;
    const child = index.manifests.find((m) => !isAttestationManifest(m));
    if (!child) throw new EsgzError('NOT_FOUND', `${client.registry}/${repository}:${reference}: an empty index`);
    manifest = await client.getManifest(repository, child.digest);
  }
  const layers = (JSON.parse(manifest.bytes.toString('utf8')) as ImageManifest).layers ?? [];
  const largest = [...layers].sort((a, b) => b.size - a.size)[0];
  if (largest === undefined || largest.size < 2)
    throw new EsgzError('UNSUPPORTED', `${client.registry}/${repository}:${reference} has no layer to read ranges of`);
  return largest;
}

/** A fresh 1 KiB blob pushed in PATCH chunks, then mounted into a second repository. */
async function probePush(
  client: RegistryClient,
  options: RegistryClientOptions,
  repository: string,
  report: ProbeReport,
): Promise<void> {
  const bytes = randomBytes(1024);
  const desc = { mediaType: MediaType.ociLayerGzip, digest: digestOf(bytes), size: bytes.length };
  const chunked = new RegistryClient(client.registry, { ...options, monolithicUploadMax: 0 });
  try {
    await chunked.uploadBlob(repository, desc, () => Readable.from([bytes]));
    report.chunkedUpload = 'yes';
    const mounted = await client.uploadBlob(`${repository}-esgz-probe`, desc, () => Readable.from([bytes]), {
      mountFrom: repository,
    });
    report.crossRepoMount = mounted === 'mounted' ? 'yes' : 'no';
  } catch (err) {
    if (!(err instanceof EsgzError)) throw err;
    if (report.chunkedUpload === 'not checked') report.chunkedUpload = 'no';
    else report.crossRepoMount = 'no';
  } finally {
    await chunked.close();
  }
}

/** What a signed storage URL says about its lifetime (S3, GCS, Azure, CloudFront), in seconds. */
export function signedUrlLifetime(url: URL, now = Date.now()): number | undefined {
  const q = url.searchParams;
  const seconds = q.get('X-Amz-Expires') ?? q.get('X-Goog-Expires');
  if (seconds !== null && Number.isFinite(Number(seconds))) return Number(seconds);
  const until = q.get('Expires') ?? q.get('expires');
  if (until !== null && Number.isFinite(Number(until))) return Math.round(Number(until) - now / 1000);
  const azure = q.get('se');
  if (azure !== null && !Number.isNaN(Date.parse(azure))) return Math.round((Date.parse(azure) - now) / 1000);
  return undefined;
}

function planFor(report: ProbeReport): string[] {
  if (report.repository === undefined) return ['name a repository (HOST/REPO) to check what lazy pulls need'];
  const plan: string[] = [];
  if (report.range === 'yes') plan.push('lazy pull: footer, TOC and chunks by Range requests');
  else if (report.range?.startsWith('ignored'))
    plan.push('lazy pull: each range is cut out of the whole-blob stream and the rest dropped (slow on large layers)');
  else plan.push('lazy pull: ranges answered with other bytes are trimmed to what was asked, or refused');
  if (report.multiRange === 'no') plan.push('multi-range refused: one request per range (remembered for the process)');
  if (report.head === 'no') plan.push('HEAD refused: sizes and existence by a bytes=0-0 GET');
  if (report.redirect?.redirected)
    plan.push(
      'blob redirects: followed without credentials; each location reused until storage refuses it, then renewed from the registry',
    );
  if (report.chunkedUpload === 'no') plan.push('chunked upload refused: pushes fail for blobs over 32 MiB');
  if (report.crossRepoMount === 'no') plan.push('no cross-repository mount: shared layers are uploaded again');
  return plan;
}
