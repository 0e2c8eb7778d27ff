import { describe, expect, it } from 'vitest';
import { EsgzError } from '../../src/errors.js';
import { formatReference, isLoopbackRegistry, parseReference, registryApiHost } from '../../src/registry/reference.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

describe('parseReference', () => {
  const table: Array<[string, string, string, string | undefined, string | undefined]> = [
    // input, registry, repository, tag, digest
    ['ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
    ['ubuntu:22.04', 'docker.io', 'library/ubuntu', '22.04', undefined],
    ['library/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
    ['stargz/hello', 'docker.io', 'stargz/hello', 'latest', undefined],
    ['docker.io/ubuntu', 'docker.io', 'library/ubuntu', 'latest', undefined],
    ['index.docker.io/ubuntu:1', 'docker.io', 'library/ubuntu', '1', undefined],
    ['registry-1.docker.io/foo/bar', 'docker.io', 'foo/bar', 'latest', undefined],
    ['ghcr.io/stargz-containers/node:17.8.0-esgz', 'ghcr.io', 'stargz-containers/node', '17.8.0-esgz', undefined],
    ['127.0.0.1:5000/foo:bar', '127.0.0.1:5000', 'foo', 'bar', undefined],
    ['localhost/foo', 'localhost', 'foo', 'latest', undefined],
    ['localhost:5000/a/b/c', 'localhost:5000', 'a/b/c', 'latest', undefined],
    [`ubuntu@${DIGEST}`, 'docker.io', 'library/ubuntu', undefined, DIGEST],
    [`127.0.0.1:5000/x:t@${DIGEST}`, '127.0.0.1:5000', 'x', 't', DIGEST],
    ['my-host/a__b/c.d-e', 'docker.io', 'my-host/a__b/c.d-e', 'latest', undefined],
    ['[::1]:5000/foo', '[::1]:5000', 'foo', 'latest', undefined],
  ];
  it.each(table)('%s', (input, registry, repository, tag, digest) => {
    const ref = parseReference(input);
    expect(ref).toEqual({ registry, repository, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) });
    // Formatting and re-parsing is stable.
    expect(parseReference(formatReference(ref))).toEqual(ref);
  });

  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Ubuntu', /lowercase/],
    ['foo:bad tag', /whitespace/],
    ['foo:-x', /bad tag/],
    ['foo@sha256:abc', /bad digest/],
    [`foo@md5:${'a'.repeat(32)}`, /bad digest/],
    ['127.0.0.1:5000/', /no repository/],
    ['foo//bar', /bad repository path component ""/],
    ['foo/-bar', /bad repository path component "-bar"/],
    ['bad_host.com:x/foo', /bad registry host|bad tag/],
  ];
  it.each(bad)('rejects %j', (input, why) => {
    let caught: unknown;
    try {
      parseReference(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(EsgzError);
    const err = caught as EsgzError;
    expect(err.code).toBe('BAD_REFERENCE');
    expect(err.message).toContain(`"${input}"`);
    expect(err.message).toMatch(why);
    expect(err.message).not.toContain('\n');
  });

  it('formats the fully qualified name', () => {
    expect(formatReference(parseReference('ubuntu'))).toBe('docker.io/library/ubuntu:latest');
    expect(formatReference(parseReference(`a.io/b@${DIGEST}`))).toBe(`a.io/b@${DIGEST}`);
  });

  it('maps docker.io to its API host and knows loopback hosts', () => {
    expect(registryApiHost('docker.io')).toBe('registry-1.docker.io');
    expect(registryApiHost('ghcr.io')).toBe('ghcr.io');
    expect(isLoopbackRegistry('127.0.0.1:5000')).toBe(true);
    expect(isLoopbackRegistry('localhost')).toBe(true);
    expect(isLoopbackRegistry('[::1]:5000')).toBe(true);
    expect(isLoopbackRegistry('ghcr.io')).toBe(false);
    expect(isLoopbackRegistry('127.0.0.1.nip.io:80')).toBe(false);
  });
});
