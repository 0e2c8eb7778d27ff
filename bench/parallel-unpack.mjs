// The full pull of an eStargz layer (#18 item 5): esgz's unpacker fed by the parallel member
// inflate, against `gzip -dc | tar -x` of the same blob and against esgz's unpacker fed by one
// gunzip stream. Runnable alone: `node bench/parallel-unpack.mjs BLOB` (an eStargz layer blob).
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { esgzBin, fmtTiming, log, measure, repeat, settle } from './lib/common.mjs';

const helper = join(dirname(new URL(import.meta.url).pathname), 'lib', 'unpack-layer.mjs');
const dist = join(dirname(dirname(esgzBin)), 'dist');

/** Times each way of unpacking `blob` `runs` times; returns rows and the target. */
export async function runParallelUnpackBench({ blob, work, runs }) {
  mkdirSync(work, { recursive: true });
  const into = join(work, 'tree');
  const fresh = async () => {
    rmSync(into, { recursive: true, force: true });
    mkdirSync(into);
    await settle();
  };
  const ways = {
    'gzip -dc | tar -x': () => measure('sh', ['-c', 'gzip -dc "$0" | tar -x -C "$1"', blob, into]),
    'esgz unpacker, one gunzip stream': () => measure(process.execPath, [helper, dist, 'serial', blob, into]),
    'esgz unpacker, parallel member inflate': () => measure(process.execPath, [helper, dist, 'parallel', blob, into]),
  };
  const results = {};
  for (const [name, run] of Object.entries(ways)) {
    log(`parallel unpack: ${name}  (${runs}x)`);
    results[name] = await repeat(runs, async () => {
      await fresh();
      return run();
    });
  }
  rmSync(work, { recursive: true, force: true });
  const tar = results['gzip -dc | tar -x'];
  const parallel = results['esgz unpacker, parallel member inflate'];
  const speedup = tar?.ok && parallel?.ok ? tar.median / parallel.median : undefined;
  const rows = Object.entries(results).map(([name, r]) => [
    `full pull unpack: ${name}`,
    fmtTiming(r),
    r.ok ? r.cpuSeconds.toFixed(2) : '',
  ]);
  const target = {
    text: 'issue 18.5: unpacking an eStargz layer >= 1.7x faster than gzip -dc | tar -x',
    status: speedup === undefined ? 'n/a ' : speedup >= 1.7 ? 'met ' : 'NOT ',
    detail:
      speedup === undefined
        ? 'a run failed'
        : `${speedup.toFixed(2)}x${speedup >= 1.7 ? '' : ', because the unpacker (one JS thread creating every file) and not the inflate bounds it: see the one-gunzip-stream row'}`,
  };
  return { results, rows, targets: [target] };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const blob = process.argv[2];
  const bench = await runParallelUnpackBench({ blob, work: join('/tmp', `esgz-parallel-unpack-${process.pid}`), runs: 3 });
  for (const row of bench.rows) console.log(row.join('  '));
  for (const t of bench.targets) console.log(`[${t.status}] ${t.text}: ${t.detail}`);
}
