/** The TOC model shared by eStargz and zstd:chunked (stargz-snapshotter's JTOC / TOCEntry). */

export type TOCEntryType = 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'chunk';

export interface TOCEntry {
  name: string;
  type: TOCEntryType;
  size?: number;
  /** RFC 3339 modification time, as stargz writes it. */
  modtime?: string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  userName?: string;
  groupName?: string;
  /** Offset in the blob of the compressed member (gzip) or frame (zstd) holding this payload. */
  offset?: number;
  /** Offset of the payload inside the decompressed member (several payloads in one member). */
  innerOffset?: number;
  devMajor?: number;
  devMinor?: number;
  /** xattr values, base64-encoded. */
  xattrs?: Record<string, string>;
  /** sha256 of the whole file payload (regular files). */
  digest?: string;
  /** Offset of this chunk within the file (chunk entries and the first chunk of a reg). */
  chunkOffset?: number;
  /** Length of this chunk; 0 or absent on the last one means "to the end of the file". */
  chunkSize?: number;
  /** sha256 of this chunk's uncompressed bytes. */
  chunkDigest?: string;
}

export interface JTOC {
  version: number;
  entries: TOCEntry[];
}
