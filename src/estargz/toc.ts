import { createHash } from 'node:crypto';
import { EsgzError } from '../errors.js';

/** The TOC model shared by eStargz and zstd:chunked (stargz-snapshotter's JTOC / TOCEntry). */

export type TOCEntryType = 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'chunk';

export interface TOCEntry {
  name: string;
  type: TOCEntryType;
  size?: number;
  /** RFC 3339 modification time, as stargz writes it. */
  modtime?: string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  userName?: string;
  groupName?: string;
  /** Offset in the blob of the compressed member (gzip) or frame (zstd) holding this payload. */
  offset?: number;
  /** Offset of the payload inside the decompressed member (several payloads in one member). */
  innerOffset?: number;
  devMajor?: number;
  devMinor?: number;
  /** xattr values, base64-encoded. */
  xattrs?: Record<string, string>;
  /** sha256 of the whole file payload (regular files). */
  digest?: string;
  /** Offset of this chunk within the file (chunk entries and the first chunk of a reg). */
  chunkOffset?: number;
  /** Length of this chunk; 0 or absent on the last one means "to the end of the file". */
  chunkSize?: number;
  /** sha256 of this chunk's uncompressed bytes. */
  chunkDigest?: string;
}

export interface JTOC {
  version: number;
  entries: TOCEntry[];
}

// ---- JSON encoding ---------------------------------------------------------------------------

/** TOC entry fields in the order stargz-snapshotter's Go struct declares them (JSON key order). */
const ENTRY_FIELDS: ReadonlyArray<keyof TOCEntry> = [
  'name', 'type', 'size', 'modtime', 'linkName', 'mode', 'uid', 'gid', 'userName', 'groupName',
  'offset', 'devMajor', 'devMinor', 'xattrs', 'digest', 'chunkOffset', 'chunkSize', 'chunkDigest', 'innerOffset',
];

/**
 * Go's encoding/json string escaping (HTML-safe: <, >, & and U+2028/U+2029 escaped), so the TOC
 * bytes look like what stargz-snapshotter writes.
 */
function goQuote(value: string): string {
  let out = '"';
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (code < 0x20 || ch === '<' || ch === '>' || ch === '&' || code === 0x2028 || code === 0x2029) {
      out += `\\u${code.toString(16).padStart(4, '0')}`;
    } else out += ch;
  }
  return `${out}"`;
}

/** True when the field is Go's zero value, which `omitempty` drops. */
function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null || value === 0 || value === '') return true;
  if (typeof value === 'object' && Object.keys(value as object).length === 0) return true;
  return false;
}

/**
 * Serialises a TOC exactly like Go's `json.MarshalIndent(toc, "", "\t")` on stargz's JTOC:
 * key order of the struct, zero values omitted, xattr keys sorted. These bytes are what the TOC
 * digest covers; every codec must use this function.
 */
export function marshalTOC(toc: JTOC): Buffer {
  const lines: string[] = ['{', `\t"version": ${toc.version},`];
  if (toc.entries.length === 0) {
    lines.push('\t"entries": []');
  } else {
    lines.push('\t"entries": [');
    toc.entries.forEach((entry, i) => {
      lines.push('\t\t{');
      const fields: string[] = [];
      for (const key of ENTRY_FIELDS) {
        const value = entry[key];
        if (key === 'name' || key === 'type') {
          fields.push(`\t\t\t"${key}": ${goQuote(String(value ?? ''))}`);
          continue;
        }
        if (isEmpty(value)) continue;
        if (key === 'xattrs') {
          const xattrs = value as Record<string, string>;
          const inner = Object.keys(xattrs)
            .sort()
            .map((k) => `\t\t\t\t${goQuote(k)}: ${goQuote(xattrs[k]!)}`);
          fields.push(`\t\t\t"xattrs": {\n${inner.join(',\n')}\n\t\t\t}`);
        } else if (typeof value === 'number') {
          fields.push(`\t\t\t"${key}": ${value}`);
        } else {
          fields.push(`\t\t\t"${key}": ${goQuote(String(value))}`);
        }
      }
      lines.push(fields.join(',\n'));
      lines.push(i === toc.entries.length - 1 ? '\t\t}' : '\t\t},');
    });
    lines.push('\t]');
  }
  lines.push('}');
  return Buffer.from(lines.join('\n'), 'utf8');
}

export function sha256Digest(data: Buffer | Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

const ENTRY_TYPES: ReadonlySet<string> = new Set(['dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk']);
const NUMERIC_FIELDS = ['size', 'mode', 'uid', 'gid', 'offset', 'innerOffset', 'devMajor', 'devMinor', 'chunkOffset', 'chunkSize'] as const;
const STRING_FIELDS = ['modtime', 'linkName', 'userName', 'groupName', 'digest', 'chunkDigest'] as const;

/**
 * Parses and validates TOC JSON bytes. `where` names the blob in error messages.
 * Unknown fields are ignored (newer writers may add some), wrong types are errors.
 */
export function parseTOCJSON(json: Buffer, where: string): JTOC {
  let doc: unknown;
  try {
    doc = JSON.parse(json.toString('utf8'));
  } catch (err) {
    throw new EsgzError('BAD_FORMAT', `${where}: TOC is not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as JTOC).entries)) {
    throw new EsgzError('BAD_FORMAT', `${where}: TOC has no "entries" array`);
  }
  const version = (doc as JTOC).version;
  if (typeof version !== 'number') throw new EsgzError('BAD_FORMAT', `${where}: TOC has no numeric "version"`);
  const entries = (doc as JTOC).entries;
  entries.forEach((e, i) => {
    const at = `${where}: TOC entry ${i}`;
    if (typeof e !== 'object' || e === null) throw new EsgzError('BAD_FORMAT', `${at} is not an object`);
    if (typeof e.name !== 'string') throw new EsgzError('BAD_FORMAT', `${at} has no "name"`);
    if (typeof e.type !== 'string' || !ENTRY_TYPES.has(e.type)) {
      throw new EsgzError('BAD_FORMAT', `${at} (${e.name}) has unknown type ${JSON.stringify(e.type)}`);
    }
    for (const f of NUMERIC_FIELDS) {
      const v = e[f];
      if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) {
        throw new EsgzError('BAD_FORMAT', `${at} (${e.name}) has invalid "${f}": ${JSON.stringify(v)}`);
      }
    }
    for (const f of STRING_FIELDS) {
      const v = e[f];
      if (v !== undefined && typeof v !== 'string') {
        throw new EsgzError('BAD_FORMAT', `${at} (${e.name}) has invalid "${f}": ${JSON.stringify(v)}`);
      }
    }
  });
  return doc as JTOC;
}

/** stargz's cleanEntryName: path.Clean("/"+name) without the leading slash ("./a/" → "a"). */
export function cleanEntryName(name: string): string {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts.join('/');
}

/** stargz's formatModtime: RFC 3339 in UTC, whole seconds; the epoch and zero time are omitted. */
export function formatModtime(date: Date | undefined): string | undefined {
  if (!date || Number.isNaN(date.getTime())) return undefined;
  const seconds = Math.round(date.getTime() / 1000);
  if (seconds === 0) return undefined;
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
