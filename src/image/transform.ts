import type { Readable, Writable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';

/** One source layer handed to a transform. */
export interface LayerInput {
  /** The layer's descriptor in the source manifest. */
  descriptor: Descriptor;
  /** The layer's diffID from the source config (sha256 of the uncompressed tar), when known. */
  diffID: string | undefined;
  /** A fresh, digest-verified stream of the stored blob bytes (compressed as stored). */
  open(): Promise<Readable>;
  /** Position of the layer in the manifest (0 = base). */
  index: number;
}

/** What a transform learned while writing its output. The pipeline hashes the bytes itself. */
export interface LayerOutput {
  mediaType: string;
  /** Annotations for the output descriptor (e.g. the TOC digest). */
  annotations: Record<string, string>;
  /** sha256 of the uncompressed tar the output decompresses to. */
  diffID: string;
  /** Facts for the report (`--json`): TOC digest, entry counts, backend, etc. */
  report?: Record<string, unknown>;
}

export interface TransformContext {
  signal: AbortSignal;
  /** Called with the number of input bytes consumed so far, for progress bars. */
  onInputProgress?(bytes: number): void;
}

/**
 * A per-layer rewrite: reads the source layer, writes the new blob to `output`, reports its
 * media type, annotations and diffID. Returns 'unchanged' to keep the source layer as it is
 * (identity copy, `--reuse` of a layer that already has the target format).
 */
export interface LayerTransform {
  readonly name: string;
  transform(input: LayerInput, output: Writable, context: TransformContext): Promise<LayerOutput | 'unchanged'>;
  /** Called once the image's manifest is known, to veto or warn (e.g. `--estargz` on Docker media types). */
  checkManifestMediaType?(mediaType: string, warn: (message: string) => void): void;
  /** Called when the transfer starts, before the source is read: time to start worker threads. */
  prepare?(): void;
}

export const identityTransform: LayerTransform = {
  name: 'identity',
  async transform() {
    return 'unchanged';
  },
};
