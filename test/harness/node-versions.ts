// The Node.js versions the suite runs under, for tests that run the same CLI command under each
// and compare. scripts/test.sh runs vitest once per Node (the machine's, then the LTS of
// scripts/node-lts.sh) and lists both in ESGZ_TEST_NODES, so every run compares against the other.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { execa } from 'execa';
import { repoRoot } from './cli.js';

export interface TestNode {
  /** The node binary. */
  path: string;
  /** What it reports, e.g. v24.22.3. */
  version: string;
}

/**
 * Every Node the suite runs under, one per version, this process's own first. Run by hand
 * (`npx vitest run FILE`, no ESGZ_TEST_NODES): this Node and the LTS, installed when absent.
 */
export function testNodes(): TestNode[] {
  const listed = process.env.ESGZ_TEST_NODES?.split(':').filter((path) => path.length > 0);
  const lts = () => execFileSync('bash', [join(repoRoot, 'scripts/node-lts.sh')], { encoding: 'utf8' }).trim();
  const paths = [process.execPath, ...(listed ?? [lts()])];
  const byVersion = new Map<string, string>();
  for (const path of paths) {
    const version = execFileSync(path, ['--version'], { encoding: 'utf8' }).trim();
    if (!byVersion.has(version)) byVersion.set(version, path);
  }
  return [...byVersion].map(([version, path]) => ({ path, version }));
}

/** Runs the built CLI under `node`, as test/harness/cli.ts's esgz() does under the node on PATH. */
export function esgzUnder(node: TestNode, args: string[], env: Record<string, string> = {}) {
  return execa(node.path, [join(repoRoot, 'bin/run.js'), ...args], {
    reject: false,
    env: { DEBUG: '', ...env },
    stdin: 'ignore',
  });
}
