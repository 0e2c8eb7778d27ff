import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mountLayer } from '../../src/snapshotter/fusefs.js';
import { fuseThreadsShielded } from '../../src/snapshotter/fuse-signals.js';

// libfuse's threads must never run a signal handler (see src/snapshotter/fuse-signals.ts): a
// SIGCHLD handled on a libfuse worker that is cancelled at unmount loses libuv's signal lock and
// hangs the process at its next signal registration. Without the shield, libfuse blocks only
// SIGTERM/INT/HUP/QUIT in its threads, so SIGCHLD (17) would be deliverable there.
const SIGCHLD_BIT = 1n << 16n;

function threadMasks(): Map<string, bigint> {
  const masks = new Map<string, bigint>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
      masks.set(tid, BigInt(`0x${/^SigBlk:\s*([0-9a-f]+)/m.exec(status)![1]}`));
    } catch {
      // the thread ended meanwhile
    }
  }
  return masks;
}

describe('FUSE threads and signals', () => {
  const work = mkdtempSync(join(tmpdir(), 'esgz-fuse-signals-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('starts every libfuse thread with SIGCHLD (and every other signal) blocked', async () => {
    await stat(work); // the libuv threadpool exists before the snapshot, so new threads are libfuse's
    const before = threadMasks();
    const content = Buffer.from('hello through FUSE\n');
    const mounted = await mountLayer(join(work, 'mnt'), {
      entries: [{ name: 'hello', type: 'reg', size: content.length, mode: 0o644, digest: 'sha256:unused' }],
      readRange: async (_name, _entry, offset, length) => content.subarray(offset, offset + length),
    });
    try {
      // Requests make libfuse's multi-threaded loop start its workers.
      expect(await readFile(join(work, 'mnt', 'hello'), 'utf8')).toBe('hello through FUSE\n');
      const fresh = [...threadMasks()].filter(([tid]) => !before.has(tid));
      expect(fresh.length).toBeGreaterThan(0);
      for (const [tid, mask] of fresh)
        expect({ tid, sigchldBlocked: (mask & SIGCHLD_BIT) !== 0n }).toEqual({ tid, sigchldBlocked: true });
      expect(fuseThreadsShielded()).toBe(true);
    } finally {
      await mounted.unmount();
    }
  });
});
