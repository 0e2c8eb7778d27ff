/**
 * What a Range answer may look like on real registries, and how esgz reads the bytes it asked
 * for out of it without trusting the server: a 206 whose Content-Range covers the request is
 * trimmed to it, one that does not is refused, and a 200 with the whole blob (ECR, some CDNs) is
 * read as a stream, skipping to the range and stopping after it, so a blob is never buffered.
 */
import { EsgzError } from '../errors.js';

/** A response body that ended early (connection lost, stalled, or short); SIZE_MISMATCH to callers, retried. */
export class TruncatedResponse extends EsgzError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('SIZE_MISMATCH', message, options);
  }
}

/** `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`). */
export interface ContentRange {
  start: number;
  end: number;
  total: number | undefined;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

export function parseContentRange(value: string | undefined): ContentRange | undefined {
  const m = value === undefined ? null : CONTENT_RANGE.exec(value.trim());
  if (!m) return undefined;
  const [start, end] = [Number(m[1]), Number(m[2])];
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return undefined;
  return { start, end, total: m[3] === '*' ? undefined : Number(m[3]) };
}

/** The blob size a `bytes=0-0` answer tells: Content-Range's total on a 206, Content-Length on a 200. */
export function sizeFromProbe(status: number, contentRange: string | undefined, contentLength: string | undefined) {
  if (status === 206) return parseContentRange(contentRange)?.total;
  const length = Number(contentLength);
  return status === 200 && Number.isSafeInteger(length) && length >= 0 ? length : undefined;
}

/**
 * Where the asked bytes start in a 206 body, or an error when the server's range does not hold
 * them (or describes another blob): a 206 is trusted only as far as its Content-Range says.
 */
export function offsetInPartial(
  contentRange: string | undefined,
  asked: { offset: number; length: number; blobSize: number },
  what: string,
): number {
  if (contentRange === undefined) return 0; // a bare 206 must hold exactly the range: readSlice checks its length
  const got = parseContentRange(contentRange);
  const lastAsked = asked.offset + asked.length - 1;
  if (got === undefined)
    throw new EsgzError('REGISTRY', `${what}: the registry answered an unreadable Content-Range "${contentRange}"`);
  if (got.total !== undefined && got.total !== asked.blobSize)
    throw new EsgzError(
      'SIZE_MISMATCH',
      `${what}: the registry's Content-Range "${contentRange}" is for a ${got.total}-byte blob, not ${asked.blobSize}`,
    );
  if (got.start > asked.offset || got.end < lastAsked)
    throw new EsgzError(
      'REGISTRY',
      `${what}: the registry answered range "${contentRange}", which does not hold bytes ${asked.offset}-${lastAsked}`,
    );
  return asked.offset - got.start;
}

/**
 * Reads `length` bytes after skipping `skip` from a response body, handing each piece to `sink`
 * as it arrives (so a caller can resume after what it already has), then stops the body: the
 * rest of a whole-blob answer is never downloaded. A body that ends or fails first is a
 * TruncatedResponse.
 */
export async function readSlice(
  body: AsyncIterable<Buffer> & { destroy(): unknown; on(event: 'error', listener: () => void): unknown },
  skip: number,
  length: number,
  sink: (piece: Buffer) => void,
  what: string,
): Promise<void> {
  let position = 0;
  const end = skip + length;
  try {
    for await (const chunk of body) {
      const from = Math.max(skip - position, 0);
      const to = Math.min(end - position, chunk.length);
      position += chunk.length;
      if (to > from) sink(chunk.subarray(from, to));
      if (position >= end) return;
    }
  } catch (err) {
    throw new TruncatedResponse(`${what}: truncated: connection lost after ${position} bytes (${describe(err)})`, {
      cause: err,
    });
  } finally {
    // The rest of the body is not wanted; undici reports that abort as an error nobody needs.
    body.on('error', () => {});
    body.destroy();
  }
  throw new TruncatedResponse(`${what}: truncated: got ${Math.max(position - skip, 0)} of ${length} bytes`);
}

function describe(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  return typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
}

/** `Retry-After`: delay-seconds or an HTTP-date; undefined when absent or unreadable. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return seconds >= 0 ? seconds * 1000 : undefined;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(at - now, 0);
}

/** One byte range of a blob. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** Multi-range answers the server may refuse that way (GCR 400, some CDNs 416, GHCR's CDN 501). */
export const MULTI_RANGE_REFUSED_STATUS = new Set([400, 416, 501]);

/** `Range: bytes=a-b,c-d,...` for `ranges`. */
export function multiRangeHeader(ranges: ByteRange[]): string {
  return `bytes=${ranges.map((r) => `${r.offset}-${r.offset + r.length - 1}`).join(',')}`;
}

/**
 * The asked ranges out of a `multipart/byteranges` body (RFC 9110 14.6): each part's
 * Content-Range is checked like a single answer's, and its bytes are taken by that length, not
 * by searching for the boundary (the data may contain it). A range no part holds is an error.
 */
export function splitByteranges(
  body: Buffer,
  contentType: string | undefined,
  ranges: ByteRange[],
  blobSize: number,
  what: string,
): Buffer[] {
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType ?? '')?.[1];
  if (boundary === undefined || !/^multipart\/byteranges/i.test(contentType ?? ''))
    throw new EsgzError('REGISTRY', `${what}: a multi-range answer that is not multipart/byteranges (${contentType})`);
  const parts: Array<{ start: number; data: Buffer }> = [];
  const delimiter = Buffer.from(`--${boundary}`);
  for (let at = body.indexOf(delimiter); at >= 0;) {
    const headerStart = at + delimiter.length;
    if (body.subarray(headerStart, headerStart + 2).toString() === '--') break; // the closing delimiter
    const headerEnd = body.indexOf('\r\n\r\n', headerStart);
    if (headerEnd < 0) break;
    const headers = body.subarray(headerStart, headerEnd).toString('latin1');
    const range = parseContentRange(/content-range:\s*([^\r\n]+)/i.exec(headers)?.[1]);
    if (range === undefined || (range.total !== undefined && range.total !== blobSize))
      throw new EsgzError('REGISTRY', `${what}: a multipart part without a Content-Range for this blob`);
    const dataStart = headerEnd + 4;
    const data = body.subarray(dataStart, dataStart + range.end - range.start + 1);
    if (data.length !== range.end - range.start + 1)
      throw new TruncatedResponse(`${what}: truncated multipart answer (part ${range.start}-${range.end})`);
    parts.push({ start: range.start, data });
    at = body.indexOf(delimiter, dataStart + data.length);
  }
  return ranges.map((r) => {
    const part = parts.find((p) => p.start <= r.offset && p.start + p.data.length >= r.offset + r.length);
    if (part === undefined)
      throw new EsgzError('REGISTRY', `${what}: no part of the multi-range answer holds bytes ${r.offset}+${r.length}`);
    return part.data.subarray(r.offset - part.start, r.offset - part.start + r.length);
  });
}
