/**
 * Real registries for the tests: Debian's `docker-registry` (CNCF distribution v2) on 127.0.0.1,
 * plain HTTP, storage in a temp dir. The suite-wide instance is started by global-setup.ts and
 * reached with `registryAddress()`; a test that needs auth or a clean store starts its own with
 * `startRegistry({ htpasswd })` or `startRegistry({ token })` and stops it in `afterAll`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { inject } from 'vitest';
import { startTokenServer, type TokenServer, type TokenServerOptions } from './token-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** host:port of the suite-wide registry (plain HTTP, no auth). */
    registry: string;
  }
}

/** host:port of the suite-wide registry started by global-setup.ts (plain HTTP, anonymous). */
export function registryAddress(): string {
  return inject('registry');
}

export interface StartRegistryOptions {
  /** Require HTTP Basic auth with these credentials (htpasswd, bcrypt). */
  htpasswd?: { username: string; password: string };
  /** Require Bearer tokens from a token server started alongside (users and anonymous pull as given). */
  token?: Omit<TokenServerOptions, 'dir'>;
  /**
   * Serve HTTPS: `true` with a fresh self-signed certificate for 127.0.0.1 (clients need
   * `insecure`), or with the given certificate (e.g. from `makeTestPki`), requiring client
   * certificates signed by `clientCas` when given (docker-registry's `http.tls.clientcas`).
   */
  tls?: boolean | RegistryTls;
}

export interface RegistryTls {
  certificate: string;
  key: string;
  /** CA files whose client certificates the registry requires. */
  clientCas?: string[];
  /** The client certificate the harness uses to see the registry is up, with `clientCas`. */
  probeClient?: { cert: string; key: string };
  /** The CA that signed `certificate`, for the harness's own probe. */
  ca?: string;
}

/** A test PKI made with openssl: a CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA. */
export interface TestPki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

export async function makeTestPki(dir: string): Promise<TestPki> {
  const at = (name: string) => path.join(dir, name);
  const pki: TestPki = {
    ca: at('ca.pem'),
    serverCert: at('server.pem'),
    serverKey: at('server-key.pem'),
    clientCert: at('client.pem'),
    clientKey: at('client-key.pem'),
  };
  const caKey = at('ca-key.pem');
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
    '/CN=esgz test CA',
    '-keyout',
    caKey,
    '-out',
    pki.ca,
  ]);
  const issue = async (cert: string, key: string, subject: string, extensions: string): Promise<void> => {
    const csr = `${cert}.csr`;
    const ext = `${cert}.ext`;
    await writeFile(ext, extensions);
    await execa('openssl', [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-sha256',
      '-subj',
      subject,
      '-keyout',
      key,
      '-out',
      csr,
    ]);
    await execa('openssl', [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      pki.ca,
      '-CAkey',
      caKey,
      '-CAcreateserial',
      '-days',
      '2',
      '-sha256',
      '-extfile',
      ext,
      '-out',
      cert,
    ]);
  };
  await issue(
    pki.serverCert,
    pki.serverKey,
    '/CN=127.0.0.1',
    'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n',
  );
  await issue(pki.clientCert, pki.clientKey, '/CN=esgz test client', 'extendedKeyUsage=clientAuth\n');
  return pki;
}

export interface RunningRegistry {
  /** host:port (127.0.0.1:PORT), plain HTTP. */
  address: string;
  /** The registry's storage root (tests may look at or damage blobs on disk). */
  storageDir: string;
  /** Set when started with `token`. */
  tokenServer?: TokenServer;
  /** The registry's own log (stderr), useful when a test fails. */
  logPath: string;
  stop(): Promise<void>;
}

const REGISTRY_BINARY = '/usr/bin/docker-registry';

export async function startRegistry(options: StartRegistryOptions = {}): Promise<RunningRegistry> {
  // Another process on this busy machine may take the free port between our probe and the
  // registry's bind: start over with a new port a couple of times before giving up.
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startRegistryOnce(options);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startRegistryOnce(options: StartRegistryOptions): Promise<RunningRegistry> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'esgz-registry-'));
  const storageDir = path.join(dir, 'storage');
  const logPath = path.join(dir, 'registry.log');
  const port = await freePort();
  const address = `127.0.0.1:${port}`;

  const config: Record<string, unknown> = {
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: storageDir },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: address, secret: 'esgz-test-secret' },
  };
  let tokenServer: TokenServer | undefined;
  if (options.htpasswd) {
    const htpasswdPath = path.join(dir, 'htpasswd');
    await writeFile(htpasswdPath, await bcryptLine(options.htpasswd.username, options.htpasswd.password));
    config.auth = { htpasswd: { realm: 'esgz-test', path: htpasswdPath } };
  } else if (options.token) {
    tokenServer = await startTokenServer({ ...options.token, dir });
    config.auth = {
      token: {
        realm: tokenServer.realm,
        service: tokenServer.service,
        issuer: tokenServer.issuer,
        rootcertbundle: tokenServer.certPath,
      },
    };
  }
  let probeTls: ProbeTls = { rejectUnauthorized: false };
  if (typeof options.tls === 'object') {
    const { certificate, key, clientCas, probeClient, ca } = options.tls;
    (config.http as Record<string, unknown>).tls = { certificate, key, ...(clientCas ? { clientcas: clientCas } : {}) };
    probeTls = {
      rejectUnauthorized: ca !== undefined,
      ...(ca ? { ca: await readFile(ca, 'utf8') } : {}),
      ...(probeClient
        ? { cert: await readFile(probeClient.cert, 'utf8'), key: await readFile(probeClient.key, 'utf8') }
        : {}),
    };
  } else if (options.tls) {
    const certificate = path.join(dir, 'tls-cert.pem');
    const key = path.join(dir, 'tls-key.pem');
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
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      certificate,
    ]);
    (config.http as Record<string, unknown>).tls = { certificate, key };
  }
  // YAML is a superset of JSON, so the config needs no YAML writer.
  const configPath = path.join(dir, 'config.yml');
  await writeFile(configPath, JSON.stringify(config, null, 2));

  const log = createWriteStream(logPath);
  const child = spawn(REGISTRY_BINARY, ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  let recentOutput = '';
  const remember = (chunk: Buffer): void => {
    recentOutput = (recentOutput + chunk.toString('utf8')).slice(-4096);
  };
  child.stdout?.on('data', remember);
  child.stderr?.on('data', remember);
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    await stopChild(child);
    await tokenServer?.close();
    await rm(dir, { recursive: true, force: true });
  };

  try {
    await waitUntilServing(`${options.tls ? 'https' : 'http'}://${address}`, child, probeTls);
  } catch (err) {
    await stop();
    // Keep what the registry said: the log file is deleted with the temp dir.
    throw new Error(
      `${(err as Error).message}; docker-registry said: ${recentOutput.trim().split('\n').slice(-3).join(' | ') || '(nothing)'}`,
      { cause: err },
    );
  }
  const running: RunningRegistry = { address, storageDir, logPath, stop };
  if (tokenServer) running.tokenServer = tokenServer;
  return running;
}

async function bcryptLine(username: string, password: string): Promise<string> {
  const { stdout } = await execa('htpasswd', ['-nbB', username, password]);
  return `${stdout.trim()}\n`;
}

/** Asks the kernel for a free port (closed again before the registry binds it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

type ProbeTls = Pick<https.RequestOptions, 'rejectUnauthorized' | 'ca' | 'cert' | 'key'>;

async function waitUntilServing(baseUrl: string, child: ChildProcess, tls: ProbeTls): Promise<void> {
  const deadline = Date.now() + 20_000;
  let exited = false;
  // 'close' (not 'exit'): by then its output has been read, so the error can quote it.
  child.once('close', () => {
    exited = true;
  });
  while (Date.now() < deadline) {
    if (exited) throw new Error(`docker-registry (${baseUrl}) exited during start-up`);
    try {
      const response = await fetchIgnoringCertificate(`${baseUrl}/v2/`, tls);
      await response.arrayBuffer();
      // 401 counts: an auth-protected registry is up and asking for credentials.
      if (response.status === 200 || response.status === 401) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`docker-registry at ${baseUrl} did not answer /v2/ within 20 s`);
}

/** GET that accepts the harness's self-signed certificate (node's fetch cannot be told to). */
function fetchIgnoringCertificate(
  url: string,
  tls: ProbeTls,
): Promise<{ status: number; arrayBuffer(): Promise<ArrayBuffer> }> {
  if (url.startsWith('http:')) return fetch(url);
  return new Promise((resolve, reject) => {
    const req = https.get(url, tls, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, arrayBuffer: async () => new ArrayBuffer(0) }));
    });
    req.on('error', reject);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
