/**
 * A fault-injecting HTTP proxy (real TCP) in front of a real registry, for tests and benchmarks.
 *
 *   const proxy = await startFaultProxy(registryAddress());
 *   proxy.fail(500, { path: '/blobs/', times: 2 });   // next 2 matching requests get a 500
 *   proxy.corrupt({ path: digest });                   // flip one byte of the next matching body
 *   proxy.truncate({ path: digest, afterBytes: 100 }); // send 100 body bytes, then drop the connection
 *   proxy.reset({ path: '/manifests/' });              // drop the connection without answering
 *   proxy.redirect('http://elsewhere/blob', { path }); // 307 to another location
 *   proxy.setBandwidth(1_000_000);                     // all responses share 1 MB/s
 *   proxy.count({ method: 'GET', path: '/blobs/' });   // requests seen so far (access log)
 *   ... point the client at proxy.address (plain HTTP) ...
 *   await proxy.close();
 *
 * Faults are consumed in the order they were added; each affects `times` matching requests
 * (default 1). Requests keep their Host header, so the registry's upload Location URLs point back
 * at the proxy. `path` matches the request target (path and query): a string by substring, a
 * RegExp by test.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RequestMatch {
  method?: string;
  path?: string | RegExp;
}

export interface FaultRule extends RequestMatch {
  /** How many matching requests the fault affects (default 1). */
  times?: number;
}

export interface AccessLogEntry {
  method: string;
  /** Path and query as requested. */
  path: string;
  /** Status sent to the client (0 when the connection was reset without a response). */
  status: number;
  /** Response body bytes sent to the client. */
  bytes: number;
  /** The fault applied, if any. */
  fault?: 'fail' | 'corrupt' | 'truncate' | 'reset' | 'redirect';
  /** Request headers as received (lower-cased names), e.g. to check Range or Authorization. */
  headers: http.IncomingHttpHeaders;
}

export interface FaultProxy {
  /** host:port to give clients (plain HTTP). */
  readonly address: string;
  /** Every request seen, in arrival order (entries are completed when the response ends). */
  readonly log: AccessLogEntry[];
  /** Number of logged requests matching `match` (all when omitted). */
  count(match?: RequestMatch): number;
  /** Answer matching requests with `status` (and a registry-style JSON error) without forwarding. */
  fail(status: number, rule?: FaultRule): void;
  /** Forward, but flip one byte of the response body at `offset` (default: the middle of the first chunk). */
  corrupt(rule?: FaultRule & { offset?: number }): void;
  /** Forward, but stop after `afterBytes` body bytes (default: half the Content-Length) and drop the connection. */
  truncate(rule?: FaultRule & { afterBytes?: number }): void;
  /** Drop the connection without any response (like ECONNRESET). */
  reset(rule?: FaultRule): void;
  /** Answer 307 with `Location: location` (e.g. a blob moved to a storage host) without forwarding. */
  redirect(location: string, rule?: FaultRule): void;
  /** Limit the total response body rate over all connections; `undefined` removes the limit. */
  setBandwidth(bytesPerSecond: number | undefined): void;
  /** Forget faults not yet consumed. */
  clearFaults(): void;
  /** Empty the access log. */
  clearLog(): void;
  close(): Promise<void>;
}

interface PendingFault {
  kind: 'fail' | 'corrupt' | 'truncate' | 'reset' | 'redirect';
  match: RequestMatch;
  location?: string;
  remaining: number;
  status?: number;
  offset?: number;
  afterBytes?: number;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const [upstreamHost, upstreamPort] = splitHostPort(upstream);
  const agent = new http.Agent({ keepAlive: true });
  const log: AccessLogEntry[] = [];
  let faults: PendingFault[] = [];
  let bytesPerSecond: number | undefined;
  // Shared throttle: the time the link is next free, so concurrent responses split the bandwidth.
  let linkFreeAt = 0;
  const sockets = new Set<Socket>();

  const matches = (m: RequestMatch, method: string, target: string): boolean =>
    (m.method === undefined || m.method.toUpperCase() === method) &&
    (m.path === undefined || (typeof m.path === 'string' ? target.includes(m.path) : m.path.test(target)));

  const takeFault = (method: string, target: string): PendingFault | undefined => {
    const fault = faults.find((f) => f.remaining > 0 && matches(f.match, method, target));
    if (fault) {
      fault.remaining -= 1;
      faults = faults.filter((f) => f.remaining > 0);
    }
    return fault;
  };

  const throttle = async (length: number): Promise<void> => {
    if (bytesPerSecond === undefined) return;
    const now = Date.now();
    const start = Math.max(now, linkFreeAt);
    linkFreeAt = start + (length / bytesPerSecond) * 1000;
    const wait = linkFreeAt - now;
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
  };

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const target = req.url ?? '/';
    const entry: AccessLogEntry = { method, path: target, status: 0, bytes: 0, headers: req.headers };
    log.push(entry);
    const fault = takeFault(method, target);
    if (fault) entry.fault = fault.kind;

    if (fault?.kind === 'reset') {
      req.resume();
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'redirect') {
      req.resume();
      entry.status = 307;
      res.writeHead(307, { location: fault.location!, 'content-length': 0 }).end();
      return;
    }
    if (fault?.kind === 'fail') {
      req.resume();
      const status = fault.status ?? 500;
      const body = JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected fault: HTTP ${status}` }] });
      entry.status = status;
      entry.bytes = Buffer.byteLength(body);
      res
        .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        .end(body);
      return;
    }

    const upstreamReq = http.request(
      { host: upstreamHost, port: upstreamPort, method, path: target, headers: req.headers, agent },
      (upstreamRes) => {
        const status = upstreamRes.statusCode ?? 502;
        entry.status = status;
        res.writeHead(status, upstreamRes.statusMessage, upstreamRes.rawHeaders);
        const contentLength = Number(upstreamRes.headers['content-length'] ?? NaN);
        const cutAt =
          fault?.kind === 'truncate'
            ? (fault.afterBytes ?? Math.floor((Number.isFinite(contentLength) ? contentLength : 2) / 2))
            : undefined;
        let sent = 0;
        let corrupted = false;
        void (async () => {
          try {
            for await (const piece of upstreamRes as AsyncIterable<Buffer>) {
              // Small slices keep the throttle smooth.
              for (let i = 0; i < piece.length; i += 16384) {
                let chunk = piece.subarray(i, i + 16384);
                if (fault?.kind === 'corrupt' && !corrupted) {
                  const at = (fault.offset ?? Math.floor(chunk.length / 2)) - sent;
                  if (at >= 0 && at < chunk.length) {
                    chunk = Buffer.from(chunk);
                    chunk[at] = chunk[at]! ^ 0xff;
                    corrupted = true;
                  }
                }
                if (cutAt !== undefined && sent + chunk.length >= cutAt) {
                  const head = chunk.subarray(0, cutAt - sent);
                  await throttle(head.length);
                  entry.bytes += head.length;
                  res.write(head, () => res.socket?.destroy());
                  upstreamRes.destroy();
                  return;
                }
                await throttle(chunk.length);
                sent += chunk.length;
                entry.bytes += chunk.length;
                if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
              }
            }
            if (cutAt !== undefined) {
              res.socket?.destroy();
              return;
            }
            res.end();
          } catch {
            res.socket?.destroy();
          }
        })();
      },
    );
    upstreamReq.on('error', () => {
      if (!res.headersSent) {
        entry.status = 502;
        res.writeHead(502).end();
      } else {
        res.socket?.destroy();
      }
    });
    req.pipe(upstreamReq);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;

  const add = (kind: PendingFault['kind'], rule: FaultRule, extra: Partial<PendingFault> = {}): void => {
    const match: RequestMatch = {};
    if (rule.method !== undefined) match.method = rule.method;
    if (rule.path !== undefined) match.path = rule.path;
    faults.push({ kind, match, remaining: rule.times ?? 1, ...extra });
  };

  return {
    address,
    log,
    count: (match = {}) => log.filter((e) => matches(match, e.method, e.path)).length,
    fail: (status, rule = {}) => add('fail', rule, { status }),
    corrupt: (rule = {}) => add('corrupt', rule, rule.offset !== undefined ? { offset: rule.offset } : {}),
    truncate: (rule = {}) =>
      add('truncate', rule, rule.afterBytes !== undefined ? { afterBytes: rule.afterBytes } : {}),
    reset: (rule = {}) => add('reset', rule),
    redirect: (location, rule = {}) => add('redirect', rule, { location }),
    setBandwidth: (limit) => {
      bytesPerSecond = limit;
      linkFreeAt = 0;
    },
    clearFaults: () => {
      faults = [];
    },
    clearLog: () => {
      log.length = 0;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function splitHostPort(address: string): [string, number] {
  const colon = address.lastIndexOf(':');
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}
