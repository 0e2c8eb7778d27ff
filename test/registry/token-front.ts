/**
 * One origin in front of a token-auth test registry: `/token` goes to the harness token server,
 * everything else to the registry, and the registry's challenge names this front as the realm.
 * That is the setup (Harbor, GitLab and others serve the realm on the registry's own host) in
 * which esgz sends credentials to a plain-HTTP realm: the user named that very host plain HTTP.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunningRegistry } from '../harness/registry.js';

export interface TokenFront {
  /** host:port to give clients (plain HTTP). */
  address: string;
  close(): Promise<void>;
}

export async function startTokenFront(registry: RunningRegistry): Promise<TokenFront> {
  const realm = new URL(registry.tokenServer!.realm);
  let address = '';
  const server = http.createServer((req, res) => {
    const toToken = (req.url ?? '').startsWith(realm.pathname);
    const [host, port] = (toToken ? realm.host : registry.address).split(':');
    const upstream = http.request(
      {
        host,
        port: Number(port),
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: toToken ? realm.host : address },
      },
      (answer) => {
        const headers = { ...answer.headers };
        const challenge = headers['www-authenticate'];
        if (typeof challenge === 'string')
          headers['www-authenticate'] = challenge.replace(realm.origin, `http://${address}`);
        res.writeHead(answer.statusCode ?? 502, headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
