/**
 * A tiny Bearer token server for distribution's `auth.token` mode (the Docker Hub flow):
 * GET /token?service=S&scope=repository:NAME:pull,push with optional Basic credentials answers
 * `{ token, access_token, expires_in }`. Tokens are RS256 JWTs carrying their self-signed
 * certificate in `x5c`; the registry trusts that certificate through `rootcertbundle`.
 */
import { createSign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { execa } from 'execa';

export interface TokenServerOptions {
  /** Directory for the key and certificate. */
  dir: string;
  /** username -> password; a request with other credentials gets 401. */
  users: Record<string, string>;
  /** Give anonymous requests pull access (like public repositories on Docker Hub). */
  anonymousPull?: boolean;
  /** Users whose tokens only ever grant pull (read-only accounts). */
  pullOnlyUsers?: string[];
  service?: string;
  /** Token lifetime in seconds. */
  expiresIn?: number;
  /** OAuth refresh tokens (docker's identity tokens) -> username, for POST grant_type=refresh_token. */
  refreshTokens?: Record<string, string>;
}

export interface TokenRequestRecord {
  method: string;
  user: string | undefined;
  scopes: string[];
  status: number;
}

export interface TokenServer {
  /** The URL the registry names as `realm`. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate the registry uses as `rootcertbundle`. */
  certPath: string;
  /** Every token request so far (tests check that tokens are cached per scope). */
  requests: TokenRequestRecord[];
  close(): Promise<void>;
}

const ISSUER = 'esgz-test-token-issuer';

export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const keyPath = path.join(options.dir, 'token-key.pem');
  const certPath = path.join(options.dir, 'token-cert.pem');
  await execa('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-sha256',
    '-days',
    '2',
    '-subj',
    '/CN=esgz-test-token-issuer',
    '-keyout',
    keyPath,
    '-out',
    certPath,
  ]);
  const key = await readFile(keyPath, 'utf8');
  const certDer = new X509Certificate(await readFile(certPath)).raw.toString('base64');
  const service = options.service ?? 'esgz-test-registry';
  const expiresIn = options.expiresIn ?? 300;
  const requests: TokenRequestRecord[] = [];

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://token');
    let params = url.searchParams;
    let user = basicUser(req.headers.authorization);
    if (req.method === 'POST') {
      // OAuth2 form post: a refresh token stands in for the user's credentials.
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      const name =
        params.get('grant_type') === 'refresh_token'
          ? options.refreshTokens?.[params.get('refresh_token') ?? '']
          : undefined;
      user =
        name !== undefined
          ? { name, password: options.users[name] ?? '' }
          : { name: '(bad refresh token)', password: '\0' };
    }
    const scopes = params
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .filter((s) => s.length > 0);
    const record: TokenRequestRecord = { method: req.method ?? 'GET', user: user?.name, scopes, status: 200 };
    requests.push(record);
    const reply = (status: number, body: unknown): void => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    if (url.pathname !== '/token') return reply(404, { error: 'not found' });
    if (params.get('service') !== service) return reply(400, { error: 'wrong service' });
    if (user !== undefined && options.users[user.name] !== user.password)
      return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });

    const access = scopes.flatMap((scope) => {
      const [type, name, actions] = splitScope(scope);
      if (type !== 'repository' || name === undefined) return [];
      const requested = (actions ?? '').split(',').filter((a) => a.length > 0);
      const pullOnly =
        user === undefined ? options.anonymousPull === true : options.pullOnlyUsers?.includes(user.name) === true;
      const granted =
        user === undefined && !pullOnly ? [] : pullOnly ? requested.filter((a) => a === 'pull') : requested;
      return granted.length > 0 ? [{ type, name, actions: granted }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(
      { alg: 'RS256', typ: 'JWT', x5c: [certDer] },
      {
        iss: ISSUER,
        sub: user?.name ?? '',
        aud: service,
        exp: now + expiresIn,
        nbf: now - 10,
        iat: now,
        jti: `${now}-${requests.length}`,
        access,
      },
      key,
    );
    reply(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer: ISSUER,
    certPath,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** `repository:a/b:pull,push` -> type, name, actions (names may not contain ':' except a port, which repositories never have). */
function splitScope(scope: string): [string, string | undefined, string | undefined] {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return [scope, undefined, undefined];
  return [scope.slice(0, first), scope.slice(first + 1, last), scope.slice(last + 1)];
}

function basicUser(header: string | undefined): { name: string; password: string } | undefined {
  if (header === undefined || !header.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0
    ? { name: decoded, password: '' }
    : { name: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function signJwt(header: object, claims: object, privateKeyPem: string): string {
  const encode = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signingInput = `${encode(header)}.${encode(claims)}`;
  const signature = createSign('RSA-SHA256').update(signingInput).sign(privateKeyPem).toString('base64url');
  return `${signingInput}.${signature}`;
}
