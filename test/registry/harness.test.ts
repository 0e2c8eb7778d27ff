// The harness itself: the shared registry answers, and private instances enforce their auth.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registryAddress, startRegistry, type RunningRegistry } from '../harness/registry.js';

describe('registry harness', () => {
  it('serves the shared registry anonymously', async () => {
    const response = await fetch(`http://${registryAddress()}/v2/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  describe('htpasswd instance', () => {
    let registry: RunningRegistry;
    beforeAll(async () => {
      registry = await startRegistry({ htpasswd: { username: 'alice', password: 's3cret' } });
    });
    afterAll(async () => registry.stop());

    it('refuses anonymous and wrong credentials, accepts right ones', async () => {
      const url = `http://${registry.address}/v2/`;
      expect((await fetch(url)).status).toBe(401);
      const basic = (u: string, p: string) => ({
        authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`,
      });
      expect((await fetch(url, { headers: basic('alice', 'wrong') })).status).toBe(401);
      expect((await fetch(url, { headers: basic('alice', 's3cret') })).status).toBe(200);
    });
  });

  describe('token instance', () => {
    let registry: RunningRegistry;
    beforeAll(async () => {
      registry = await startRegistry({ token: { users: { bob: 'pw' }, anonymousPull: false } });
    });
    afterAll(async () => registry.stop());

    it('challenges with a Bearer realm whose tokens the registry accepts', async () => {
      const url = `http://${registry.address}/v2/`;
      const challenge = await fetch(url);
      expect(challenge.status).toBe(401);
      const header = challenge.headers.get('www-authenticate') ?? '';
      expect(header).toMatch(/^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token",service="esgz-test-registry"/);
      const tokenUrl = `${registry.tokenServer!.realm}?service=esgz-test-registry&scope=repository:x/y:pull`;
      const tokenResponse = await fetch(tokenUrl, {
        headers: { authorization: `Basic ${Buffer.from('bob:pw').toString('base64')}` },
      });
      expect(tokenResponse.status).toBe(200);
      const { token } = (await tokenResponse.json()) as { token: string };
      expect((await fetch(url, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
      // A forged token (signature of another payload) is refused.
      const [h, , s] = token.split('.');
      const forged = `${h}.${Buffer.from('{"iss":"x"}').toString('base64url')}.${s}`;
      expect((await fetch(url, { headers: { authorization: `Bearer ${forged}` } })).status).toBe(401);
      // A token for repository x/y grants pull on it (404: the repository is empty, but access is allowed).
      const tags = await fetch(`http://${registry.address}/v2/x/y/tags/list`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(tags.status).toBe(404);
    });
  });
});
