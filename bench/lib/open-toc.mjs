// `node bench/lib/open-toc.mjs DIST BLOB`: what rpull does with a layer's TOC (footer, TOC member
// inflated, JSON parsed, checked, indexed by name), on a local blob; the process is what the bench
// times (wall and peak RSS). Prints the entry count, or the reader's one-line error.
import { join } from 'node:path';

const [dist, blobPath] = process.argv.slice(2);
const { EstargzReader, openFileBlobReader } = await import(join(dist, 'estargz/reader.js'));
const blob = await openFileBlobReader(blobPath);
try {
  const reader = await EstargzReader.open(blob, { where: 'layer' });
  console.log(reader.entries().length);
} catch (err) {
  console.error(err.message);
  process.exitCode = 1;
} finally {
  await blob.close();
}
