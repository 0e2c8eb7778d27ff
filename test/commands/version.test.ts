// `esgz version`: the esgz and Node versions and the compression backends, through the built CLI.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { esgz, repoRoot } from '../harness/cli.js';
import { esgzUnder, testNodes } from '../harness/node-versions.js';

interface VersionReport {
  version: string;
  node: string;
  gzip: { backend: string; libdeflate: string; workers: number };
}

async function versionReport(
  run: Promise<{ exitCode?: number; stdout: string; stderr: string }>,
): Promise<VersionReport> {
  const result = await run;
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as VersionReport;
}

describe('esgz version', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };

  it("--json reports the package version and the Node the CLI runs under, which is the suite's own", async () => {
    // scripts/test.sh puts each Node's directory first on PATH, so the CLI runs of a whole
    // suite run go through the Node that run is testing, not the machine's default.
    const report = await versionReport(esgz('version', '--json'));
    expect(report.version).toBe(pkg.version);
    expect(report.node).toBe(process.version);
    expect(['libdeflate', 'zlib']).toContain(report.gzip.backend);
  });

  it('says the same under every tested Node except the Node version: the native addons load in each', async () => {
    const [own, ...others] = testNodes();
    const expected = await versionReport(esgzUnder(own!, ['version', '--json']));
    for (const node of others) {
      const report = await versionReport(esgzUnder(node, ['version', '--json']));
      expect(report.node).toBe(node.version);
      expect({ ...report, node: expected.node }, `${node.path}: same backends as under ${own!.version}`).toEqual(
        expected,
      );
    }
  });

  it('prints the Node version in its human-readable form', async () => {
    const result = await esgz('version');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain(`esgz ${pkg.version} (node ${process.version})`);
  });
});
