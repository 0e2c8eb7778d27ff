/**
 * What a registry host was seen to do, remembered for the rest of the process so that a quirk
 * costs one wasted request, not one per read: a host that refuses HEAD on blobs is asked with
 * a `bytes=0-0` GET from then on, one that refuses multi-range requests gets single ranges.
 * `esgz registry probe` reports the same record.
 */
export interface HostBehaviour {
  /** Refused HEAD on a blob (403/405): sizes come from a ranged GET instead. */
  headRefused: boolean;
  /** Refused a multi-range request (400/416/501): ranges are asked one at a time. */
  multiRangeRefused: boolean;
  /** Answered a Range request with 200 and the whole blob: ranges are cut out of the stream. */
  rangeIgnored: boolean;
  /** Answered a Range request with a 206 for other bytes than asked (trimmed, or refused). */
  rangeMismatched: boolean;
  /** Blob GETs were redirected to another origin (object storage, CDN). */
  redirected: boolean;
  /** A remembered redirect location was refused by its host (a signed URL expired) and renewed. */
  expiredLocations: number;
}

const behaviours = new Map<string, HostBehaviour>();

/** The record for `host` (host:port of the registry API), created on first use. */
export function hostBehaviour(host: string): HostBehaviour {
  let found = behaviours.get(host);
  if (!found) {
    found = {
      headRefused: false,
      multiRangeRefused: false,
      rangeIgnored: false,
      rangeMismatched: false,
      redirected: false,
      expiredLocations: 0,
    };
    behaviours.set(host, found);
  }
  return found;
}
