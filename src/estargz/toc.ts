import { createHash } from 'node:crypto';
import { EsgzError } from '../errors.js';
import { MAX_TOC_ENTRIES } from './constants.js';

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
  /** containers/storage's TOC v1: sha256 of the compressed tar-split frame (zstd:chunked containers dialect). */
  tarSplitDigest?: string;
}

// ---- JSON encoding ---------------------------------------------------------------------------

/** Characters Go's encoding/json escapes (HTML-safe: <, >, & and U+2028/U+2029 too). */
const NEEDS_ESCAPE = /["\\\u0000-\u001f<>&\u2028\u2029]/;

/**
 * Go's encoding/json string escaping, so the TOC bytes look like what stargz-snapshotter
 * writes. Almost every name needs none: those are copied whole.
 */
export function goQuote(value: string): string {
  if (!NEEDS_ESCAPE.test(value)) return `"${value}"`;
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

/** A `"key": value` line of an entry, with the comma that ends the previous line. */
const field = (key: string, text: string): string => `,\n\t\t\t"${key}": ${text}`;

/**
 * One entry as `json.MarshalIndent` writes it inside the entries array (no trailing comma):
 * fields in the order stargz-snapshotter's TOCEntry struct declares them, zero values omitted
 * (`omitempty`). Spelled out field by field: this runs for every entry of every layer, between
 * the last member and the end of the blob, where nothing else runs in parallel.
 */
function marshalEntry(e: TOCEntry): string {
  let out = `\t\t{\n\t\t\t"name": ${goQuote(e.name ?? '')}${field('type', goQuote(e.type ?? ''))}`;
  if (e.size) out += field('size', String(e.size));
  if (e.modtime) out += field('modtime', goQuote(e.modtime));
  if (e.linkName) out += field('linkName', goQuote(e.linkName));
  if (e.mode) out += field('mode', String(e.mode));
  if (e.uid) out += field('uid', String(e.uid));
  if (e.gid) out += field('gid', String(e.gid));
  if (e.userName) out += field('userName', goQuote(e.userName));
  if (e.groupName) out += field('groupName', goQuote(e.groupName));
  if (e.offset) out += field('offset', String(e.offset));
  if (e.devMajor) out += field('devMajor', String(e.devMajor));
  if (e.devMinor) out += field('devMinor', String(e.devMinor));
  if (e.xattrs) {
    const keys = Object.keys(e.xattrs).sort();
    if (keys.length > 0)
      out += field(
        'xattrs',
        `{\n${keys.map((k) => `\t\t\t\t${goQuote(k)}: ${goQuote(e.xattrs![k]!)}`).join(',\n')}\n\t\t\t}`,
      );
  }
  if (e.digest) out += field('digest', goQuote(e.digest));
  if (e.chunkOffset) out += field('chunkOffset', String(e.chunkOffset));
  if (e.chunkSize) out += field('chunkSize', String(e.chunkSize));
  if (e.chunkDigest) out += field('chunkDigest', goQuote(e.chunkDigest));
  if (e.innerOffset) out += field('innerOffset', String(e.innerOffset));
  return `${out}\n\t\t}`;
}

/**
 * Serialises a TOC exactly like Go's `json.MarshalIndent(toc, "", "\t")` on stargz's JTOC:
 * key order of the struct, zero values omitted, xattr keys sorted. These bytes are what the TOC
 * digest covers; every codec must use this function.
 */
export function marshalTOC(toc: JTOC): Buffer {
  // containers/storage's TOC struct declares tarSplitDigest after the entries (omitempty).
  const tail = toc.tarSplitDigest ? `,\n\t"tarSplitDigest": ${goQuote(toc.tarSplitDigest)}\n}` : '\n}';
  if (toc.entries.length === 0) return Buffer.from(`{\n\t"version": ${toc.version},\n\t"entries": []${tail}`, 'utf8');
  // Encoded a few hundred entries at a time: one multi-megabyte string would be built, then
  // flattened and copied again.
  const parts: Buffer[] = [Buffer.from(`{\n\t"version": ${toc.version},\n\t"entries": [\n`, 'utf8')];
  let text = '';
  toc.entries.forEach((entry, i) => {
    text += i === 0 ? marshalEntry(entry) : `,\n${marshalEntry(entry)}`;
    if (text.length >= MARSHAL_PIECE) {
      parts.push(Buffer.from(text, 'utf8'));
      text = '';
    }
  });
  parts.push(Buffer.from(`${text}\n\t]${tail}`, 'utf8'));
  return Buffer.concat(parts);
}

/** Characters of TOC JSON encoded at once by `marshalTOC`. */
const MARSHAL_PIECE = 64 * 1024;

export function sha256Digest(data: Buffer | Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

const ENTRY_TYPES: ReadonlySet<string> = new Set([
  'dir',
  'reg',
  'symlink',
  'hardlink',
  'char',
  'block',
  'fifo',
  'chunk',
]);
const NUMERIC_FIELDS = [
  'size',
  'mode',
  'uid',
  'gid',
  'offset',
  'innerOffset',
  'devMajor',
  'devMinor',
  'chunkOffset',
  'chunkSize',
] as const;
const STRING_FIELDS = ['modtime', 'linkName', 'userName', 'groupName', 'digest', 'chunkDigest'] as const;

/**
 * Parses and validates TOC JSON bytes. `where` names the blob in error messages.
 * Unknown fields are ignored (newer writers may add some), wrong types are errors.
 */
export function parseTOCJSON(json: Buffer, where: string): JTOC {
  // Counted before parsing: parsed entries are what costs memory (~250 bytes each). Every entry
  // is a JSON object, so it has a "{" that no escape can hide; "{" inside strings only over-count.
  let objects = 0;
  for (let at = json.indexOf(0x7b); at !== -1; at = json.indexOf(0x7b, at + 1)) {
    if (++objects > MAX_TOC_ENTRIES + 1)
      throw new EsgzError('BAD_FORMAT', `${where}: TOC has more than ${MAX_TOC_ENTRIES} entries (the most esgz reads)`);
  }
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

/** An empty, "." or ".." segment: what path.Clean changes. */
const NEEDS_CLEANING = /(^|\/)(\.{1,2})?(\/|$)/;

/** stargz's cleanEntryName: path.Clean("/"+name) without the leading slash ("./a/" → "a"). */
export function cleanEntryName(name: string): string {
  // Most names are clean already: no empty, "." or ".." segment.
  if (!NEEDS_CLEANING.test(name)) return name;
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts.join('/');
}

/**
 * Whether a tar or TOC name climbs above the layer root ("../x", "a/../../x"). Every esgz command
 * refuses such a name; any other is re-rooted: a leading "/" and "." / ".." that stay inside are
 * cleaned away (cleanEntryName), as containerd's archive.Apply and stargz's reader do.
 */
export function climbsAboveRoot(name: string): boolean {
  if (!name.includes('..')) return false;
  let depth = 0;
  for (const part of name.split('/')) {
    if (part === '..') {
      if (--depth < 0) return true;
    } else if (part !== '' && part !== '.') depth++;
  }
  return false;
}

/** The last modtime formatModtime formatted. */
let lastModtime = { seconds: NaN, text: '' };

/**
 * stargz's formatModtime: RFC 3339 in UTC, rounded to whole seconds (halfway up, as Go's
 * Time.Round); omitted when the time's whole seconds (Go's t.Unix(), floored) are 0, so a time
 * in [0, 1) s is omitted and one in (-1, 0) s is written as the epoch. Times before 1970 and
 * past 2038 are written like any other.
 */
export function formatModtime(date: Date | undefined): string | undefined {
  if (!date || Number.isNaN(date.getTime())) return undefined;
  if (Math.floor(date.getTime() / 1000) === 0) return undefined;
  const seconds = Math.round(date.getTime() / 1000);
  // Files of a layer mostly share a few timestamps (one per package build): reuse the last one.
  if (seconds !== lastModtime.seconds)
    lastModtime = { seconds, text: new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') };
  return lastModtime.text;
}
