// Issue #13 item 6: `image optimize --json` is `image convert --json`'s document (same names, same
// types) plus optimize's own keys; the environment (item 8) is documented in every --help and a
// malformed or wrong variable is a one-line error.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, writeOciImage, type WrittenImage } from '../fixtures/oci-image.js';
import { esgz, expectOneLineError, repoRoot } from '../harness/cli.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-cli-output-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

let image: WrittenImage;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/commands/image/optimize.js')))
    throw new Error('dist/ is missing: run `npm run build` first');
  image = await writeOciImage(join(scratch, 'src'), { tag: 'v1', layers: [busyboxRootfs()] });
});

/** The built CLI with extra environment variables. */
function esgzWithEnv(env: Record<string, string>, ...args: string[]) {
  return execa('node', [join(repoRoot, 'bin/run.js'), ...args], {
    reject: false,
    env: { DEBUG: '', ...env },
    stdin: 'ignore',
  });
}

type Json = Record<string, unknown>;

/** `path: type` of every key, recursing into objects and the first element of arrays. */
function shape(value: unknown, path = ''): Map<string, string> {
  const out = new Map<string, string>();
  const type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  if (path !== '') out.set(path, type);
  const inner = Array.isArray(value) ? value[0] : value;
  if (inner !== null && typeof inner === 'object' && !Array.isArray(inner)) {
    for (const [key, child] of Object.entries(inner as Json)) {
      for (const [p, t] of shape(child, `${path}${Array.isArray(value) ? '[]' : ''}${path === '' ? '' : '.'}${key}`))
        out.set(p, t);
    }
  }
  return out;
}

describe('image optimize --json and image convert --json', () => {
  let converted: Json;
  let optimized: Json;

  beforeAll(async () => {
    const convert = await esgz(
      'image',
      'convert',
      '--estargz',
      '--oci',
      '--json',
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'conv')}:c`,
    );
    expect(convert.exitCode, convert.stderr).toBe(0);
    converted = JSON.parse(convert.stdout) as Json;
    const optimize = await esgz(
      'image',
      'optimize',
      '--oci',
      '--json',
      '--period',
      '10',
      '--entrypoint',
      '["/bin/sh","-c"]',
      '--args',
      '["cat /etc/hello"]',
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'opt')}:o`,
    );
    expect(optimize.exitCode, optimize.stderr).toBe(0);
    // stdout is the document alone: the workload's output went to stderr.
    expect(optimize.stderr).toContain('hello from an esgz fixture');
    optimized = JSON.parse(optimize.stdout) as Json;
  });

  it('share the transfer and conversion fields, with the same names and types', () => {
    const common = [
      'command',
      'source',
      'destination',
      'transform',
      'digest',
      'mediaType',
      'size',
      'sourceDigest',
      'durationMs',
      'format',
      'manifests',
      'manifests[].digest',
      'manifests[].config.digest',
      'manifests[].layers',
      'manifests[].layers[].output.digest',
      'manifests[].layers[].diffID',
      'manifests[].layers[].changed',
      'manifests[].layers[].report',
    ];
    const convertShape = shape(converted);
    const optimizeShape = shape(optimized);
    for (const key of common) {
      expect(convertShape.get(key), `convert ${key}`).toBeDefined();
      expect(optimizeShape.get(key), `optimize ${key}`).toBe(convertShape.get(key));
    }
    // Every field both have has one type.
    for (const [key, type] of convertShape) if (optimizeShape.has(key)) expect(optimizeShape.get(key), key).toBe(type);
    expect(converted).toMatchObject({ command: 'image convert', format: 'estargz', transform: 'estargz' });
    expect(optimized).toMatchObject({
      command: 'image optimize',
      format: 'estargz',
      transform: 'estargz',
      source: `oci:${image.dir}:v1`,
    });
  });

  it('optimize adds its own keys: the profile, the platforms not profiled, the stage timings', () => {
    const extra = [...shape(optimized).keys()].filter(
      (key) => !shape(converted).has(key) && !key.includes('.') && !key.includes('['),
    );
    expect(extra.sort()).toEqual(['platformsNotProfiled', 'profile', 'timings']);
    const profile = optimized.profile as Json;
    expect(profile).toMatchObject({
      platform: 'linux/amd64',
      stopReason: 'exited',
      exitCode: 0,
      rootfsMode: expect.any(String),
    });
    expect(profile.filesTraced).toBeGreaterThan(0);
    const layer = (profile.layers as Json[])[0]!;
    const written = ((optimized.manifests as Json[])[0]!.layers as Json[])[0]!;
    expect(layer.outputDigest).toBe((written.output as Json).digest);
    expect(typeof layer.landmarkOffset).toBe('number');
    expect(optimized.platformsNotProfiled).toEqual([]);
    expect(Object.keys(optimized.timings as Json).sort()).toEqual(['convertMs', 'profileMs']);
  });
});

describe('environment', () => {
  it('every command ends its --help with the ENVIRONMENT section', async () => {
    for (const command of [
      ['image', 'convert'],
      ['image', 'optimize'],
      ['image', 'copy'],
      ['run'],
      ['image', 'ls'],
      ['version'],
    ]) {
      const help = await esgz(...command, '--help');
      expect(help.exitCode, command.join(' ')).toBe(0);
      const section = help.stdout.slice(help.stdout.lastIndexOf('\nENVIRONMENT\n'));
      expect(section, command.join(' ')).toMatch(/^\nENVIRONMENT\n/);
      for (const name of [
        'ESGZ_WORKERS',
        'ESGZ_GZIP_BACKEND',
        'ESGZ_ZSTDCHUNKED_GITHUB_ANNOTATIONS',
        'ESGZ_TMPFS',
        'ESGZ_RUNC',
        'ESGZ_FANOTIFY_BIN',
      ]) {
        expect(section, `${command.join(' ')} ${name}`).toContain(`  ${name}`);
      }
    }
  });

  it('a malformed variable is a one-line error before anything is written', async () => {
    const out = join(scratch, 'never');
    const res = await esgzWithEnv(
      { ESGZ_WORKERS: 'abc' },
      'image',
      'convert',
      '--estargz',
      '--oci',
      `oci:${image.dir}:v1`,
      `oci:${out}:x`,
    );
    expectOneLineError(res, 2, /^esgz: ESGZ_WORKERS=abc is not a positive integer$/);
    expect(existsSync(out)).toBe(false);
    expectOneLineError(
      await esgzWithEnv({ ESGZ_TMPFS: 'relative' }, 'image', 'ls', '--root', join(scratch, 'root')),
      2,
      /ESGZ_TMPFS=relative is neither 0 nor an absolute path/,
    );
  });

  it('ESGZ_RUNC naming a missing binary: optimize says runc is not installed, in one line', async () => {
    const out = join(scratch, 'no-runc');
    const res = await esgzWithEnv(
      { ESGZ_RUNC: '/nonexistent/runc' },
      'image',
      'optimize',
      '--oci',
      '--entrypoint',
      '["/bin/true"]',
      `oci:${image.dir}:v1`,
      `oci:${out}:x`,
    );
    expectOneLineError(
      res,
      1,
      /^esgz: runc is not installed \(looked for "\/nonexistent\/runc"\): install it \(Debian: apt-get install runc\) or set ESGZ_RUNC$/,
    );
    expect(existsSync(join(out, 'index.json'))).toBe(false);
  });

  it('ESGZ_FANOTIFY_BIN naming a missing tracer: optimize says so, in one line', async () => {
    const res = await esgzWithEnv(
      { ESGZ_FANOTIFY_BIN: '/nonexistent/esgz-fanotify' },
      'image',
      'optimize',
      '--oci',
      '--entrypoint',
      '["/bin/true"]',
      `oci:${image.dir}:v1`,
      `oci:${join(scratch, 'no-tracer')}:x`,
    );
    expectOneLineError(res, 1, /^esgz: the fanotify tracer \/nonexistent\/esgz-fanotify is not an executable file$/);
  });
});
