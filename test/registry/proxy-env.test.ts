// HTTP(S)_PROXY: registry traffic goes through a CONNECT proxy, except for loopback registries.
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRegistrySink, openRegistrySource } from '../../src/image/transports/registry.js';
import { registryAddress } from '../harness/registry.js';
import { rejection, streamOf, tinyImage, uniqueRepo } from './helpers.js';

const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'];

describe('proxy environment variables', () => {
  let proxy: http.Server;
  const tunnels: string[] = [];
  const saved: Record<string, string | undefined> = {};
  beforeAll(async () => {
    // A forward proxy that resolves every host to 127.0.0.1, so a made-up registry name only works through it.
    proxy = http.createServer((_req, res) => res.writeHead(405).end());
    proxy.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      tunnels.push(req.url ?? '');
      const port = Number((req.url ?? '').split(':').pop());
      const upstream = net.connect(port, '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length > 0) upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    for (const name of PROXY_VARIABLES) {
      saved[name] = process.env[name];
      delete process.env[name];
    }
    const url = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    process.env.HTTP_PROXY = url;
    process.env.HTTPS_PROXY = url;
    process.env.NO_PROXY = 'unrelated.example';
  });
  afterAll(async () => {
    for (const name of PROXY_VARIABLES) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
    proxy.closeAllConnections();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
  });

  it('tunnels through HTTP_PROXY for a non-loopback registry name', async () => {
    const port = registryAddress().split(':')[1];
    const name = `registry.esgz.invalid:${port}`;
    const repo = uniqueRepo('proxied');
    const image = tinyImage(3_000);
    const sink = await openRegistrySink(`${name}/${repo}:p`, { plainHttp: true });
    await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
    await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
    await sink.commit(image.manifest);
    const source = await openRegistrySource(`${name}/${repo}:p`, { plainHttp: true });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    await source.close();
    expect(tunnels.length).toBeGreaterThan(0);
    expect(tunnels.every((t) => t === name)).toBe(true);
  });

  it('never proxies a loopback registry', async () => {
    tunnels.length = 0;
    const source = await openRegistrySource(`${registryAddress()}/esgz-test/absent:x`, { plainHttp: true });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('NOT_FOUND');
    expect(tunnels).toEqual([]);
    await source.close();
  });

  it('honours NO_PROXY', async () => {
    tunnels.length = 0;
    process.env.NO_PROXY = 'registry.esgz.invalid';
    try {
      const source = await openRegistrySource(`registry.esgz.invalid:1/x:y`, { plainHttp: true });
      const err = await rejection(source.fetchRoot());
      // Not proxied, so the made-up name fails to resolve.
      expect(err.code).toBe('NETWORK');
      expect(err.message).toContain('registry.esgz.invalid');
      expect(tunnels).toEqual([]);
      await source.close();
    } finally {
      process.env.NO_PROXY = 'unrelated.example';
    }
  });
});
