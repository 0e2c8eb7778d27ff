// Platform strings as users type them and as indexes store them.
import { describe, expect, it } from 'vitest';
import { formatPlatform, hostPlatform, parsePlatform, platformMatches } from '../../src/oci/platform.js';

describe('platforms', () => {
  it('parses and normalises os/arch[/variant]', () => {
    expect(parsePlatform('linux/amd64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/x86_64')).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(parsePlatform('linux/aarch64')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/arm/7')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('Linux/ARM')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
  });

  it("takes one word as containerd's platforms.Parse does: an OS or an architecture", () => {
    const host = hostPlatform();
    expect(parsePlatform('arm64')).toEqual({ os: host.os, architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('aarch64')).toEqual({ os: host.os, architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('x86_64')).toEqual({ os: host.os, architecture: 'amd64' });
    expect(parsePlatform('arm')).toEqual({ os: host.os, architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('linux')).toEqual({ ...host, os: 'linux' });
    expect(parsePlatform('windows')).toEqual({ ...host, os: 'windows' });
    expect(parsePlatform('linux/arm/v7')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('macos/arm64')).toEqual({ os: 'darwin', architecture: 'arm64', variant: 'v8' });
  });

  it('rejects malformed values with BAD_FLAG naming them', () => {
    for (const bad of ['linux/', '/amd64', 'linux/amd64/v1/x', 'linux/am d64', 'lnux', '']) {
      expect(() => parsePlatform(bad), bad).toThrow(
        expect.objectContaining({ code: 'BAD_FLAG', message: expect.stringContaining(`"${bad}"`) }),
      );
    }
  });

  it('matches index entries the way containerd does', () => {
    expect(platformMatches(parsePlatform('linux/arm64'), { os: 'linux', architecture: 'arm64' })).toBe(true);
    expect(platformMatches(parsePlatform('linux/arm64'), { os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe(
      true,
    );
    expect(platformMatches(parsePlatform('linux/arm/v6'), { os: 'linux', architecture: 'arm', variant: 'v7' })).toBe(
      false,
    );
    expect(platformMatches(parsePlatform('linux/amd64'), { os: 'windows', architecture: 'amd64' })).toBe(false);
    expect(
      platformMatches({ os: 'linux', architecture: 'arm' }, { os: 'linux', architecture: 'arm', variant: 'v7' }),
    ).toBe(true);
  });

  it('formats without arm64’s implied v8, and knows this machine', () => {
    expect(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe('linux/arm64');
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v6' })).toBe('linux/arm/v6');
    const expectedArch = { x64: 'amd64', arm64: 'arm64' }[process.arch as 'x64' | 'arm64'];
    expect(hostPlatform()).toMatchObject({ os: 'linux', architecture: expectedArch });
  });
});
