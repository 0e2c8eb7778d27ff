// Auth against real registries: htpasswd Basic, Bearer tokens from the harness token server,
// credentials from docker config (auths, credHelpers, credsStore, $DOCKER_CONFIG), and TLS.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openRegistrySink, openRegistrySource, type RegistryOptions } from '../../src/image/transports/registry.js';
import { RegistryClient } from '../../src/registry/client.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { startRegistry, type RunningRegistry } from '../harness/registry.js';
import { readAll, rejection, streamOf, tinyImage, uniqueRepo } from './helpers.js';
import { startTokenFront, type TokenFront } from './token-front.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'esgz-auth-test-'));
});
afterAll(async () => rm(tmp, { recursive: true, force: true }));

let configCount = 0;
/** Writes a docker config dir holding `config` and returns its path. */
async function dockerConfig(config: object): Promise<string> {
  configCount += 1;
  const dir = path.join(tmp, `docker-config-${configCount}`);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

function basicAuth(user: string, password: string): string {
  return Buffer.from(`${user}:${password}`).toString('base64');
}

async function pushAndPull(registry: string, options: RegistryOptions): Promise<void> {
  const repo = uniqueRepo('auth');
  const image = tinyImage(20_000);
  const sink = await openRegistrySink(`${registry}/${repo}:a`, { plainHttp: true, ...options });
  await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
  await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
  await sink.commit(image.manifest);
  const source = await openRegistrySource(`${registry}/${repo}:a`, { plainHttp: true, ...options });
  try {
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    expect((await readAll(await source.openBlob(image.layer.desc))).equals(image.layer.bytes)).toBe(true);
  } finally {
    await source.close();
  }
}

describe('Basic auth (htpasswd)', () => {
  let registry: RunningRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ htpasswd: { username: 'alice', password: 'wonder land' } });
  });
  afterAll(async () => registry.stop());

  it('pushes and pulls with auths credentials from config.json', async () => {
    const dir = await dockerConfig({ auths: { [registry.address]: { auth: basicAuth('alice', 'wonder land') } } });
    await pushAndPull(registry.address, { dockerConfigDir: dir });
  });

  it('finds auths keyed by URL and plain username/password fields', async () => {
    const dir = await dockerConfig({
      auths: { [`http://${registry.address}/v2/`]: { username: 'alice', password: 'wonder land' } },
    });
    await pushAndPull(registry.address, { dockerConfigDir: dir });
  });

  it('reads $DOCKER_CONFIG when no directory is given', async () => {
    const dir = await dockerConfig({ auths: { [registry.address]: { auth: basicAuth('alice', 'wonder land') } } });
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dir;
    try {
      await pushAndPull(registry.address, {});
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
    }
  });

  it('fails with one UNAUTHORIZED line for a wrong password', async () => {
    const dir = await dockerConfig({ auths: { [registry.address]: { auth: basicAuth('alice', 'wrong') } } });
    const source = await openRegistrySource(`${registry.address}/x/y:z`, { plainHttp: true, dockerConfigDir: dir });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('UNAUTHORIZED');
    expect(err.message).toContain(registry.address);
    expect(err.message).toContain('"alice"');
    expect(err.message).toMatch(/refused the credentials/);
    expect(err.message).not.toContain('\n');
    await source.close();
  });

  it('fails with UNAUTHORIZED when no credentials are configured', async () => {
    const dir = await dockerConfig({ auths: { 'other.example': { auth: basicAuth('a', 'b') } } });
    const source = await openRegistrySource(`${registry.address}/x/y:z`, { plainHttp: true, dockerConfigDir: dir });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('UNAUTHORIZED');
    expect(err.message).toMatch(/no credentials/);
    await source.close();
  });

  describe('credential helpers', () => {
    let binDir: string;
    const savedPath = process.env.PATH;
    beforeAll(async () => {
      binDir = path.join(tmp, 'bin');
      await mkdir(binDir, { recursive: true });
      // A docker-credential-helpers protocol implementation: server URL on stdin, JSON on stdout.
      const helper = `#!/bin/sh
[ "$1" = get ] || exit 2
read -r server
echo "$server" >> "${path.join(tmp, 'helper-calls.log')}"
if [ "$server" = "${registry.address}" ]; then
  printf '{"ServerURL":"%s","Username":"alice","Secret":"wonder land"}\\n' "$server"
else
  echo "credentials not found in native keychain"
  exit 1
fi
`;
      await writeFile(path.join(binDir, 'docker-credential-test'), helper);
      await chmod(path.join(binDir, 'docker-credential-test'), 0o755);
      process.env.PATH = `${binDir}:${savedPath}`;
    });
    afterEach(() => {
      process.env.PATH = `${binDir}:${savedPath}`;
    });
    afterAll(() => {
      process.env.PATH = savedPath;
    });

    it('uses a credHelpers entry for the registry', async () => {
      const dir = await dockerConfig({
        credHelpers: { [registry.address]: 'test' },
        auths: { [registry.address]: { auth: basicAuth('alice', 'wrong') } },
      });
      await pushAndPull(registry.address, { dockerConfigDir: dir });
    });

    it('uses credsStore for every registry', async () => {
      const dir = await dockerConfig({ credsStore: 'test' });
      await pushAndPull(registry.address, { dockerConfigDir: dir });
    });

    it('treats "credentials not found" as no answer and falls back to auths', async () => {
      // The helper only knows 127.0.0.1:PORT; localhost:PORT is the same registry under a name it does not know.
      const alias = registry.address.replace('127.0.0.1', 'localhost');
      const withAuths = await dockerConfig({
        credsStore: 'test',
        auths: { [alias]: { auth: basicAuth('alice', 'wonder land') } },
      });
      await pushAndPull(alias, { dockerConfigDir: withAuths });
      const without = await dockerConfig({ credsStore: 'test' });
      const source = await openRegistrySource(`${alias}/x/y:z`, { plainHttp: true, dockerConfigDir: without });
      const err = await rejection(source.fetchRoot());
      expect(err.code).toBe('UNAUTHORIZED');
      expect(err.message).toMatch(/no credentials/);
      await source.close();
    });

    it('names a helper that is not on PATH', async () => {
      const dir = await dockerConfig({ credHelpers: { [registry.address]: 'missing-esgz-helper' } });
      const source = await openRegistrySource(`${registry.address}/x/y:z`, { plainHttp: true, dockerConfigDir: dir });
      const err = await rejection(source.fetchRoot());
      expect(err.code).toBe('UNAUTHORIZED');
      expect(err.message).toContain('docker-credential-missing-esgz-helper');
      await source.close();
    });
  });

  it('follows a blob redirect to storage without sending the credentials there, and still verifies', async () => {
    const dir = await dockerConfig({ auths: { [registry.address]: { auth: basicAuth('alice', 'wonder land') } } });
    const repo = uniqueRepo('redirect');
    const image = tinyImage(30_000);
    const sink = await openRegistrySink(`${registry.address}/${repo}:r`, { plainHttp: true, dockerConfigDir: dir });
    await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
    await sink.abort();

    // A "storage" host that serves the blob (or, on request, wrong bytes) and records what it was sent.
    const seen: http.IncomingHttpHeaders[] = [];
    const storage = http.createServer((req, res) => {
      seen.push(req.headers);
      const bytes = req.url === '/wrong' ? Buffer.alloc(image.layer.bytes.length, 7) : image.layer.bytes;
      res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
    });
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    const storageUrl = `http://127.0.0.1:${(storage.address() as AddressInfo).port}`;
    const proxy = await startFaultProxy(registry.address);
    try {
      const source = await openRegistrySource(`${proxy.address}/${repo}:r`, {
        plainHttp: true,
        dockerConfigDir: await dockerConfig({
          auths: { [proxy.address]: { auth: basicAuth('alice', 'wonder land') } },
        }),
      });
      proxy.redirect(`${storageUrl}/blob`, { method: 'GET', path: image.layer.desc.digest });
      expect((await readAll(await source.openBlob(image.layer.desc))).equals(image.layer.bytes)).toBe(true);
      const redirected = proxy.log.find((e) => e.fault === 'redirect')!;
      expect(redirected.headers.authorization).toMatch(/^Basic /);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.authorization).toBeUndefined();

      // Existence checks take a redirect as "yes" without asking storage (presigned URLs are GET-only).
      proxy.redirect(`${storageUrl}/blob`, { method: 'HEAD', path: image.layer.desc.digest, times: 2 });
      const client = new RegistryClient(proxy.address, {
        plainHttp: true,
        credentials: { username: 'alice', password: 'wonder land' },
      });
      expect(await client.blobExists(repo, image.layer.desc.digest)).toBe(true);
      expect(await client.uploadBlob(repo, image.layer.desc, () => streamOf(image.layer.bytes))).toBe('exists');
      expect(await client.blobExists(repo, `sha256:${'0'.repeat(64)}`)).toBe(false);
      await client.close();
      expect(seen).toHaveLength(1);

      await source.close();
      // A client remembers the location, so a fresh one asks the registry again (and gets wrong bytes).
      const fresh = await openRegistrySource(`${proxy.address}/${repo}:r`, { plainHttp: true });
      proxy.redirect(`${storageUrl}/wrong`, { method: 'GET', path: image.layer.desc.digest });
      const err = await rejection(readAll(await fresh.openBlob(image.layer.desc)));
      expect(err.code).toBe('DIGEST_MISMATCH');
      await fresh.close();
    } finally {
      await proxy.close();
      await new Promise<void>((resolve) => storage.close(() => resolve()));
    }
  });

  it('sends no credentials to an upload Location on another host (a hostile registry cannot collect them there)', async () => {
    // The other host records what it is sent and accepts the upload.
    const seen: http.IncomingHttpHeaders[] = [];
    const elsewhere = http.createServer((req, res) => {
      seen.push(req.headers);
      req.resume();
      req.on('end', () => res.writeHead(req.method === 'PUT' ? 201 : 202, { 'content-length': 0 }).end());
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    const elsewhereUrl = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`;
    // The real registry, except that upload sessions are sent to the other host.
    const [host, port] = registry.address.split(':');
    const front = http.createServer((req, res) => {
      const upstream = http.request(
        { host, port: Number(port), method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          const headers = { ...answer.headers };
          if (req.method === 'POST' && headers.location !== undefined)
            headers.location = `${elsewhereUrl}/upload/session`;
          res.writeHead(answer.statusCode ?? 502, headers);
          answer.pipe(res);
        },
      );
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    const frontAddress = `127.0.0.1:${(front.address() as AddressInfo).port}`;
    try {
      const client = new RegistryClient(frontAddress, {
        plainHttp: true,
        credentials: { username: 'alice', password: 'wonder land' },
      });
      const image = tinyImage(4_000);
      expect(await client.uploadBlob(uniqueRepo('location'), image.layer.desc, () => streamOf(image.layer.bytes))).toBe(
        'uploaded',
      );
      await client.close();
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((headers) => headers.authorization === undefined)).toBe(true);
    } finally {
      front.closeAllConnections();
      await new Promise<void>((resolve) => front.close(() => resolve()));
      await new Promise<void>((resolve) => elsewhere.close(() => resolve()));
    }
  });

  it('names a malformed config.json', async () => {
    configCount += 1;
    const dir = path.join(tmp, `broken-${configCount}`);
    await mkdir(dir);
    await writeFile(path.join(dir, 'config.json'), '{"auths": ');
    const source = await openRegistrySource(`${registry.address}/x/y:z`, { plainHttp: true, dockerConfigDir: dir });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('BAD_FORMAT');
    expect(err.message).toContain(path.join(dir, 'config.json'));
    await source.close();
  });
});

describe('Bearer token auth', () => {
  let registry: RunningRegistry;
  // The realm on the registry's own (plain-HTTP, user-named) origin: the one plain-HTTP realm
  // esgz sends credentials to (test/security/registry.test.ts covers a realm elsewhere).
  let front: TokenFront;
  beforeAll(async () => {
    registry = await startRegistry({
      token: {
        users: { bob: 'builder', carol: 'reader' },
        anonymousPull: true,
        pullOnlyUsers: ['carol'],
        refreshTokens: { 'refresh-for-bob': 'bob' },
      },
    });
    front = await startTokenFront(registry);
  });
  afterAll(async () => {
    await front.close();
    await registry.stop();
  });

  it('gets tokens from the realm with the right scopes and caches them per scope', async () => {
    const dir = await dockerConfig({ auths: { [front.address]: { auth: basicAuth('bob', 'builder') } } });
    const requests = registry.tokenServer!.requests;
    requests.length = 0;
    const repo = uniqueRepo('bearer');
    const image = tinyImage(20_000);
    const sink = await openRegistrySink(`${front.address}/${repo}:b`, { plainHttp: true, dockerConfigDir: dir });
    await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
    await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
    await sink.commit(image.manifest);
    // Two blob uploads and three manifest-related requests, one push token.
    expect(requests.filter((r) => r.scopes.includes(`repository:${repo}:pull,push`))).toHaveLength(1);
    expect(requests.every((r) => r.user === 'bob' && r.status === 200)).toBe(true);

    requests.length = 0;
    const source = await openRegistrySource(`${front.address}/${repo}:b`, { plainHttp: true, dockerConfigDir: dir });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    expect((await readAll(await source.openBlob(image.layer.desc))).equals(image.layer.bytes)).toBe(true);
    expect((await readAll(await source.openBlob(image.config.desc))).equals(image.config.bytes)).toBe(true);
    expect((await source.readBlobRange(image.layer.desc, 5, 10)).equals(image.layer.bytes.subarray(5, 15))).toBe(true);
    expect(requests.map((r) => r.scopes)).toEqual([[`repository:${repo}:pull`]]);
    await source.close();

    // Concurrent reads on a fresh client share one token fetch.
    requests.length = 0;
    const parallel = await openRegistrySource(`${front.address}/${repo}:b`, { plainHttp: true, dockerConfigDir: dir });
    const offsets = [0, 100, 200, 300, 400, 500, 600, 700];
    const parts = await Promise.all(offsets.map((o) => parallel.readBlobRange(image.layer.desc, o, 50)));
    parts.forEach((part, i) =>
      expect(part.equals(image.layer.bytes.subarray(offsets[i]!, offsets[i]! + 50))).toBe(true),
    );
    expect(requests).toHaveLength(1);
    await parallel.close();
  });

  it('pulls anonymously where the token server allows it, and refuses an anonymous push', async () => {
    const dir = await dockerConfig({});
    const authed = await dockerConfig({ auths: { [front.address]: { auth: basicAuth('bob', 'builder') } } });
    const repo = uniqueRepo('anon');
    const image = tinyImage(5_000);
    const sink = await openRegistrySink(`${front.address}/${repo}:p`, { plainHttp: true, dockerConfigDir: authed });
    await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
    await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
    await sink.commit(image.manifest);

    const source = await openRegistrySource(`${front.address}/${repo}:p`, { plainHttp: true, dockerConfigDir: dir });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    await source.close();

    const anonymous = await openRegistrySink(`${front.address}/${repo}:q`, { plainHttp: true, dockerConfigDir: dir });
    const other = tinyImage(5_000);
    const err = await rejection(anonymous.putBlob(other.layer.desc, () => streamOf(other.layer.bytes)));
    expect(err.code).toBe('UNAUTHORIZED');
    expect(err.message).toContain(front.address);
    expect(err.message).not.toContain('\n');
    await anonymous.abort();
  });

  it('mounts across repositories with a token covering both', async () => {
    const dir = await dockerConfig({ auths: { [front.address]: { auth: basicAuth('bob', 'builder') } } });
    const from = uniqueRepo('bearer-from');
    const to = uniqueRepo('bearer-to');
    const image = tinyImage(8_000);
    const client = new RegistryClient(front.address, { plainHttp: true, dockerConfigDir: dir });
    expect(await client.uploadBlob(from, image.layer.desc, () => streamOf(image.layer.bytes))).toBe('uploaded');
    const requests = registry.tokenServer!.requests;
    requests.length = 0;
    expect(await client.uploadBlob(to, image.layer.desc, () => streamOf(image.layer.bytes), { mountFrom: from })).toBe(
      'mounted',
    );
    expect(
      requests.some(
        (r) => r.scopes.includes(`repository:${from}:pull`) && r.scopes.includes(`repository:${to}:pull,push`),
      ),
    ).toBe(true);
    expect(await client.headBlob(to, image.layer.desc.digest)).toBe(image.layer.desc.size);
    await client.close();
  });

  it('exchanges an identity token (refresh token) for access tokens', async () => {
    const dir = await dockerConfig({ auths: { [front.address]: { identitytoken: 'refresh-for-bob' } } });
    const requests = registry.tokenServer!.requests;
    requests.length = 0;
    await pushAndPull(front.address, { dockerConfigDir: dir });
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((r) => r.method === 'POST' && r.user === 'bob' && r.status === 200)).toBe(true);

    const bad = await dockerConfig({ auths: { [front.address]: { identitytoken: 'stolen' } } });
    const source = await openRegistrySource(`${front.address}/x/y:z`, { plainHttp: true, dockerConfigDir: bad });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('UNAUTHORIZED');
    await source.close();
  });

  it('says access was not granted when valid credentials lack the push scope', async () => {
    const dir = await dockerConfig({ auths: { [front.address]: { auth: basicAuth('carol', 'reader') } } });
    const image = tinyImage(2_000);
    const sink = await openRegistrySink(`${front.address}/${uniqueRepo('readonly')}:r`, {
      plainHttp: true,
      dockerConfigDir: dir,
    });
    const err = await rejection(sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes)));
    expect(err.code).toBe('UNAUTHORIZED');
    expect(err.message).toMatch(/did not grant access for user "carol"/);
    expect(err.message).not.toContain('\n');
    await sink.abort();
  });

  it('fails with one UNAUTHORIZED line when the token server refuses the credentials', async () => {
    const dir = await dockerConfig({ auths: { [front.address]: { auth: basicAuth('bob', 'nope') } } });
    const source = await openRegistrySource(`${front.address}/x/y:z`, { plainHttp: true, dockerConfigDir: dir });
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('UNAUTHORIZED');
    expect(err.message).toContain('"bob"');
    expect(err.message).toContain(`http://${front.address}/token`);
    expect(err.message).not.toContain('\n');
    await source.close();
  });
});

describe('Bearer token expiry', () => {
  let registry: RunningRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ token: { users: {}, anonymousPull: true, expiresIn: 6 } });
  });
  afterAll(async () => registry.stop());

  it('reuses a token while it is valid and fetches a new one when it expires', async () => {
    const dir = await dockerConfig({});
    const source = await openRegistrySource(`${registry.address}/x/y:z`, { plainHttp: true, dockerConfigDir: dir });
    const requests = registry.tokenServer!.requests;
    requests.length = 0;
    await rejection(source.fetchRoot());
    await rejection(source.fetchRoot());
    expect(requests).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 3_200));
    const err = await rejection(source.fetchRoot());
    // The pull was allowed (anonymous pull); the repository just does not exist.
    expect(err.code).toBe('NOT_FOUND');
    expect(requests).toHaveLength(2);
    await source.close();
  });
});

describe('TLS', () => {
  let registry: RunningRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ tls: true });
  });
  afterAll(async () => registry.stop());

  it('uses TLS by default and refuses an unverifiable certificate', async () => {
    const source = await openRegistrySource(`${registry.address}/x/y:z`, {});
    const err = await rejection(source.fetchRoot());
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/certificate/i);
    expect(err.message).toContain('--insecure');
    expect(err.message).toContain(registry.address);
    await source.close();
  });

  it('skips verification with insecure', async () => {
    const repo = uniqueRepo('tls');
    const image = tinyImage(5_000);
    const sink = await openRegistrySink(`${registry.address}/${repo}:t`, { insecure: true });
    await sink.putBlob(image.layer.desc, () => streamOf(image.layer.bytes));
    await sink.putBlob(image.config.desc, () => streamOf(image.config.bytes));
    await sink.commit(image.manifest);
    const source = await openRegistrySource(`${registry.address}/${repo}:t`, { insecure: true });
    expect((await source.fetchRoot()).digest).toBe(image.manifest.digest);
    await source.close();
  });

  it('fails clearly when told plain HTTP against a TLS registry', async () => {
    const source = await openRegistrySource(`${registry.address}/x/y:z`, { plainHttp: true });
    const err = await rejection(source.fetchRoot());
    expect(['REGISTRY', 'NETWORK']).toContain(err.code);
    expect(err.message).toContain(registry.address);
    expect(err.message).not.toContain('\n');
    await source.close();
  });
});
