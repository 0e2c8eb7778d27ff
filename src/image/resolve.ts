// The one image resolver: root → (index → the chosen platform manifests) → each child manifest →
// its config, bounded and digest-verified. `image copy/convert/optimize` (the transfer pipeline),
// `image verify`, `get-toc-digest`, `image rpull` and the optimizer's profile all resolve through
// here, so they agree on which manifests a platform selects, what an attestation is, and how
// much of a config they read.
import { EsgzError } from '../errors.js';
import { shortDigest, verifyBuffer } from '../oci/digest.js';
import { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES } from '../oci/limits.js';
import { isAttestationManifest, isIndexMediaType, isManifestMediaType } from '../oci/media-types.js';
import { formatPlatform, hostPlatform, platformMatches } from '../oci/platform.js';
import type { Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform, RawManifest } from '../oci/types.js';
import type { ImageSource } from './types.js';

/** Which manifests of an index to take (`--platform`, `--all-platforms`). */
export interface PlatformChoice {
  /** One platform (`--platform os/arch`). */
  platform?: Platform;
  /**
   * Several (`--platform a,b`): one gives that single manifest, as `platform` does; several give
   * every manifest matching any of them, in index order. Wins over `platform` when not empty.
   */
  platforms?: readonly Platform[];
  /** Every image manifest of the index. */
  allPlatforms?: boolean;
  /**
   * One platform picked from an index stays an index of that one entry, as containerd's
   * converter (convertIndex) writes it, instead of becoming that single manifest.
   */
  keepIndex?: boolean;
}

/** The root a reference names: an image manifest, or an index of them. */
export type ImageRoot = { kind: 'manifest'; raw: RawManifest } | { kind: 'index'; raw: RawManifest; index: ImageIndex };

/** One platform's image: its manifest and its config, both read and checked. */
export interface ResolvedImage {
  /** The index entry's platform (`linux/arm64`); unset for an image that is a single manifest. */
  platform?: string;
  raw: RawManifest;
  manifest: ImageManifest;
  manifestDigest: string;
  /** The config's exact bytes (digest-verified), for callers that store or copy it. */
  configBytes: Buffer;
  config: ImageConfig;
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${what}: not valid JSON`, { cause: err });
  }
}

/** The platforms asked for (`platforms`, else `platform`); undefined when none was (this machine's then). */
export function requestedPlatforms(choice: PlatformChoice): Platform[] | undefined {
  if (choice.platforms !== undefined && choice.platforms.length > 0) return [...choice.platforms];
  return choice.platform !== undefined ? [choice.platform] : undefined;
}

/** True when an index resolves to one manifest (the result is that manifest, not an index). */
export function choosesOneManifest(choice: PlatformChoice): boolean {
  return !choice.allPlatforms && (requestedPlatforms(choice) ?? [hostPlatform()]).length === 1;
}

/** Fetches the root, checks its digest and tells a manifest from an index. */
export async function fetchImageRoot(source: ImageSource): Promise<ImageRoot> {
  const raw = await source.fetchRoot();
  verifyBuffer(raw.bytes, { digest: raw.digest }, `${source.description} manifest`);
  let mediaType = raw.mediaType;
  // Every transport names the media type; a source that does not is judged by the document's shape.
  if (!mediaType) {
    const what = `${source.description} manifest ${raw.digest}`;
    const doc = parseJson<{ mediaType?: unknown; manifests?: unknown; layers?: unknown }>(raw.bytes, what);
    if (typeof doc.mediaType === 'string') mediaType = doc.mediaType;
    else if (Array.isArray(doc.manifests)) mediaType = 'index';
    else if (Array.isArray(doc.layers)) mediaType = 'manifest';
  }
  if (isIndexMediaType(mediaType) || mediaType === 'index') {
    const index = parseJson<ImageIndex>(raw.bytes, `${source.description} index ${raw.digest}`);
    if (!Array.isArray(index?.manifests)) {
      throw new EsgzError('BAD_MANIFEST', `${source.description} index ${raw.digest}: no "manifests" array`);
    }
    return { kind: 'index', raw, index };
  }
  if (isManifestMediaType(mediaType) || mediaType === 'manifest') return { kind: 'manifest', raw };
  const what = `${source.description}: media type "${mediaType}"`;
  throw new EsgzError('UNSUPPORTED', `${what} is not an image manifest or index`);
}

/**
 * The entries of `index` that `choice` selects, in index order. One wanted platform (this
 * machine's by default) gives its first match; several give every manifest matching any of them;
 * `allPlatforms` every entry. Attestations (isAttestationManifest) are never chosen for a
 * platform, and with `allPlatforms` are kept only when `keepAttestations` says so (a byte-exact
 * copy keeps them). Throws NOT_FOUND naming each wanted platform the index does not have and the
 * platforms it has.
 */
export function choosePlatformManifests(
  index: ImageIndex,
  choice: PlatformChoice,
  description: string,
  options: { keepAttestations?: boolean } = {},
): Descriptor[] {
  if (choice.allPlatforms) {
    const entries = index.manifests.filter((m) => options.keepAttestations || !isAttestationManifest(m));
    const nested = entries.find((m) => !isManifestMediaType(m.mediaType));
    if (nested) {
      const what = `${description}: index entry ${nested.digest} has media type "${nested.mediaType}"`;
      throw new EsgzError('UNSUPPORTED', `${what} (nested indexes are not supported)`);
    }
    return entries;
  }
  const wanted = requestedPlatforms(choice) ?? [hostPlatform()];
  const images = index.manifests.filter((m) => m.platform !== undefined && !isAttestationManifest(m));
  const candidates = images.filter((m) => isManifestMediaType(m.mediaType));
  const missing = wanted.filter((w) => !candidates.some((m) => platformMatches(w, m.platform!)));
  if (missing.length > 0) {
    const names = missing.map(formatPlatform).join(', ');
    const available = images.map((m) => formatPlatform(m.platform!)).join(', ') || 'none';
    throw new EsgzError('NOT_FOUND', `${description}: no manifest for ${names} in the index (available: ${available})`);
  }
  if (wanted.length === 1) return [candidates.find((m) => platformMatches(wanted[0]!, m.platform!))!];
  return candidates.filter((m) => wanted.some((w) => platformMatches(w, m.platform!)));
}

/** Fetches the manifest an index entry names, checked against the entry's size and digest. */
export async function fetchChildManifest(source: ImageSource, desc: Descriptor): Promise<RawManifest> {
  const what = `${source.description} manifest ${desc.digest}`;
  if (desc.size > MAX_MANIFEST_BYTES) {
    const limit = `larger than ${MAX_MANIFEST_BYTES} bytes`;
    throw new EsgzError('BAD_MANIFEST', `${what}: the index says ${desc.size} bytes, ${limit}`);
  }
  const raw = await source.fetchManifest(desc);
  if (raw.digest !== desc.digest) {
    const returned = `the source returned ${raw.digest}`;
    throw new EsgzError('DIGEST_MISMATCH', `${source.description}: index names ${desc.digest}, ${returned}`);
  }
  verifyBuffer(raw.bytes, desc, what);
  return raw;
}

/** Parses an image manifest and checks it has a config and well-formed layer descriptors. */
export function parseImageManifest(raw: RawManifest, where: string): ImageManifest {
  const manifest = parseJson<ImageManifest>(raw.bytes, where);
  const shaped = manifest !== null && typeof manifest === 'object' && typeof manifest.config?.digest === 'string';
  if (!shaped || !Array.isArray(manifest.layers)) {
    throw new EsgzError('BAD_MANIFEST', `${where}: not an image manifest (no config or layers)`);
  }
  for (const [i, layer] of manifest.layers.entries()) {
    if (typeof layer?.digest !== 'string' || typeof layer.size !== 'number' || typeof layer.mediaType !== 'string') {
      throw new EsgzError('BAD_MANIFEST', `${where}: layer ${i + 1} has no digest, size or mediaType`);
    }
  }
  return manifest;
}

/**
 * Reads a small blob whole: at most `limit` bytes whatever the descriptor or the source claims
 * (a hostile descriptor cannot exhaust memory), verified against the descriptor's size and digest.
 */
export async function readSmallBlob(
  source: ImageSource,
  desc: Descriptor,
  limit: number,
  what: string,
  tooLarge: (size: number) => EsgzError,
): Promise<Buffer> {
  if (desc.size > limit) throw tooLarge(desc.size);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of await source.openBlob(desc)) {
    total += (chunk as Buffer).length;
    if (total > limit) throw tooLarge(total);
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  verifyBuffer(bytes, desc, what);
  return bytes;
}

/** Reads a manifest's config (bounded by MAX_CONFIG_BYTES, digest-verified) and parses it. */
export async function readImageConfig(
  source: ImageSource,
  manifest: ImageManifest,
  where: string,
): Promise<{ bytes: Buffer; config: ImageConfig }> {
  const desc = manifest.config;
  const what = `${where} config ${shortDigest(desc.digest)}`;
  const tooLarge = (size: number): EsgzError =>
    new EsgzError('BAD_MANIFEST', `${what}: ${size} bytes is too large for an image config`);
  const bytes = await readSmallBlob(source, desc, MAX_CONFIG_BYTES, what, tooLarge);
  let config: ImageConfig;
  try {
    config = JSON.parse(bytes.toString('utf8')) as ImageConfig;
  } catch (err) {
    throw new EsgzError('BAD_MANIFEST', `${where}: config ${desc.digest} is not valid JSON`, { cause: err });
  }
  if (config === null || typeof config !== 'object') {
    throw new EsgzError('BAD_MANIFEST', `${where}: config ${desc.digest} is not a JSON object`);
  }
  return { bytes, config };
}

/** Where a manifest is, for messages: `SOURCE (PLATFORM) manifest DIGEST`. */
export function manifestWhere(source: ImageSource, raw: RawManifest, platform: Platform | undefined): string {
  const label = platform !== undefined ? ` (${formatPlatform(platform)})` : '';
  return `${source.description}${label} manifest ${shortDigest(raw.digest)}`;
}

/** Reads the manifest `raw` (the root, or an index entry's child) and its config. */
export async function resolveManifest(
  source: ImageSource,
  raw: RawManifest,
  platform?: Platform,
): Promise<ResolvedImage> {
  const where = manifestWhere(source, raw, platform);
  const manifest = parseImageManifest(raw, where);
  const { bytes, config } = await readImageConfig(source, manifest, where);
  return {
    ...(platform !== undefined ? { platform: formatPlatform(platform) } : {}),
    raw,
    manifest,
    manifestDigest: raw.digest,
    configBytes: bytes,
    config,
  };
}

/**
 * The images `choice` selects from `source`: the root itself when it is a manifest, else the
 * index entries choosePlatformManifests picks (attestations left out), each with its config.
 */
export async function resolveImages(source: ImageSource, choice: PlatformChoice = {}): Promise<ResolvedImage[]> {
  const root = await fetchImageRoot(source);
  if (root.kind === 'manifest') return [await resolveManifest(source, root.raw)];
  const images: ResolvedImage[] = [];
  for (const desc of choosePlatformManifests(root.index, choice, source.description)) {
    images.push(await resolveManifest(source, await fetchChildManifest(source, desc), desc.platform));
  }
  return images;
}
