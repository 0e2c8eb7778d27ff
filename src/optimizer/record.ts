import { rename, writeFile } from 'node:fs/promises';

/**
 * One line of ctr-remote's record file (`optimize --record-out`, read by
 * `convert --estargz-record-in` through estargz/priority.ts): a stream of JSON objects, one per
 * line, in access order.
 */
export interface RecordEntry {
  /** Image path without a leading slash, e.g. `bin/busybox`. */
  path: string;
  /** The platform manifest the trace was taken from. */
  manifestDigest?: string;
  /** Index in the manifest's layers of the topmost layer that provides `path`. */
  layerIndex?: number;
}

/** Writes the record file (temp name, then rename: never half-written). */
export async function writeRecordFile(file: string, entries: RecordEntry[]): Promise<void> {
  const body = entries
    .map((e) =>
      JSON.stringify({
        path: e.path,
        ...(e.manifestDigest ? { manifestDigest: e.manifestDigest } : {}),
        ...(e.layerIndex !== undefined ? { layerIndex: e.layerIndex } : {}),
      }),
    )
    .map((line) => `${line}\n`)
    .join('');
  const temp = `${file}.tmp-${process.pid}`;
  await writeFile(temp, body);
  await rename(temp, file);
}
