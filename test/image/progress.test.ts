// Progress bars: silent off a TTY, per-blob lines and in-place redraws on one.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressBars, formatBytes } from '../../src/cli/progress.js';

function capture(): { stream: NodeJS.WriteStream; text: () => string } {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream & PassThrough;
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

describe('ProgressBars', () => {
  it('writes nothing when the stream is not a terminal', async () => {
    const out = capture();
    const bars = new ProgressBars(out.stream);
    bars.start('a', 'layer abc', 100);
    bars.update('a', 50);
    bars.finish('a', 'copied');
    bars.stop();
    await new Promise((r) => setTimeout(r, 200));
    expect(out.text()).toBe('');
  });

  it('draws bytes done/total and rate, then one line per finished blob', async () => {
    const out = capture();
    const bars = new ProgressBars(out.stream, true);
    bars.start('a', 'layer abc', 4 * 1024 * 1024);
    bars.update('a', 1024 * 1024);
    await new Promise((r) => setTimeout(r, 200));
    expect(out.text()).toMatch(/layer abc \[======\s+\] 1\.0 MiB \/ 4\.0 MiB\s+[\d.]+ \S+\/s/);
    bars.finish('a', 'copied');
    expect(out.text()).toMatch(/\x1b\[1F\x1b\[J/);
    expect(out.text()).toMatch(/layer abc {2}copied {2}4\.0 MiB in \d+ ms\n$/);
    bars.stop();
  });

  it('formats sizes', () => {
    expect([formatBytes(0), formatBytes(1023), formatBytes(1536), formatBytes(5 * 1024 ** 3)]).toEqual([
      '0 B',
      '1023 B',
      '1.5 KiB',
      '5.0 GiB',
    ]);
  });
});
