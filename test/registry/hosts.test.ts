// Registry configuration as containerd nodes have it, through the built CLI against real
// registries: hosts.toml mirrors tried in order (a dead one, one missing a blob, then the
// server) for copy, convert, rpull and run; client certificates for a registry with clientcas;
// -u against htpasswd and token auth; --http-trace / --http-dump never showing a secret.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '../../src/oci/media-types.js';
import { busyboxRootfs, multiLayerEntries, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { execa } from 'execa';
import { esgz, expectOneLineError, repoRoot } from '../harness/cli.js';
import { freePort, makeTestPki, startRegistry, type RunningRegistry, type TestPki } from '../harness/registry.js';
import { startTokenFront } from './token-front.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { openRegistryHosts } from '../../src/registry/mirrors.js';
import { readAll, tinyImage, streamOf, uniqueRepo } from './helpers.js';

let tmp: string;
let layout: string;
let multi: WrittenImage;
beforeAll(async () => {
  if (!existsSync(path.join(repoRoot, 'dist/commands/image/copy.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'esgz-hosts-'));
  layout = path.join(tmp, 'layout');
  multi = await writeOciImage(layout, {
    tag: 'multi',
    layers: multiLayerEntries(),
    config: { Cmd: ['/bin/cat', '/etc/greeting'] },
  });
  await writeOciImage(layout, {
    tag: 'single',
    layers: [busyboxRootfs()],
    config: { Cmd: ['/bin/cat', '/etc/hello'] },
  });
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function ok(...args: string[]) {
  const result = await esgz(...args);
  expect(result.exitCode, `esgz ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result;
}

/** The built CLI with a docker config dir of its own. */
async function esgzWithDockerConfig(dockerConfig: string, ...args: string[]) {
  return execa('node', [path.join(repoRoot, 'bin/run.js'), ...args], {
    reject: false,
    env: { DEBUG: '', DOCKER_CONFIG: dockerConfig },
    stdin: 'ignore',
  });
}

/** Writes `HOSTS_DIR/<registry>/hosts.toml` and returns HOSTS_DIR. */
async function hostsDir(name: string, registry: string, toml: string): Promise<string> {
  const root = path.join(tmp, name);
  await mkdir(path.join(root, registry), { recursive: true });
  await writeFile(path.join(root, registry, 'hosts.toml'), toml);
  return root;
}

/** The hosts (host:port) that answered 200/206 to a GET of `digest`'s blob (any: `sha256:`), from --http-trace. */
function blobServedBy(trace: string, digest: string): string[] {
  const hosts = trace
    .split('\n')
    .filter((l) => l.includes(` GET `) && l.includes(`/blobs/${digest}`) && / -> HTTP 20[06] /.test(l))
    .map((l) => new URL(/ GET (\S+)/.exec(l)![1]!).host);
  return [...new Set(hosts)];
}

async function manifestOf(
  registry: string,
  repository: string,
  tag: string,
): Promise<{ layers: Array<{ digest: string }> }> {
  const response = await fetch(`http://${registry}/v2/${repository}/manifests/${tag}`, {
    headers: { accept: `${MediaType.ociManifest}, ${MediaType.dockerManifest}` },
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { layers: Array<{ digest: string }> };
}

describe('hosts.toml mirrors: a dead one, one missing a blob, then the server', () => {
  let server: RunningRegistry;
  let mirror: RunningRegistry;
  let dead: string;
  let hosts: string;
  const repo = 'hosts/multi';
  let missing: string;
  let esgzMissing: string;
  beforeAll(async () => {
    [server, mirror] = await Promise.all([startRegistry(), startRegistry()]);
    dead = `127.0.0.1:${await freePort()}`;
    const s = `${server.address}/${repo}`;
    await ok('image', 'copy', '--plain-http', `oci:${layout}:multi`, `${s}:v1`);
    await ok('image', 'convert', '--plain-http', '--estargz', '--oci', `${s}:v1`, `${s}:esgz`);
    for (const tag of ['v1', 'esgz'])
      await ok('image', 'copy', '--plain-http', `${s}:${tag}`, `${mirror.address}/${repo}:${tag}`);
    // The mirror loses the layer holding /etc/greeting, in both images.
    missing = multi.manifests[0]!.layers[1]!.digest;
    esgzMissing = (await manifestOf(server.address, repo, 'esgz')).layers[1]!.digest;
    for (const digest of [missing, esgzMissing]) {
      const response = await fetch(`http://${mirror.address}/v2/${repo}/blobs/${digest}`, { method: 'DELETE' });
      expect(response.status).toBe(202);
    }
    hosts = await hostsDir(
      'mirrors',
      server.address,
      `server = "http://${server.address}"

[host."http://${dead}"]
  capabilities = ["pull", "resolve"]

[host."http://${mirror.address}"]
  capabilities = ["pull", "resolve"]
`,
    );
  });
  afterAll(async () => {
    await Promise.all([server?.stop(), mirror?.stop()]);
  });

  it('image copy reads each blob from the first host that has it', async () => {
    const out = path.join(tmp, 'copied');
    const result = await ok(
      'image',
      'copy',
      '--hosts-dir',
      hosts,
      '--http-trace',
      `${server.address}/${repo}:v1`,
      `oci:${out}:v1`,
    );
    expect(result.stderr).toMatch(new RegExp(`GET http://${dead}/v2/ -> failed: `));
    for (const layer of multi.manifests[0]!.layers) {
      expect(blobServedBy(result.stderr, layer.digest), layer.digest).toEqual([
        layer.digest === missing ? server.address : mirror.address,
      ]);
    }
    expect(blobServedBy(result.stderr, multi.manifests[0]!.configDigest)).toEqual([mirror.address]);
    // The mirror was told which registry it stands in for, as containerd does.
    expect(result.stderr).toContain(`?ns=${encodeURIComponent(server.address)}`);
  });

  it('image convert reads through the mirrors and pushes only to the server (the mirrors lack push)', async () => {
    const result = await ok(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--hosts-dir',
      hosts,
      '--http-trace',
      `${server.address}/${repo}:v1`,
      `${server.address}/${repo}:converted`,
    );
    expect(blobServedBy(result.stderr, missing)).toEqual([server.address]);
    const writes = result.stderr.split('\n').filter((l) => /esgz http: (PUT|POST|PATCH) /.test(l));
    expect(writes.length).toBeGreaterThan(0);
    for (const line of writes) expect(line).toContain(`http://${server.address}/`);
    expect((await manifestOf(server.address, repo, 'converted')).layers).toHaveLength(3);
  });

  it('image rpull + run read ranges lazily from the mirror, and the missing layer from the server', async () => {
    const root = path.join(tmp, 'state');
    const ref = `${server.address}/${repo}:esgz`;
    const pulled = await ok('image', 'rpull', '--hosts-dir', hosts, '--http-trace', '--root', root, ref);
    const layers = (await manifestOf(server.address, repo, 'esgz')).layers;
    for (const layer of layers) {
      expect(blobServedBy(pulled.stderr, layer.digest), layer.digest).toEqual([
        layer.digest === esgzMissing ? server.address : mirror.address,
      ]);
    }
    const run = await ok('run', '--rm', '--hosts-dir', hosts, '--http-trace', '--root', root, ref);
    expect(run.stdout.trim()).toBe('greetings from layer 2');
    expect(blobServedBy(run.stderr, esgzMissing)).toEqual([server.address]);
  });

  it('a hostile hosts.toml is a one-line error', async () => {
    const bad = await hostsDir('bad', server.address, '[host."http://m"\ncapabilities = ["pull"]\n');
    expectOneLineError(
      await esgz('image', 'copy', '--hosts-dir', bad, `${server.address}/${repo}:v1`, `oci:${path.join(tmp, 'never')}`),
      'nonzero',
      /hosts\.toml: not valid TOML/,
    );
    expect(existsSync(path.join(tmp, 'never'))).toBe(false);
    expectOneLineError(
      await esgz('image', 'rpull', '--hosts-dir', path.join(tmp, 'nope'), `${server.address}/${repo}:v1`),
      2,
      /--hosts-dir .*nope: not a directory/,
    );
  });
});

describe('a registry that requires client certificates (clientcas)', () => {
  let pki: TestPki;
  let registry: RunningRegistry;
  beforeAll(async () => {
    await mkdir(path.join(tmp, 'pki'), { recursive: true });
    pki = await makeTestPki(path.join(tmp, 'pki'));
    registry = await startRegistry({
      tls: {
        certificate: pki.serverCert,
        key: pki.serverKey,
        clientCas: [pki.ca],
        probeClient: { cert: pki.clientCert, key: pki.clientKey },
        ca: pki.ca,
      },
    });
  });
  afterAll(async () => registry?.stop());

  it('accepts esgz with --tlscert/--tlskey, or the client entry of hosts.toml, and refuses it otherwise in one line', async () => {
    const ref = `${registry.address}/tls/single:v1`;
    await ok(
      'image',
      'copy',
      '--tlscacert',
      pki.ca,
      '--tlscert',
      pki.clientCert,
      '--tlskey',
      pki.clientKey,
      `oci:${layout}:single`,
      ref,
    );

    const refused = await esgz('image', 'copy', '--tlscacert', pki.ca, ref, `oci:${path.join(tmp, 'tls-refused')}`);
    expectOneLineError(refused, 'nonzero', /client certificate/);
    expect(existsSync(path.join(tmp, 'tls-refused'))).toBe(false);

    const hosts = await hostsDir(
      'tls-hosts',
      registry.address,
      `server = "https://${registry.address}"\nca = "${pki.ca}"\nclient = [["${pki.clientCert}", "${pki.clientKey}"]]\n`,
    );
    await ok('image', 'copy', '--hosts-dir', hosts, ref, `oci:${path.join(tmp, 'tls-hosts-out')}`);
    expectOneLineError(
      await esgz('image', 'copy', '--tlscert', pki.clientCert, ref, 'oci:/nonexistent'),
      2,
      /--tlscert and --tlskey go together/,
    );
    // -k / --skip-verify (ctr's names for --insecure) instead of trusting the CA.
    for (const skip of ['-k', '--skip-verify']) {
      await ok(
        'image',
        'copy',
        skip,
        '--tlscert',
        pki.clientCert,
        '--tlskey',
        pki.clientKey,
        ref,
        `oci:${path.join(tmp, `tls-skip${skip}`)}`,
      );
    }
    expectOneLineError(
      await esgz(
        'image',
        'copy',
        '--tlscert',
        pki.clientCert,
        '--tlskey',
        pki.clientKey,
        ref,
        `oci:${path.join(tmp, 'tls-untrusted')}`,
      ),
      'nonzero',
      /certificate/,
    );
  });
});

describe('-u USER:PASSWORD and traces without secrets', () => {
  it('pushes and pulls from an htpasswd registry with -u; the trace never shows the password', async () => {
    const password = 'pw-htpasswd-4711';
    const registry = await startRegistry({ htpasswd: { username: 'alice', password } });
    try {
      const ref = `${registry.address}/auth/single:v1`;
      const pushed = await ok(
        'image',
        'copy',
        '--plain-http',
        '-u',
        `alice:${password}`,
        '--http-dump',
        `oci:${layout}:single`,
        ref,
      );
      const pulled = await ok(
        'image',
        'copy',
        '--plain-http',
        '--user',
        `alice:${password}`,
        '--http-trace',
        ref,
        `oci:${path.join(tmp, 'auth-out')}`,
      );
      for (const output of [pushed.stderr, pulled.stderr]) {
        expect(output).not.toContain(password);
        expect(output).not.toContain(Buffer.from(`alice:${password}`).toString('base64'));
      }
      expect(pushed.stderr).toContain('authorization: Basic ***');
      expectOneLineError(
        await esgz('image', 'copy', '--plain-http', ref, `oci:${path.join(tmp, 'auth-none')}`),
        'nonzero',
        /requires authentication/,
      );
      expectOneLineError(
        await esgz('image', 'copy', '--plain-http', '-u', 'alice', ref, `oci:${path.join(tmp, 'auth-none')}`),
        2,
        /stdin is not a terminal.*-u alice:PASSWORD/,
      );

      // On a terminal (script(1) gives the CLI a pty), -u USER asks for the password without echoing it.
      const out = path.join(tmp, 'auth-prompted');
      const command = `node ${path.join(repoRoot, 'bin/run.js')} image copy --plain-http -u alice ${ref} oci:${out}`;
      const child = execa('script', ['-qec', command, '/dev/null'], { reject: false, env: { DEBUG: '' } });
      let seen = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        seen += chunk.toString('utf8');
        if (seen.includes('Password for alice: ') && !seen.includes('\u0000asked')) {
          seen += '\u0000asked';
          child.stdin!.write(`${password}\r`);
        }
      });
      const prompted = await child;
      expect(prompted.exitCode, seen).toBe(0);
      expect(seen).not.toContain(password);
      expect(existsSync(path.join(out, 'index.json'))).toBe(true);
    } finally {
      await registry.stop();
    }
  });

  it('gets Bearer tokens with -u and with --refresh; the dump shows neither password, refresh token nor token', async () => {
    const password = 'pw-token-0815';
    const refresh = 'refresh-token-9f3e';
    const registry = await startRegistry({ token: { users: { bob: password }, refreshTokens: { [refresh]: 'bob' } } });
    // The realm on the registry's own origin: esgz sends credentials to a plain-HTTP realm only there.
    const front = await startTokenFront(registry);
    try {
      const ref = `${front.address}/token/single:v1`;
      const pushed = await ok(
        'image',
        'copy',
        '--plain-http',
        '-u',
        `bob:${password}`,
        '--http-dump',
        `oci:${layout}:single`,
        ref,
      );
      const pulled = await ok(
        'image',
        'copy',
        '--plain-http',
        '--refresh',
        refresh,
        '--http-dump',
        ref,
        `oci:${path.join(tmp, 'token-out')}`,
      );
      for (const output of [pushed.stderr, pulled.stderr]) {
        expect(output).toContain('authorization: Bearer ***');
        expect(output).not.toContain(password);
        expect(output).not.toContain(refresh);
        // Tokens are JWTs: base64url JSON, starting "eyJ".
        expect(output).not.toMatch(/eyJ[\w-]{10,}/);
      }
    } finally {
      await front.close();
      await registry.stop();
    }
  });
});

describe('credentials: -u over hosts.toml header over docker config, each only for its own host', () => {
  const password = 'pw-precedence-1234';
  const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;
  let server: RunningRegistry;
  let mirror: RunningRegistry;
  const repo = 'creds/single';
  beforeAll(async () => {
    // Both ask for the same user and password, so credentials sent to the wrong host would work there.
    [server, mirror] = await Promise.all([
      startRegistry({ htpasswd: { username: 'alice', password } }),
      startRegistry({ htpasswd: { username: 'alice', password } }),
    ]);
    for (const registry of [server, mirror])
      await ok(
        'image',
        'copy',
        '--plain-http',
        '-u',
        `alice:${password}`,
        `oci:${layout}:single`,
        `${registry.address}/${repo}:v1`,
      );
  });
  afterAll(async () => Promise.all([server?.stop(), mirror?.stop()]));

  it('sends -u only to the server; a mirror gets its own header or docker config entry', async () => {
    const ref = `${server.address}/${repo}:v1`;
    const mirrorTable = `[host."http://${mirror.address}"]\n  capabilities = ["pull", "resolve"]\n`;
    const plain = await hostsDir('creds-plain', server.address, `server = "http://${server.address}"\n${mirrorTable}`);
    const withU = await ok(
      'image',
      'copy',
      '--hosts-dir',
      plain,
      '--http-dump',
      '-u',
      `alice:${password}`,
      ref,
      `oci:${path.join(tmp, 'creds-1')}`,
    );
    // Requests to the mirror carry no Authorization: it answers 401 and the server serves every blob.
    const mirrorRequests = withU.stderr
      .split(/\n(?=esgz http: [A-Z]+ )/)
      .filter((block) => block.includes(` http://${mirror.address}/`));
    expect(mirrorRequests.length).toBeGreaterThan(0);
    for (const block of mirrorRequests) expect(block).not.toContain('authorization:');
    expect(blobServedBy(withU.stderr, 'sha256:')).toEqual([server.address]);

    // The mirror's own docker config entry makes it serve.
    const dockerConfig = path.join(tmp, 'creds-docker');
    await mkdir(dockerConfig, { recursive: true });
    await writeFile(
      path.join(dockerConfig, 'config.json'),
      JSON.stringify({ auths: { [mirror.address]: { auth: Buffer.from(`alice:${password}`).toString('base64') } } }),
    );
    const viaConfig = await esgzWithDockerConfig(
      dockerConfig,
      'image',
      'copy',
      '--hosts-dir',
      plain,
      '--http-trace',
      '-u',
      `alice:${password}`,
      ref,
      `oci:${path.join(tmp, 'creds-2')}`,
    );
    expect(viaConfig.exitCode, viaConfig.stderr).toBe(0);
    expect(blobServedBy(viaConfig.stderr, 'sha256:')).toEqual([mirror.address]);

    // A header in hosts.toml beats a wrong docker config entry; -u beats a wrong header.
    await writeFile(
      path.join(dockerConfig, 'config.json'),
      JSON.stringify({ auths: { [server.address]: { auth: Buffer.from('alice:wrong').toString('base64') } } }),
    );
    const header = await hostsDir(
      'creds-header',
      server.address,
      `server = "http://${server.address}"\n[header]\n  authorization = "${basic('alice', password)}"\n`,
    );
    const viaHeader = await esgzWithDockerConfig(
      dockerConfig,
      'image',
      'copy',
      '--hosts-dir',
      header,
      ref,
      `oci:${path.join(tmp, 'creds-3')}`,
    );
    expect(viaHeader.exitCode, viaHeader.stderr).toBe(0);
    const wrongHeader = await hostsDir(
      'creds-wrong-header',
      server.address,
      `server = "http://${server.address}"\n[header]\n  authorization = "${basic('alice', 'wrong')}"\n`,
    );
    const viaU = await esgzWithDockerConfig(
      dockerConfig,
      'image',
      'copy',
      '--hosts-dir',
      wrongHeader,
      '-u',
      `alice:${password}`,
      ref,
      `oci:${path.join(tmp, 'creds-4')}`,
    );
    expect(viaU.exitCode, viaU.stderr).toBe(0);
    const refused = await esgzWithDockerConfig(
      dockerConfig,
      'image',
      'copy',
      '--hosts-dir',
      wrongHeader,
      ref,
      `oci:${path.join(tmp, 'creds-5')}`,
    );
    expectOneLineError(refused, 'nonzero', /refused|requires authentication/);
  });
});

describe('fall-through on a faulty mirror (library)', () => {
  it('moves a 5xx or a corrupt manifest on to the next host, reads and ranges included', async () => {
    const server = await startRegistry();
    const proxy = await startFaultProxy(server.address);
    try {
      const repo = uniqueRepo('faulty');
      const image = tinyImage(300_000);
      const direct = await openRegistryHosts(server.address, { plainHttp: true, hostsDirs: [] });
      await direct.uploadBlob(repo, image.layer.desc, () => streamOf(image.layer.bytes));
      await direct.uploadBlob(repo, image.config.desc, () => streamOf(image.config.bytes));
      await direct.putManifest(repo, 'v1', image.manifest);
      await direct.close();

      // The mirror is the same registry behind a proxy that breaks what it is told to.
      const hosts = await hostsDir(
        'faulty',
        server.address,
        `server = "http://${server.address}"\n[host."http://${proxy.address}"]\n  capabilities = ["pull", "resolve"]\n`,
      );
      const client = await openRegistryHosts(server.address, { hostsDirs: [hosts], retryDelayMs: 1 });
      try {
        proxy.corrupt({ method: 'GET', path: '/manifests/' });
        expect((await client.getManifest(repo, 'v1')).digest).toBe(image.manifest.digest);
        proxy.fail(503, { method: 'GET', path: image.layer.desc.digest, times: 100 });
        expect(await client.readBlobRange(repo, image.layer.desc, 1000, 500)).toEqual(
          image.layer.bytes.subarray(1000, 1500),
        );
        expect((await readAll(await client.openBlob(repo, image.layer.desc))).equals(image.layer.bytes)).toBe(true);
        // The mirror was asked (and failed) before the server answered.
        expect(proxy.log.filter((e) => e.fault === 'fail').length).toBeGreaterThanOrEqual(2);
        expect(proxy.log.some((e) => e.fault === 'corrupt')).toBe(true);
        const before = proxy.count({ method: 'GET', path: image.config.desc.digest });
        // A healthy mirror serves: nothing more reaches the server for the config.
        expect((await readAll(await client.openBlob(repo, image.config.desc))).equals(image.config.bytes)).toBe(true);
        expect(proxy.count({ method: 'GET', path: image.config.desc.digest })).toBe(before + 1);
      } finally {
        await client.close();
      }
    } finally {
      await proxy.close();
      await server.stop();
    }
  });
});
