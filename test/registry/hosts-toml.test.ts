// containerd's hosts.toml (docs/hosts.md) as esgz reads it: host order, defaults, paths, the
// directory lookup, and one-line errors for malformed or hostile files.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { hostDirCandidates, loadRegistryHosts, parseHostsToml } from '../../src/registry/hosts.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'esgz-hosts-toml-'));
});
afterAll(async () => rm(tmp, { recursive: true, force: true }));

function badToml(text: string): EsgzError {
  try {
    parseHostsToml(text, '/etc/containerd/certs.d/r.example', 'hosts.toml');
  } catch (err) {
    expect(err).toBeInstanceOf(EsgzError);
    expect((err as EsgzError).message).not.toContain('\n');
    return err as EsgzError;
  }
  throw new Error('expected a parse error');
}

describe('parseHostsToml', () => {
  it('keeps the [host."URL"] tables in file order, the server last, with containerd defaults', () => {
    const hosts = parseHostsToml(
      `server = "https://registry.example"
ca = "root.pem"

[host."https://zz-mirror.example"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."http://10.0.0.1:5000"]
  capabilities = ["pull"]
  client = [["client.pem", "client-key.pem"]]
  [host."http://10.0.0.1:5000".header]
    x-custom = ["a", "b"]

[host."https://aa-mirror.example/base"]
  client = "both.pem"
  ca = ["/abs/ca.pem", "rel/ca.pem"]
`,
      '/certs/registry.example',
      'hosts.toml',
    );
    expect(hosts.map((h) => [h.origin, h.path, h.isServer])).toEqual([
      ['https://zz-mirror.example', '/v2', false],
      ['http://10.0.0.1:5000', '/v2', false],
      ['https://aa-mirror.example', '/base/v2', false],
      ['https://registry.example', '/v2', true],
    ]);
    expect([...hosts[0]!.capabilities]).toEqual(['pull', 'resolve']);
    expect(hosts[0]!.skipVerify).toBe(true);
    expect(hosts[1]!.client).toEqual([
      { cert: '/certs/registry.example/client.pem', key: '/certs/registry.example/client-key.pem' },
    ]);
    expect(hosts[1]!.header).toEqual({ 'x-custom': ['a', 'b'] });
    expect(hosts[2]!.client).toEqual([{ cert: '/certs/registry.example/both.pem' }]);
    expect(hosts[2]!.ca).toEqual(['/abs/ca.pem', '/certs/registry.example/rel/ca.pem']);
    // No capabilities listed: all three, as containerd does.
    expect([...hosts[2]!.capabilities].sort()).toEqual(['pull', 'push', 'resolve']);
    expect(hosts[3]!.ca).toEqual(['/certs/registry.example/root.pem']);
  });

  it('takes a URL without scheme as https and honours override_path', () => {
    const [mirror, server] = parseHostsToml(
      `[host."mirror.example:8443/custom/api"]
  override_path = true
`,
      '/d',
      'hosts.toml',
    );
    expect(mirror).toMatchObject({ origin: 'https://mirror.example:8443', path: '/custom/api' });
    // No `server`: the registry itself, filled in when loading.
    expect(server!.origin).toBeUndefined();
  });

  it('answers a malformed or hostile file with one line naming it', () => {
    expect(badToml('server = "https://a\n[host.').message).toMatch(/^hosts\.toml: not valid TOML: /);
    expect(badToml('server = 3').message).toMatch(/"server" must be a string/);
    expect(badToml('[host."https://m"]\ncapabilities = ["pull", "delete"]').message).toMatch(
      /unknown capability "delete"/,
    );
    expect(badToml('[host."https://m"]\nclient = [["only-one"]]').message).toMatch(/client: expected/);
    expect(badToml('[host."https://m"]\nskip_verify = "yes"').message).toMatch(/skip_verify: expected true or false/);
    expect(badToml('[host."https://user:pw@m"]').message).toMatch(/credentials go in "header"/);
    expect(badToml('[host."https://m".header]\n"x-a" = "ok\\r\\nInjected: 1"').message).toMatch(/line break/);
    expect(badToml('[host."https://m".header]\n"bad name" = "v"').message).toMatch(/not a header name/);
    expect(badToml('[host."https://m"]\ncapabilitys = ["pull"]').message).toMatch(/unknown key "capabilitys"/);
    expect(badToml('host = "https://m"').message).toMatch(/"host" must be a table/);
    expect(badToml('[host."https://m"]\nserver = "https://elsewhere"').message).toMatch(
      /host\."https:\/\/m": unknown key "server"/,
    );
  });
});

describe('loadRegistryHosts', () => {
  it('looks for host_port_, host:port, then _default, as containerd does', () => {
    expect(hostDirCandidates('/c', 'r.example:5000')).toEqual([
      '/c/r.example_5000_',
      '/c/r.example:5000',
      '/c/_default',
    ]);
    expect(hostDirCandidates('/c', 'docker.io')).toEqual(['/c/docker.io', '/c/_default']);
  });

  it('without a directory for the registry: the registry itself, every capability', async () => {
    const hosts = await loadRegistryHosts('r.example:5000', { hostsDirs: [path.join(tmp, 'none')] });
    expect(hosts).toHaveLength(1);
    expect(hosts[0]).toMatchObject({ origin: 'https://r.example:5000', path: '/v2', isServer: true });
    const plain = await loadRegistryHosts('r.example:5000', { hostsDirs: [], plainHttp: true });
    expect(plain[0]!.origin).toBe('http://r.example:5000');
    expect((await loadRegistryHosts('docker.io', { hostsDirs: [] }))[0]!.origin).toBe('https://registry-1.docker.io');
  });

  it('reads the first root that has the host, fills in the server, and reads docker-style cert files without hosts.toml', async () => {
    const first = path.join(tmp, 'first');
    const second = path.join(tmp, 'second');
    await mkdir(path.join(first, 'r.example_5000_'), { recursive: true });
    await writeFile(
      path.join(first, 'r.example_5000_', 'hosts.toml'),
      '[host."http://m.example"]\ncapabilities = ["pull"]\n',
    );
    await mkdir(path.join(second, '_default'), { recursive: true });
    await writeFile(path.join(second, '_default', 'hosts.toml'), 'server = "https://never.example"\n');
    const hosts = await loadRegistryHosts('r.example:5000', { hostsDirs: [first, second], plainHttp: true });
    expect(hosts.map((h) => h.origin)).toEqual(['http://m.example', 'http://r.example:5000']);

    const fallback = await loadRegistryHosts('other.example', { hostsDirs: [first, second] });
    expect(fallback.map((h) => h.origin)).toEqual(['https://never.example']);

    const certs = path.join(tmp, 'certs');
    await mkdir(path.join(certs, 'c.example'), { recursive: true });
    for (const name of ['ca.crt', 'me.cert', 'me.key', 'solo.cert'])
      await writeFile(path.join(certs, 'c.example', name), '');
    const [legacy] = await loadRegistryHosts('c.example', { hostsDirs: [certs] });
    expect(legacy!.ca).toEqual([path.join(certs, 'c.example', 'ca.crt')]);
    expect(legacy!.client).toEqual([
      { cert: path.join(certs, 'c.example', 'me.cert'), key: path.join(certs, 'c.example', 'me.key') },
      { cert: path.join(certs, 'c.example', 'solo.cert') },
    ]);
  });

  it('a huge hosts.toml is refused', async () => {
    const root = path.join(tmp, 'huge');
    await mkdir(path.join(root, 'h.example'), { recursive: true });
    await writeFile(path.join(root, 'h.example', 'hosts.toml'), `# ${'x'.repeat(2 * 1024 * 1024)}\n`);
    await expect(loadRegistryHosts('h.example', { hostsDirs: [root] })).rejects.toThrow(/larger than/);
  });
});
