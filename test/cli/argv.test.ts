// Issue #14: ctr-remote's command line (urfave/cli) rewritten into oclif's. The table is the
// built CLI's own (oclif.manifest.json), so a renamed flag or command shows up here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { closest, commandTable, normalizeArgv, type CommandTable } from '../../src/cli/argv.js';
import { isEsgzError } from '../../src/errors.js';
import { repoRoot } from '../harness/cli.js';

const manifest = JSON.parse(readFileSync(join(repoRoot, 'oclif.manifest.json'), 'utf8')) as {
  commands: Record<string, { id: string; strict?: boolean; flags: Record<string, { type: string }>; args: object }>;
};
const table: CommandTable = commandTable({
  commands: Object.values(manifest.commands) as Parameters<typeof commandTable>[0]['commands'],
  topics: [{ name: 'image' }],
});

const normalize = (...argv: string[]) => normalizeArgv(argv, table).argv;

function errorOf(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    expect(isEsgzError(err)).toBe(true);
    return (err as Error).message;
  }
  throw new Error('expected an error');
}

describe('argv normalizer', () => {
  it('takes images and i for the image topic, with every subcommand', () => {
    expect(normalize('images', 'convert', 'a', 'b')).toEqual(['image', 'convert', 'a', 'b']);
    expect(normalize('i', 'rpull', 'x')).toEqual(['image', 'rpull', 'x']);
    // Only in the topic's place: an image named "i" stays one.
    expect(normalize('image', 'rpull', 'i')).toEqual(['image', 'rpull', 'i']);
  });

  it('turns -h, -help and help CMD... into --help', () => {
    expect(normalize('image', 'convert', '-h')).toEqual(['image', 'convert', '--help']);
    expect(normalize('help', 'images', 'convert')).toEqual(['image', 'convert', '--help']);
    expect(normalize('help')).toEqual(['--help']);
    expect(normalize('-h')).toEqual(['--help']);
    expect(normalize('-help', 'image')).toEqual(['--help']);
  });

  it('takes --flag=true|false for booleans, as Go strconv.ParseBool reads them', () => {
    expect(normalize('image', 'convert', '--oci=true', '--estargz=1', 'a', 'b')).toEqual([
      'image',
      'convert',
      '--oci',
      '--estargz',
      'a',
      'b',
    ]);
    expect(normalize('image', 'convert', '--oci=false', '--reuse=F', 'a', 'b')).toEqual(['image', 'convert', 'a', 'b']);
    expect(errorOf(() => normalize('image', 'convert', '--oci=yes', 'a', 'b'))).toMatch(
      /invalid boolean value "yes" for -oci/,
    );
  });

  it('takes single-dash long flags, with or without =value', () => {
    expect(normalize('image', 'convert', '-estargz', '-oci', '-estargz-compression-level=9', 'a', 'b')).toEqual([
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--estargz-compression-level=9',
      'a',
      'b',
    ]);
    expect(normalize('image', 'optimize', '-i', '-t', '-period', '3', 'a', 'b')).toEqual([
      'image',
      'optimize',
      '-i',
      '-t',
      '--period',
      '3',
      'a',
      'b',
    ]);
  });

  it("never rewrites a value flag's value or the container command of run", () => {
    expect(normalize('image', 'optimize', '--args', '-h', 'a', 'b')).toEqual([
      'image',
      'optimize',
      '--args',
      '-h',
      'a',
      'b',
    ]);
    expect(normalize('run', '-rm', 'ref', 'id', 'sh', '-h', '--oci=true')).toEqual([
      'run',
      '--rm',
      'ref',
      'id',
      'sh',
      '-h',
      '--oci=true',
    ]);
    expect(normalize('image', 'convert', '--', '-h', 'b')).toEqual(['image', 'convert', '--', '-h', 'b']);
  });

  it('moves -n/--namespace given before the command after it, and takes --debug anywhere', () => {
    expect(normalize('-n', 'ns1', 'image', 'rpull', 'x')).toEqual(['image', 'rpull', '--namespace', 'ns1', 'x']);
    expect(normalize('--namespace=ns2', 'i', 'rpull', 'x')).toEqual(['image', 'rpull', '--namespace', 'ns2', 'x']);
    expect(normalizeArgv(['--debug', 'version'], table)).toEqual({ argv: ['version'], debug: true });
    expect(normalizeArgv(['version', '--debug'], table)).toEqual({ argv: ['version'], debug: true });
    expect(normalizeArgv(['version'], table).debug).toBe(false);
  });

  it('refuses -a/--address and CONTAINERD_ADDRESS with a reason', () => {
    expect(errorOf(() => normalize('-a', '/run/containerd/containerd.sock', 'image', 'rpull', 'x'))).toMatch(
      /esgz needs no containerd/,
    );
    expect(errorOf(() => normalize('image', 'rpull', '--address=/x', 'x'))).toMatch(/esgz needs no containerd/);
    const env = { CONTAINERD_ADDRESS: '/run/containerd/containerd.sock' };
    expect(errorOf(() => normalizeArgv(['image', 'rpull', 'x'], table, env))).toMatch(
      /CONTAINERD_ADDRESS .*containerd/,
    );
  });

  it('suggests the command or flag a typo was meant to be', () => {
    expect(errorOf(() => normalize('image', 'conver', 'a', 'b'))).toBe(
      'no such command: image conver; did you mean "image convert"?',
    );
    expect(errorOf(() => normalize('imgae', 'convert'))).toMatch(/did you mean "image"\?/);
    expect(errorOf(() => normalize('image', 'convert', '--estarg', 'a', 'b'))).toMatch(/did you mean --estargz\?/);
    expect(errorOf(() => normalize('image', 'convert', '--ocii=true', 'a', 'b'))).toMatch(
      /not defined: --ocii .*did you mean --oci\?/,
    );
    expect(errorOf(() => normalize('image', 'convert', '--zzzzzzzz', 'a', 'b'))).toMatch(/see "image convert --help"/);
  });

  it('finds the nearest name only when it is near', () => {
    expect(closest('plain-htp', ['plain-http', 'platform'])).toBe('plain-http');
    expect(closest('xyz', ['plain-http', 'platform'])).toBeUndefined();
  });
});
