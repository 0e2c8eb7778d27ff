// `node bench/lib/open-toc.mjs DIST BLOB`: what rpull does with a layer's TOC (footer, TOC member
// inflated, JSON parsed, checked, indexed by name), on a local blob; the process is what the bench
// times (wall and peak RSS). Prints the entry count.
import { join } from 'node:path';

const [dist, blobPath] = process.argv.slice(2);
const { EstargzReader, openFileBlobReader } = await import(join(dist, 'estargz/reader.js'));
const blob = await openFileBlobReader(blobPath);
const reader = await EstargzReader.open(blob, { where: blobPath });
console.log(reader.entries().length);
await blob.close();
