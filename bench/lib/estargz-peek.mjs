// What the reference stargz snapshotter would fetch to start a container from an eStargz image:
// manifest, config, and per layer the footer + TOC and the prioritized range (everything before
// `.prefetch.landmark`); layers that are not eStargz are fetched in full. Written independently
// of esgz's reader (footer regex, gunzip, a 512-byte tar header) so it can judge esgz's rpull.
import { gunzipSync } from 'node:zlib';

const FOOTER_SIZE = 51;
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

async function get(url, headers = {}) {
  const response = await fetch(url, { headers });
  if (!response.ok && response.status !== 206) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

/**
 * `registryAddress` host:port (plain HTTP), `repoTag` "repo:tag". Chunks a workload reads outside
 * the prioritized range come on top: see touchedChunkBytes.
 */
export async function referenceLazyBytes(registryAddress, repoTag) {
  const [repo, tag] = repoTag.split(':');
  const base = `http://${registryAddress}/v2/${repo}`;
  let manifestBytes = await get(`${base}/manifests/${tag}`, { Accept: ACCEPT });
  let total = manifestBytes.length;
  let manifest = JSON.parse(manifestBytes);
  if (manifest.manifests) {
    manifestBytes = await get(`${base}/manifests/${manifest.manifests[0].digest}`, { Accept: ACCEPT });
    total += manifestBytes.length;
    manifest = JSON.parse(manifestBytes);
  }
  total += manifest.config.size;
  const layers = [];
  for (const layer of manifest.layers) {
    const blobUrl = `${base}/blobs/${layer.digest}`;
    const isEstargz = layer.annotations?.['containerd.io/snapshot/stargz/toc.digest'] && layer.mediaType.endsWith('+gzip');
    if (!isEstargz) {
      layers.push({ digest: layer.digest, size: layer.size, bytes: layer.size, estargz: false });
      total += layer.size;
      continue;
    }
    const footer = await get(blobUrl, { Range: `bytes=${layer.size - FOOTER_SIZE}-${layer.size - 1}` });
    const match = footer.toString('latin1').match(/([0-9a-f]{16})STARGZ/);
    if (!match) throw new Error(`layer ${layer.digest}: no eStargz footer`);
    const tocOffset = parseInt(match[1], 16);
    const tocGzip = await get(blobUrl, { Range: `bytes=${tocOffset}-${layer.size - FOOTER_SIZE - 1}` });
    const tocTar = gunzipSync(tocGzip);
    const jsonSize = parseInt(tocTar.subarray(124, 136).toString('latin1').replace(/\0.*$/, '').trim(), 8);
    const toc = JSON.parse(tocTar.subarray(512, 512 + jsonSize).toString('utf8'));
    const landmark = toc.entries.find((entry) => entry.name === '.prefetch.landmark');
    const prefetchBytes = landmark ? landmark.offset : 0;
    const bytes = layer.size - tocOffset + prefetchBytes;
    layers.push({ digest: layer.digest, size: layer.size, bytes, estargz: true, prefetchBytes, tocOffset, tocBytes: layer.size - tocOffset });
    total += bytes;
  }
  return { total, layers };
}

/**
 * Body bytes of ranged blob reads that fall between a layer's prioritized range and its TOC:
 * chunks the workload touched that were not prefetched. The reference snapshotter would have to
 * fetch these too (at least these bytes; it rounds up to its own chunk and fetch sizes).
 */
export function touchedChunkBytes(reference, accessLog) {
  let total = 0;
  for (const entry of accessLog) {
    if (entry.status !== 206) continue;
    const layer = reference.layers.find((l) => l.estargz && entry.path.endsWith(l.digest));
    const start = Number(/bytes=(\d+)-/.exec(entry.headers.range ?? '')?.[1]);
    if (layer && start >= layer.prefetchBytes && start < layer.tocOffset) total += entry.bytes;
  }
  return total;
}
