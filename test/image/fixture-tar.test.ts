// The tar fixture builder is checked against GNU tar (an independent reader), since every
// other test trusts the layers it produces.
import { mkdtemp, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildTar,
  charDevice,
  dir,
  fifo,
  file,
  generatedBuffer,
  generatedFile,
  hardlink,
  opaque,
  symlink,
  tarStream,
  whiteout,
} from '../fixtures/tar.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-fixture-tar-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const longDir = `deep/${'d'.repeat(120)}`;
const longName = `${'n'.repeat(150)}.txt`;
const entries = [
  dir('etc'),
  file('etc/hello', 'hello world\n', { uid: 1000, gid: 1001, mode: 0o640 }),
  symlink('etc/link', 'hello'),
  hardlink('etc/hard', 'etc/hello'),
  charDevice('dev-null', 1, 3),
  fifo('pipe'),
  dir(longDir),
  file(`${longDir}/${longName}`, 'long\n'),
  symlink('longlink', `/${'t'.repeat(150)}`),
  file('attrs', 'x', { xattrs: { 'user.test': 'value-1' } }),
  whiteout('old/gone'),
  opaque('var'),
  generatedFile('big.bin', 100_000, { seed: 'big' }),
];

describe('test/fixtures/tar.ts', () => {
  it('is read by GNU tar with every type, long name and attribute intact', async () => {
    const path = join(scratch, 'a.tar');
    await writeFile(path, await buildTar(entries));
    const { stdout } = await execa('tar', ['--numeric-owner', '-tvf', path]);
    const lines = stdout.split('\n');
    expect(lines.find((l) => l.endsWith(' etc/hello'))).toMatch(/^-rw-r----- 1000\/1001\s+12 2020-09-13 /);
    expect(lines.find((l) => l.includes('etc/link'))).toMatch(/^lrwxrwxrwx .* etc\/link -> hello$/);
    expect(lines.find((l) => l.includes('etc/hard'))).toMatch(/etc\/hard link to etc\/hello$/);
    expect(lines.find((l) => l.includes('dev-null'))).toMatch(/^crw-r--r-- 0\/0\s+1,3 /);
    expect(lines.find((l) => l.endsWith(' pipe'))).toMatch(/^prw-r--r-- /);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`${longDir}/${longName}$`)));
    expect(lines).toContainEqual(expect.stringMatching(/ longlink -> \/t{150}$/));
    expect(lines).toContainEqual(expect.stringMatching(/ old\/\.wh\.gone$/));
    expect(lines).toContainEqual(expect.stringMatching(/ var\/\.wh\.\.wh\.\.opq$/));
    expect(lines).toHaveLength(entries.length);
  });

  it('extracts the same bytes, links and xattrs', async () => {
    const path = join(scratch, 'b.tar');
    await writeFile(path, await buildTar(entries.filter((e) => e.type !== 'char')));
    const out = join(scratch, 'b');
    await execa('mkdir', ['-p', out]);
    await execa('tar', ['--xattrs', '--xattrs-include=user.*', '-xf', path, '-C', out]);
    expect(await readFile(join(out, 'etc/hello'), 'utf8')).toBe('hello world\n');
    expect(await readlink(join(out, 'etc/link'))).toBe('hello');
    expect((await stat(join(out, 'etc/hard'))).ino).toBe((await stat(join(out, 'etc/hello'))).ino);
    expect(await readFile(join(out, 'big.bin'))).toEqual(generatedBuffer(100_000, 'big'));
    expect(await readFile(join(out, longDir, longName), 'utf8')).toBe('long\n');
    const attr = await execa('python3', [
      '-c',
      'import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], "user.test").decode())',
      join(out, 'attrs'),
    ]);
    expect(attr.stdout).toBe('value-1');
  });

  it('is byte-reproducible and streams the same bytes it buffers', async () => {
    const a = await buildTar(entries);
    const b = await buildTar(entries);
    expect(a.equals(b)).toBe(true);
    const chunks: Buffer[] = [];
    for await (const c of tarStream(entries)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(a)).toBe(true);
  });
});
