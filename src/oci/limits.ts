// Bounds on the small JSON documents of an image, named once: every reader of a manifest, an
// index or a config stops at these, whatever the descriptor or the server claims.

/** The distribution spec: registries SHOULD accept manifests up to 4 MiB (and clients need no more). */
export const MAX_MANIFEST_BYTES = 4 << 20;
/** An OCI layout's index.json lists every tag of the layout: larger than one manifest may be. */
export const MAX_INDEX_JSON_BYTES = 64 << 20;
/** Image configs carry the history and environment; real ones stay well under this. */
export const MAX_CONFIG_BYTES = 64 << 20;
