import { describe, expect, it } from 'vitest';
import { parseChallenges } from '../../src/registry/challenge.js';

describe('parseChallenges', () => {
  it('parses a Docker Hub style Bearer challenge with commas inside quoted values', () => {
    const header =
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push"';
    expect(parseChallenges(header)).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/ubuntu:pull,push',
        },
      },
    ]);
  });

  it('parses several challenges, spaces, unquoted and escaped values', () => {
    const header =
      'Basic realm="Registry Realm", Bearer realm="https://a/t", Service=plain , error="insufficient_scope", x="q\\"uote"';
    expect(parseChallenges(header)).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      {
        scheme: 'bearer',
        params: { realm: 'https://a/t', service: 'plain', error: 'insufficient_scope', x: 'q"uote' },
      },
    ]);
  });

  it('accepts repeated headers and nothing', () => {
    expect(parseChallenges(['Basic realm="a"', 'Bearer realm="b"']).map((c) => c.scheme)).toEqual(['basic', 'bearer']);
    expect(parseChallenges(undefined)).toEqual([]);
    expect(parseChallenges('')).toEqual([]);
  });
});
