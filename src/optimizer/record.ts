import { readFile, rename, writeFile } from 'node:fs/promises';
import { EsgzError } from '../errors.js';
import { cleanImagePath } from '../runtime/root-path.js';

/**
 * One line of ctr-remote's record file (`optimize --record-out`, read by
 * `convert --estargz-record-in`): a stream of JSON objects, one per line, in access order.
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
    .map((e) => JSON.stringify({ path: e.path, ...(e.manifestDigest ? { manifestDigest: e.manifestDigest } : {}), ...(e.layerIndex !== undefined ? { layerIndex: e.layerIndex } : {}) }))
    .map((line) => `${line}\n`)
    .join('');
  const temp = `${file}.tmp-${process.pid}`;
  await writeFile(temp, body);
  await rename(temp, file);
}

/** Reads a record file: one JSON object per line (also accepts objects separated by any whitespace). */
export async function readRecordFile(file: string): Promise<RecordEntry[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new EsgzError('NOT_FOUND', `record file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { cause: err });
  }
  const entries: RecordEntry[] = [];
  for (const { value, line } of jsonValues(text, file)) {
    const v = value as Partial<Record<keyof RecordEntry, unknown>> | null;
    if (!v || typeof v !== 'object' || typeof v.path !== 'string') {
      throw new EsgzError('BAD_FORMAT', `record file ${file}:${line}: expected {"path": …}`);
    }
    if (v.layerIndex !== undefined && (!Number.isInteger(v.layerIndex) || (v.layerIndex as number) < 0)) {
      throw new EsgzError('BAD_FORMAT', `record file ${file}:${line}: layerIndex must be a non-negative integer`);
    }
    const path = cleanImagePath(v.path);
    if (path === null || path === '') throw new EsgzError('BAD_FORMAT', `record file ${file}:${line}: path "${v.path}" is not inside the image`);
    entries.push({
      path,
      ...(typeof v.manifestDigest === 'string' ? { manifestDigest: v.manifestDigest } : {}),
      ...(v.layerIndex !== undefined ? { layerIndex: v.layerIndex as number } : {}),
    });
  }
  return entries;
}

/** Splits concatenated JSON values (Go's json.Decoder stream) and reports each one's line. */
function* jsonValues(text: string, file: string): Generator<{ value: unknown; line: number }> {
  let i = 0;
  let line = 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '\n') line++;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c !== '{') throw new EsgzError('BAD_FORMAT', `record file ${file}:${line}: expected a JSON object`);
    const start = i;
    const startLine = line;
    let depth = 0;
    let inString = false;
    for (; i < text.length; i++) {
      const ch = text[i]!;
      if (ch === '\n') line++;
      if (inString) {
        if (ch === '\\') i++;
        else if (ch === '"') inString = false;
      } else if (ch === '"') inString = true;
      else if (ch === '{') depth++;
      else if (ch === '}' && --depth === 0) break;
    }
    if (depth !== 0) throw new EsgzError('BAD_FORMAT', `record file ${file}:${startLine}: unterminated JSON object`);
    i++;
    try {
      yield { value: JSON.parse(text.slice(start, i)), line: startLine };
    } catch (err) {
      throw new EsgzError('BAD_FORMAT', `record file ${file}:${startLine}: ${(err as Error).message}`, { cause: err });
    }
  }
}
