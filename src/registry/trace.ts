/**
 * `--http-trace` and `--http-dump`: one line per request (method, URL, status, time), and with
 * dump the request and response headers too. Secrets never reach the output: Authorization and
 * cookie headers, and query parameters that carry signatures, tokens or credentials (presigned
 * storage URLs, token-server grants), are masked. Bodies are never written: a token server's
 * answer is a token.
 */
export interface HttpTraceOptions {
  /** Also write request and response headers. */
  dump?: boolean;
  write(line: string): void;
}

export const MASK = '***';
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-registry-auth']);
const SECRET_QUERY = /sig|signature|token|credential|secret|password|passwd|key|auth|session|code/i;

export function maskUrl(url: URL | string): string {
  const masked = new URL(url.toString());
  if (masked.username || masked.password) {
    masked.username = MASK;
    masked.password = '';
  }
  for (const name of [...new Set(masked.searchParams.keys())]) {
    if (SECRET_QUERY.test(name)) masked.searchParams.set(name, MASK);
  }
  // URLSearchParams encodes the mask; keep it readable.
  return masked.toString().replaceAll(encodeURIComponent(MASK), MASK);
}

export function maskHeaders(headers: Record<string, string | string[] | undefined>): string[] {
  return Object.entries(headers)
    .filter((entry): entry is [string, string | string[]] => entry[1] !== undefined)
    .flatMap(([name, value]) =>
      (Array.isArray(value) ? value : [value]).map((v) => `${name}: ${maskHeaderValue(name, v)}`),
    );
}

function maskHeaderValue(name: string, value: string): string {
  const lower = name.toLowerCase();
  if (SECRET_HEADERS.has(lower)) {
    // Keep the scheme (Basic / Bearer) for debugging; the credential is never shown.
    const scheme = /^(\w+)\s/.exec(value)?.[1];
    return scheme !== undefined && lower.endsWith('authorization') ? `${scheme} ${MASK}` : MASK;
  }
  // Redirects to presigned storage carry the signature in Location.
  if (lower === 'location' || lower === 'content-location') {
    try {
      return maskUrl(new URL(value, 'http://relative.invalid')).replace(/^http:\/\/relative\.invalid/, '');
    } catch {
      return MASK;
    }
  }
  return value;
}

/** Writes one exchange as trace (and dump) lines. */
export function traceExchange(
  trace: HttpTraceOptions,
  request: { method: string; url: URL | string; headers: Record<string, string | string[] | undefined> },
  response: { status: number; headers: Record<string, string | string[] | undefined> } | { error: string },
  elapsedMs: number,
): void {
  const outcome = 'status' in response ? `HTTP ${response.status}` : `failed: ${response.error}`;
  trace.write(`esgz http: ${request.method} ${maskUrl(request.url)} -> ${outcome} (${Math.round(elapsedMs)} ms)`);
  if (!trace.dump) return;
  for (const line of maskHeaders(request.headers)) trace.write(`esgz http: > ${line}`);
  if ('status' in response) for (const line of maskHeaders(response.headers)) trace.write(`esgz http: < ${line}`);
}
