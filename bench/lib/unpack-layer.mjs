// `node bench/lib/unpack-layer.mjs DIST parallel|serial BLOB DIR`: unpacks an eStargz layer blob
// into DIR with esgz's unpacker (rootfs/unpack.ts), its tar inflated member range by member range
// on every core (estargz/parallel-inflate.ts, what a full pull of an eStargz layer does) or
// through one gunzip stream; the process is what the bench times.
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

const [dist, mode, blobPath, dir] = process.argv.slice(2);
const { inflateMembers, memberStarts } = await import(join(dist, 'estargz/parallel-inflate.js'));
const { EstargzReader, openFileBlobReader } = await import(join(dist, 'estargz/reader.js'));
const { unpackLayer } = await import(join(dist, 'rootfs/unpack.js'));

const blob = createReadStream(blobPath, { highWaterMark: 1 << 20 });
let tar;
if (mode === 'parallel') {
  const file = await openFileBlobReader(blobPath);
  const reader = await EstargzReader.open(file, { where: blobPath });
  await file.close();
  tar = Readable.from(inflateMembers(blob, memberStarts(reader.toc, reader.footer.tocOffset), { where: blobPath }));
} else {
  tar = blob.pipe(createGunzip());
}
await unpackLayer(tar, dir, { whiteouts: 'overlay', layerName: blobPath });
