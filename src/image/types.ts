import type { Readable } from 'node:stream';
import type { Descriptor, RawManifest } from '../oci/types.js';

/**
 * Where images come from. Every read is digest-verified by the implementation:
 * `fetchManifest` before it returns, `openBlob` while streaming (the stream errors at the end
 * on a mismatch or short read, so a consumer never sees a silently wrong blob).
 */
export interface ImageSource {
  /** Human-readable location for messages, e.g. `oci:/tmp/x:latest`. */
  readonly description: string;
  /**
   * Where the blobs live, for sources in a registry: the transfer passes it to a registry sink as
   * `mountFrom`, which then mounts a blob across repositories instead of copying it.
   */
  readonly location?: BlobLocation;
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
  putBlob(
    desc: Descriptor,
    open: () => Promise<Readable> | Readable,
    hints?: { mountFrom?: BlobLocation },
  ): Promise<void>;
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
