/**
 * Prioritized-file lists: ctr-remote's record files (`--estargz-record-in`, JSON objects with a
 * "path" as written by `ctr-remote image optimize --record-out`) and esgz's `--prefetch-list`
 * (one path or glob per line, `#` comments). Globs: `*` and `?` stay within one path component,
 * `[...]` is a character class (`[!...]` negated), `**` crosses directories.
 */
import { readFile } from 'node:fs/promises';
import { EsgzError } from '../errors.js';
import { cleanEntryName } from './toc.js';

/** A glob from a prefetch list, matched against cleaned entry names. */
export class GlobPattern {
  readonly regex: RegExp;
  constructor(readonly pattern: string) {
    this.regex = globToRegExp(cleanEntryName(pattern), pattern);
  }
  matches(name: string): boolean {
    return this.regex.test(cleanEntryName(name));
  }
  toString(): string {
    return this.pattern;
  }
}

/** A prioritized file: a literal path, or a glob expanded against the layer's entries in layer order. */
export type PriorityItem = string | GlobPattern;

export function isGlob(text: string): boolean {
  return /[*?[]/.test(text);
}

function globToRegExp(glob: string, original: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '*') {
      if (glob[i + 1] === '*') {
        const atStart = i === 0 || glob[i - 1] === '/';
        i++;
        if (atStart && glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?'; // "**/" matches zero or more directories
        } else {
          re += '.*';
        }
      } else {
        re += '[^/]*';
      }
    } else if (ch === '?') {
      re += '[^/]';
    } else if (ch === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close === -1)
        throw new EsgzError('BAD_FLAG', `prefetch pattern ${JSON.stringify(original)}: unterminated "["`);
      let body = glob.slice(i + 1, close);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      body = body.replace(/[\\\]^]/g, '\\$&');
      re += negate ? `[^/${body}]` : `[${body}]`;
      i = close;
    } else {
      re += ch.replace(/[.+^${}()|\\/]/g, '\\$&');
    }
  }
  // A directory pattern also selects what is below it only through an explicit "/**".
  return new RegExp(`^${re}$`);
}

/** Parses `--prefetch-list` text: one path or glob per line; blank lines and `#` comments ignored. */
export function parsePrefetchList(text: string, where = 'prefetch list'): PriorityItem[] {
  const items: PriorityItem[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    if (line.split('/').includes('..'))
      throw new EsgzError('BAD_FLAG', `${where}:${i + 1}: ".." is not allowed in ${JSON.stringify(line)}`);
    items.push(isGlob(line) ? new GlobPattern(line) : line);
  });
  return items;
}

export async function readPrefetchList(path: string): Promise<PriorityItem[]> {
  const text = await readFile(path, 'utf8').catch((err: Error) => {
    throw new EsgzError('NOT_FOUND', `cannot read prefetch list ${path}: ${err.message}`, { cause: err });
  });
  return parsePrefetchList(text, path);
}

/**
 * Parses a ctr-remote record file: a stream of JSON objects (usually one per line) each with a
 * "path"; returns the unique paths in first-seen order, like ctr-remote's readPathsFromRecordFile.
 */
export function parseRecordFile(text: string, where = 'record file'): string[] {
  const paths: string[] = [];
  const seen = new Set<string>();
  for (const doc of splitJSONValues(text, where)) {
    let value: unknown;
    try {
      value = JSON.parse(doc.text);
    } catch (err) {
      throw new EsgzError('BAD_FLAG', `${where}: invalid JSON at byte ${doc.start}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new EsgzError('BAD_FLAG', `${where}: record at byte ${doc.start} is not an object`);
    }
    const path = (value as { path?: unknown }).path;
    if (path === undefined) continue;
    if (typeof path !== 'string')
      throw new EsgzError('BAD_FLAG', `${where}: record at byte ${doc.start} has a non-string "path"`);
    if (!seen.has(path)) {
      seen.add(path);
      paths.push(path);
    }
  }
  return paths;
}

export async function readRecordFile(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch((err: Error) => {
    throw new EsgzError('NOT_FOUND', `cannot read record file ${path}: ${err.message}`, { cause: err });
  });
  return parseRecordFile(text, path);
}

/** Splits concatenated top-level JSON values (what Go's json.Decoder reads in a loop). */
function splitJSONValues(text: string, where: string): Array<{ text: string; start: number }> {
  const out: Array<{ text: string; start: number }> = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      inString = true;
      if (depth === 0)
        throw new EsgzError('BAD_FLAG', `${where}: unexpected string at byte ${i} (records must be JSON objects)`);
    } else if (ch === '{' || ch === '[') {
      if (depth === 0) start = i;
      depth++;
    } else if (ch === '}' || ch === ']') {
      depth--;
      if (depth < 0) throw new EsgzError('BAD_FLAG', `${where}: unbalanced "${ch}" at byte ${i}`);
      if (depth === 0) out.push({ text: text.slice(start, i + 1), start });
    } else if (depth === 0 && !/\s/.test(ch)) {
      throw new EsgzError(
        'BAD_FLAG',
        `${where}: unexpected ${JSON.stringify(ch)} at byte ${i} (records must be JSON objects)`,
      );
    }
  }
  if (depth !== 0 || inString) throw new EsgzError('BAD_FLAG', `${where}: truncated JSON record at byte ${start}`);
  return out;
}

/**
 * Expands priority items against the layer's entry names (in layer order): literals stay as they
 * are, each glob becomes the names it matches. Globs that match nothing are reported in `unmatched`.
 */
export function expandPriorities(items: PriorityItem[], names: string[], unmatched: string[] = []): string[] {
  const out: string[] = [];
  for (const item of items) {
    if (typeof item === 'string') {
      out.push(item);
      continue;
    }
    const before = out.length;
    for (const name of names) if (item.matches(name)) out.push(name);
    if (out.length === before) unmatched.push(item.pattern);
  }
  return out;
}
