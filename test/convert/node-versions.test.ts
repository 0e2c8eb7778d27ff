// Conversion output does not depend on the Node.js version: the same `image convert` of the
// sample image gives the same manifest digest under every Node the suite runs under (Node 20 and
// the LTS, scripts/test.sh). V8, Node's bundled zlib and the N-API addons (libdeflate, zstd-napi)
// are what could differ between them.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSampleImage } from '../../src/image/sample.js';
import { openSink } from '../../src/image/transports/index.js';
import { esgzUnder, testNodes, type TestNode } from '../harness/node-versions.js';

const scratch = await mkdtemp(join(tmpdir(), 'esgz-node-versions-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const source = `oci:${join(scratch, 'source')}:sample`;
const nodes = testNodes();

beforeAll(async () => {
  await writeSampleImage(await openSink(source, {}));
});

async function convertedDigest(node: TestNode, flags: string[], env: Record<string, string>): Promise<string> {
  const destination = `oci:${join(scratch, `out-${node.version}`)}:converted`;
  const result = await esgzUnder(node, ['image', 'convert', ...flags, '--oci', '--json', source, destination], env);
  expect(result.exitCode, `${node.path}: ${result.stderr}`).toBe(0);
  return (JSON.parse(result.stdout) as { digest: string }).digest;
}

const conversions: { name: string; flags: string[]; env: Record<string, string> }[] = [
  { name: '--estargz (libdeflate when it loads)', flags: ['--estargz'], env: {} },
  // Node's own zlib: the one compressor that comes with Node itself.
  { name: '--estargz with the zlib backend', flags: ['--estargz'], env: { ESGZ_GZIP_BACKEND: 'zlib' } },
  { name: '--zstdchunked', flags: ['--zstdchunked'], env: {} },
];

describe.skipIf(nodes.length < 2)(`image convert under ${nodes.map((n) => `node ${n.version}`).join(' and ')}`, () => {
  it.each(conversions)('$name: the same manifest digest under each', async ({ flags, env }) => {
    const digests: Record<string, string> = {};
    for (const node of nodes) digests[node.version] = await convertedDigest(node, flags, env);
    expect(new Set(Object.values(digests)).size, JSON.stringify(digests)).toBe(1);
  });
});
