// What --http-trace / --http-dump may print: secrets in headers, URLs and redirects are masked.
import { describe, expect, it } from 'vitest';
import { maskHeaders, maskUrl, traceExchange } from '../../src/registry/trace.js';

describe('http trace masking', () => {
  it('masks signed and token query parameters and URL credentials, keeps the rest', () => {
    const url =
      'https://u:p@s3.example/blob?X-Amz-Signature=abc123&X-Amz-Credential=AKIA&X-Amz-Date=20260101&sig=zz&access_token=t0k&ns=docker.io&digest=sha256:1';
    const masked = maskUrl(url);
    for (const secret of ['abc123', 'AKIA', 'zz', 't0k', ':p@']) expect(masked).not.toContain(secret);
    expect(masked).toContain('X-Amz-Date=20260101');
    expect(masked).toContain('ns=docker.io');
    expect(masked).toContain('X-Amz-Signature=***');
  });

  it('masks Authorization (keeping the scheme), cookies and signed Location headers', () => {
    const lines = maskHeaders({
      authorization: 'Bearer eyJhbGciOi.secret.sig',
      'proxy-authorization': 'Basic YWxpY2U6cHc=',
      'set-cookie': ['session=s3cr3t'],
      location: '/v2/r/blobs/uploads/1?_state=x&Signature=deadbeef',
      'content-type': 'application/json',
    });
    expect(lines).toEqual([
      'authorization: Bearer ***',
      'proxy-authorization: Basic ***',
      'set-cookie: ***',
      'location: /v2/r/blobs/uploads/1?_state=x&Signature=***',
      'content-type: application/json',
    ]);
  });

  it('writes one line per exchange, headers only with dump', () => {
    const lines: string[] = [];
    const request = { method: 'GET', url: 'https://r.example/v2/?token=abc', headers: { authorization: 'Basic eA==' } };
    traceExchange({ write: (l) => lines.push(l) }, request, { status: 200, headers: {} }, 12.4);
    expect(lines).toEqual(['esgz http: GET https://r.example/v2/?token=*** -> HTTP 200 (12 ms)']);
    traceExchange({ dump: true, write: (l) => lines.push(l) }, request, { error: 'connection refused' }, 1);
    expect(lines.slice(1)).toEqual([
      'esgz http: GET https://r.example/v2/?token=*** -> failed: connection refused (1 ms)',
      'esgz http: > authorization: Basic ***',
    ]);
  });
});
