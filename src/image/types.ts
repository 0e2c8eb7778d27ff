import type { Readable } from 'node:stream';

/** An OCI content descriptor (image-spec descriptor.md). */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
  artifactType?: string;
}

/** image-spec image-index.md platform object. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** image-spec config.md, the parts esgz reads or rewrites; everything else passes through. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  config?: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    Labels?: Record<string, string>;
    [key: string]: unknown;
  };
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: Array<{ created?: string; created_by?: string; empty_layer?: boolean; comment?: string; author?: string }>;
  [key: string]: unknown;
}

/** A manifest or index exactly as stored: the bytes are what the digest covers. */
export interface RawManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

/**
 * Where images come from. Every read is digest-verified by the implementation:
 * `fetchManifest` before it returns, `openBlob` while streaming (the stream errors at the end
 * on a mismatch or short read, so a consumer never sees a silently wrong blob).
 */
export interface ImageSource {
  /** Human-readable location for messages, e.g. `oci:/tmp/x:latest`. */
  readonly description: string;
  /** The manifest or index the reference names. */
  fetchRoot(): Promise<RawManifest>;
  /** A child manifest or index by descriptor (from an index). */
  fetchManifest(desc: Descriptor): Promise<RawManifest>;
  /** Streams a blob; verifies size and digest as it goes. */
  openBlob(desc: Descriptor): Promise<Readable>;
  /** Reads `length` bytes at `offset` of a blob (Range request for registries). Not digest-verified: callers verify what they read (TOC digest, chunk digests). */
  readBlobRange(desc: Descriptor, offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * Where images go. Blobs first, then child manifests, then the root last, so an interrupted
 * copy never leaves a tag pointing at missing content. `commit` makes the result visible
 * (index.json, manifest.json, the tag); `abort` removes whatever is half-written.
 */
export interface ImageSink {
  readonly description: string;
  /** True when the destination already holds this blob (the copy can skip it). */
  hasBlob(desc: Descriptor): Promise<boolean>;
  /**
   * Stores a blob whose digest and size are known. `open` may be called more than once (retries),
   * each call returning a fresh stream of the same bytes. `mountFrom` lets a registry sink try a
   * cross-repository mount when the source is the same registry.
   */
  putBlob(desc: Descriptor, open: () => Promise<Readable> | Readable, hints?: { mountFrom?: BlobLocation }): Promise<void>;
  /**
   * Optional: stores a blob from a local file the caller wrote and hashed itself (`desc` was
   * computed from those very bytes), taking the file over (a rename) instead of copying it.
   * Resolves false when it cannot (another filesystem): the caller then uses `putBlob`.
   */
  adoptBlobFile?(desc: Descriptor, path: string): Promise<boolean>;
  /** Stores a manifest or index by digest (not tagged). */
  putManifest(manifest: RawManifest): Promise<void>;
  /** Makes `root` the image the destination reference names (tag, index.json entry, manifest.json). */
  commit(root: RawManifest): Promise<void>;
  /** Removes anything half-written; safe to call after a failed put or commit. */
  abort(): Promise<void>;
}

/** Where a blob lives in a registry, used for cross-repository mounts. */
export interface BlobLocation {
  registry: string;
  repository: string;
}
