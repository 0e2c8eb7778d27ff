/**
 * A proxy (real TCP) in front of a real registry that behaves like the registries esgz meets in
 * the wild, one behaviour (or several) chosen per test with `set`:
 *
 *   const proxy = await startQuirkProxy(registryAddress());
 *   proxy.set({ multiRange: 400 });          // GCR: a multi-range Range is refused (400/416/501)
 *   proxy.set({ ignoreRange: true });        // ECR: Range answered 200 with the whole blob
 *   proxy.set({ refuseHead: true });         // ghcr.io: HEAD on a blob answered 403
 *   proxy.set({ shiftRange: -100 });         // 206 starting 100 bytes early (> 0: 100 bytes late, disjoint)
 *   proxy.set({ redirect: { maxUses: 2, expiredStatus: 403 } }); // 307 to signed, expiring storage URLs
 *   proxy.set({ throttle: { status: 429, retryAfterSeconds: 1, every: 2 } });
 *   proxy.set({ resetMidBody: { every: 2 } }); // half the body, then the connection is reset
 *   proxy.set({ stallMidBody: { every: 2 } }); // half the body, then silence (the connection stays open)
 *   proxy.set({ bytesPerSecond: 2_000_000 });  // a slow link shared by every response
 *   proxy.count({ method: 'GET', path: '/blobs/' }); proxy.storage.count(...)
 *
 * Only blob requests (`/blobs/sha256:`) of the registry API get the quirks; manifests and uploads
 * pass through. `every: N` affects the 1st, (N+1)th, ... matching GET, so retries can succeed.
 * The storage listener plays object storage: it serves a blob for a signed URL the proxy issued
 * and refuses it once it has been used `maxUses` times or is `maxAgeMs` old.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Quirks {
  multiRange?: 400 | 416 | 501;
  ignoreRange?: boolean;
  refuseHead?: boolean;
  shiftRange?: number;
  redirect?: { maxUses?: number; maxAgeMs?: number; expiredStatus?: 400 | 403 | 410 };
  throttle?: { status: 429 | 503; retryAfterSeconds: number; every: number };
  resetMidBody?: { every: number };
  stallMidBody?: { every: number };
  bytesPerSecond?: number;
}

export interface QuirkLogEntry {
  method: string;
  path: string;
  range: string | undefined;
  status: number;
  bytes: number;
  authorization: boolean;
}

export interface QuirkListener {
  readonly address: string;
  readonly log: QuirkLogEntry[];
  count(match?: { method?: string; path?: string; status?: number }): number;
}

export interface QuirkProxy extends QuirkListener {
  /** The object-storage listener blob GETs are redirected to with `redirect`. */
  readonly storage: QuirkListener;
  set(quirks: Quirks): void;
  clearLog(): void;
  close(): Promise<void>;
}

interface SignedUrl {
  upstreamPath: string;
  uses: number;
  issuedAt: number;
}

const BLOB_PATH = /\/blobs\/sha256:[0-9a-f]{64}/;

export async function startQuirkProxy(upstream: string): Promise<QuirkProxy> {
  const [upstreamHost, upstreamPort] = splitHostPort(upstream);
  const agent = new http.Agent({ keepAlive: true });
  let quirks: Quirks = {};
  let blobGets = 0;
  let linkFreeAt = 0;
  const signed = new Map<string, SignedUrl>();
  const stalled = new Set<http.ServerResponse>();

  const throttle = async (length: number): Promise<void> => {
    if (quirks.bytesPerSecond === undefined) return;
    const now = Date.now();
    linkFreeAt = Math.max(now, linkFreeAt) + (length / quirks.bytesPerSecond) * 1000;
    if (linkFreeAt - now > 1) await new Promise((resolve) => setTimeout(resolve, linkFreeAt - now));
  };
  const hits = (rule: { every: number } | undefined, n: number): boolean =>
    rule !== undefined && (n - 1) % rule.every === 0;

  /** Forwards to the registry; the body goes through the link (throttle) and the mid-body faults. */
  const forward = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    entry: QuirkLogEntry,
    options: { path?: string; headers?: http.OutgoingHttpHeaders; cut?: 'reset' | 'stall' } = {},
  ): void => {
    const upstreamReq = http.request(
      {
        host: upstreamHost,
        port: upstreamPort,
        method: req.method,
        path: options.path ?? req.url,
        headers: options.headers ?? req.headers,
        agent,
      },
      (upstreamRes) => {
        entry.status = upstreamRes.statusCode ?? 502;
        res.writeHead(entry.status, upstreamRes.statusMessage, upstreamRes.rawHeaders);
        const length = Number(upstreamRes.headers['content-length'] ?? NaN);
        const cutAt = options.cut && length > 1 ? Math.floor(length / 2) : undefined;
        void pump(upstreamRes, res, entry, cutAt, options.cut);
      },
    );
    upstreamReq.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.socket?.destroy();
    });
    req.pipe(upstreamReq);
  };

  const pump = async (
    from: http.IncomingMessage,
    res: http.ServerResponse,
    entry: QuirkLogEntry,
    cutAt: number | undefined,
    cut: 'reset' | 'stall' | undefined,
  ): Promise<void> => {
    try {
      for await (const piece of from as AsyncIterable<Buffer>) {
        for (let i = 0; i < piece.length; i += 16384) {
          let chunk = piece.subarray(i, i + 16384);
          if (cutAt !== undefined && entry.bytes + chunk.length >= cutAt)
            chunk = chunk.subarray(0, cutAt - entry.bytes);
          await throttle(chunk.length);
          entry.bytes += chunk.length;
          if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
          if (cutAt !== undefined && entry.bytes >= cutAt) {
            from.destroy();
            if (cut === 'reset') res.socket?.destroy();
            else stalled.add(res); // silence, connection open: only the client's read timeout ends it
            return;
          }
        }
      }
      res.end();
    } catch {
      res.socket?.destroy();
    }
  };

  const refuse = (
    res: http.ServerResponse,
    entry: QuirkLogEntry,
    status: number,
    extra: http.OutgoingHttpHeaders = {},
  ) => {
    const body = JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: `quirk: HTTP ${status}` }] });
    entry.status = status;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
    res.end(body);
  };

  const proxy = await listen((req, res, entry) => {
    const blob = BLOB_PATH.test(entry.path);
    if (!blob) return forward(req, res, entry);
    if (req.method === 'HEAD' && quirks.refuseHead) return refuse(res, entry, 403);
    if (req.method !== 'GET') return forward(req, res, entry);
    blobGets += 1;
    const n = blobGets;
    if (quirks.throttle && hits(quirks.throttle, n)) {
      return refuse(res, entry, quirks.throttle.status, { 'retry-after': String(quirks.throttle.retryAfterSeconds) });
    }
    if (quirks.multiRange && entry.range?.includes(',')) return refuse(res, entry, quirks.multiRange);
    if (quirks.redirect) {
      const token = randomBytes(12).toString('hex');
      signed.set(token, { upstreamPath: req.url!, uses: 0, issuedAt: Date.now() });
      entry.status = 307;
      const location = `http://${storage.address}/storage/${token}?X-Amz-Expires=60&X-Amz-Signature=${token}`;
      res.writeHead(307, { location, 'content-length': 0 }).end();
      return;
    }
    return forward(req, res, entry, shaped(req, n));
  });

  /** The request as the quirks rewrite it: Range dropped or shifted, mid-body faults chosen. */
  const shaped = (req: http.IncomingMessage, n: number) => {
    const headers = { ...req.headers };
    const options: { headers: http.OutgoingHttpHeaders; cut?: 'reset' | 'stall' } = { headers };
    if (quirks.ignoreRange) delete headers.range;
    const asked = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (quirks.shiftRange && asked) {
      // Earlier: a superset of the asked bytes (trimmable). Later: other bytes (to be refused).
      const start = Math.max(Number(asked[1]) + quirks.shiftRange, 0);
      const end = Number(asked[2]) + Math.max(quirks.shiftRange, 0);
      headers.range = `bytes=${start}-${end}`;
    }
    if (hits(quirks.resetMidBody, n)) options.cut = 'reset';
    if (hits(quirks.stallMidBody, n)) options.cut = 'stall';
    return options;
  };

  const storage = await listen((req, res, entry) => {
    const token = /^\/storage\/([0-9a-f]+)\?/.exec(entry.path)?.[1];
    const url = token === undefined ? undefined : signed.get(token);
    const rule = quirks.redirect ?? {};
    if (url === undefined) return refuse(res, entry, 404);
    url.uses += 1;
    const tooOld = rule.maxAgeMs !== undefined && Date.now() - url.issuedAt > rule.maxAgeMs;
    if ((rule.maxUses !== undefined && url.uses > rule.maxUses) || tooOld)
      return refuse(res, entry, rule.expiredStatus ?? 403);
    // The storage host has its own Range support: GHCR's CDN is the one that answers 501.
    if (quirks.multiRange && entry.range?.includes(',')) return refuse(res, entry, quirks.multiRange);
    blobGets += 1;
    return forward(req, res, entry, { ...shaped(req, blobGets), path: url.upstreamPath });
  });

  return {
    address: proxy.address,
    log: proxy.log,
    count: proxy.count,
    storage,
    set: (next) => {
      quirks = next;
      blobGets = 0;
      linkFreeAt = 0;
    },
    clearLog: () => {
      proxy.log.length = 0;
      storage.log.length = 0;
    },
    close: async () => {
      for (const res of stalled) res.socket?.destroy();
      agent.destroy();
      await Promise.all([proxy.close(), storage.close()]);
    },
  };
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, entry: QuirkLogEntry) => void;

/** An HTTP listener on 127.0.0.1 that logs every request before `handle` answers it. */
async function listen(handle: Handler): Promise<QuirkListener & { close(): Promise<void> }> {
  const log: QuirkLogEntry[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const entry: QuirkLogEntry = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      range: req.headers.range,
      status: 0,
      bytes: 0,
      authorization: req.headers.authorization !== undefined,
    };
    log.push(entry);
    handle(req, res, entry);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    log,
    count: (match = {}) =>
      log.filter(
        (e) =>
          (match.method === undefined || e.method === match.method) &&
          (match.path === undefined || e.path.includes(match.path)) &&
          (match.status === undefined || e.status === match.status),
      ).length,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function splitHostPort(address: string): [string, number] {
  const colon = address.lastIndexOf(':');
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}
