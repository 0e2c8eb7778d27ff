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

/** `registryAddress` host:port (plain HTTP), `repoTag` "repo:tag". */
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
      layers.push({ digest: layer.digest, bytes: layer.size, estargz: false });
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
    layers.push({ digest: layer.digest, bytes, estargz: true, prefetchBytes, tocBytes: layer.size - tocOffset });
    total += bytes;
  }
  return { total, layers };
}
