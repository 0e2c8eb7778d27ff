// `esgz registry probe` against the real test registry and the quirk proxy in front of it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/registry/client.js';
import { signedUrlLifetime } from '../../src/registry/probe.js';
import { esgz, expectOneLineError } from '../harness/cli.js';
import { startQuirkProxy, type QuirkProxy } from '../harness/quirk-proxy.js';
import { registryAddress } from '../harness/registry.js';
import { streamOf, tinyImage, uniqueRepo } from './helpers.js';

const image = tinyImage(100_000);
const repo = uniqueRepo('probe');
let proxy: QuirkProxy;

beforeAll(async () => {
  const client = new RegistryClient(registryAddress(), { plainHttp: true });
  await client.uploadBlob(repo, image.layer.desc, () => streamOf(image.layer.bytes));
  await client.uploadBlob(repo, image.config.desc, () => streamOf(image.config.bytes));
  await client.putManifest(repo, 'v1', image.manifest);
  await client.close();
  proxy = await startQuirkProxy(registryAddress());
});

afterAll(() => proxy?.close());

async function probe(...args: string[]) {
  const result = await esgz('registry', 'probe', '--plain-http', '--json', ...args);
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout);
}

describe('esgz registry probe', () => {
  it('finds everything supported on the distribution registry, uploads and mounts included with --push', async () => {
    const report = await probe('--push', `${registryAddress()}/${repo}:v1`);
    expect(report).toMatchObject({
      registry: registryAddress(),
      auth: 'none',
      repository: repo,
      blob: { digest: image.layer.desc.digest, size: image.layer.desc.size },
      head: 'yes',
      range: 'yes',
      multiRange: 'yes',
      redirect: { redirected: false },
      chunkedUpload: 'yes',
      crossRepoMount: 'yes',
    });
    expect(report.plan).toEqual(['lazy pull: footer, TOC and chunks by Range requests']);
  });

  it('reports a registry that refuses HEAD and multi-range and redirects to expiring storage URLs', async () => {
    proxy.set({ refuseHead: true, multiRange: 501, redirect: { maxUses: 5 } });
    const report = await probe(`${proxy.address}/${repo}:v1`);
    expect(report).toMatchObject({
      head: 'no',
      range: 'yes',
      multiRange: 'no',
      redirect: { redirected: true, host: proxy.storage.address, lifetimeSeconds: 60 },
      chunkedUpload: 'not checked',
      crossRepoMount: 'not checked',
    });
    expect(report.plan).toContain('HEAD refused: sizes and existence by a bytes=0-0 GET');
    expect(report.plan).toContain('multi-range refused: one request per range (remembered for the process)');
    expect(proxy.storage.log.filter((e) => e.authorization)).toEqual([]);
  });

  it('reports a registry that answers Range with the whole blob, in text', async () => {
    proxy.set({ ignoreRange: true });
    const result = await esgz('registry', 'probe', '--plain-http', `${proxy.address}/${repo}:v1`);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^Range: +ignored \(200 with the whole blob\)$/m);
    expect(result.stdout).toMatch(/^HEAD: +yes$/m);
    expect(result.stdout).toContain('each range is cut out of the whole-blob stream');
  });

  it('with HOST only names the endpoint; a bad target or an unreachable host is one line', async () => {
    const report = await probe(registryAddress());
    expect(report).toMatchObject({ endpoint: `http://${registryAddress()}/v2/`, auth: 'none' });
    expectOneLineError(await esgz('registry', 'probe', '/nohost'), 'nonzero', /not HOST or HOST\/REPO/);
    expectOneLineError(await esgz('registry', 'probe', '--plain-http', '127.0.0.1:1/x'), 'nonzero', /cannot reach/);
    const help = await esgz('registry', 'probe', '--help');
    expect(help.stdout).toContain('EXAMPLES');
  });

  it('reads the lifetime signed URLs state (S3, GCS, Azure, CloudFront)', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(signedUrlLifetime(new URL('https://s3/x?X-Amz-Expires=1200'), now)).toBe(1200);
    expect(signedUrlLifetime(new URL('https://gcs/x?X-Goog-Expires=600'), now)).toBe(600);
    expect(signedUrlLifetime(new URL('https://az/x?se=2026-01-01T00:10:00Z'), now)).toBe(600);
    expect(signedUrlLifetime(new URL(`https://cf/x?Expires=${now / 1000 + 300}`), now)).toBe(300);
    expect(signedUrlLifetime(new URL('https://cdn/x?sig=1'), now)).toBeUndefined();
  });
});
