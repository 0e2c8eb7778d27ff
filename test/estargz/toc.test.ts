// The TOC JSON encoder: its bytes are what the toc.digest annotation covers, so they must be
// exactly what Go's json.MarshalIndent(toc, "", "\t") writes for stargz-snapshotter's JTOC.
// (test/estargz/reference.test.ts also re-encodes a TOC written by ctr-remote and compares.)
import { describe, expect, it } from 'vitest';
import { marshalTOC, parseTOCJSON, type JTOC } from '../../src/estargz/toc.js';

describe('marshalTOC', () => {
  it('writes every field in the Go struct order, tab-indented', () => {
    const toc: JTOC = {
      version: 1,
      entries: [
        {
          // Set in reverse struct order: the output order must not follow insertion order.
          innerOffset: 7,
          chunkDigest: 'sha256:cd',
          chunkSize: 4096,
          chunkOffset: 8192,
          digest: 'sha256:d',
          xattrs: { 'user.z': 'eg==', 'security.capability': 'AQ==' },
          devMinor: 3,
          devMajor: 1,
          offset: 1234,
          groupName: 'staff',
          userName: 'app',
          gid: 50,
          uid: 1000,
          mode: 0o644,
          linkName: 'target',
          modtime: '2024-01-02T03:04:05Z',
          size: 10,
          type: 'reg',
          name: 'a/b',
        },
      ],
    };
    expect(marshalTOC(toc).toString()).toBe(
      [
        '{',
        '\t"version": 1,',
        '\t"entries": [',
        '\t\t{',
        '\t\t\t"name": "a/b",',
        '\t\t\t"type": "reg",',
        '\t\t\t"size": 10,',
        '\t\t\t"modtime": "2024-01-02T03:04:05Z",',
        '\t\t\t"linkName": "target",',
        '\t\t\t"mode": 420,',
        '\t\t\t"uid": 1000,',
        '\t\t\t"gid": 50,',
        '\t\t\t"userName": "app",',
        '\t\t\t"groupName": "staff",',
        '\t\t\t"offset": 1234,',
        '\t\t\t"devMajor": 1,',
        '\t\t\t"devMinor": 3,',
        '\t\t\t"xattrs": {',
        '\t\t\t\t"security.capability": "AQ==",',
        '\t\t\t\t"user.z": "eg=="',
        '\t\t\t},',
        '\t\t\t"digest": "sha256:d",',
        '\t\t\t"chunkOffset": 8192,',
        '\t\t\t"chunkSize": 4096,',
        '\t\t\t"chunkDigest": "sha256:cd",',
        '\t\t\t"innerOffset": 7',
        '\t\t}',
        '\t]',
        '}',
      ].join('\n'),
    );
  });

  it('omits zero values (omitempty) but always writes name and type', () => {
    const toc: JTOC = {
      version: 1,
      entries: [
        { name: 'd', type: 'dir', size: 0, uid: 0, userName: '', xattrs: {} },
        { name: '', type: 'chunk', offset: 5 },
      ],
    };
    expect(marshalTOC(toc).toString()).toBe(
      '{\n\t"version": 1,\n\t"entries": [\n\t\t{\n\t\t\t"name": "d",\n\t\t\t"type": "dir"\n\t\t},\n\t\t{\n\t\t\t"name": "",\n\t\t\t"type": "chunk",\n\t\t\t"offset": 5\n\t\t}\n\t]\n}',
    );
    expect(marshalTOC({ version: 1, entries: [] }).toString()).toBe('{\n\t"version": 1,\n\t"entries": []\n}');
  });

  it("escapes strings as Go's encoding/json does (HTML-safe)", () => {
    const name = 'q"b\\s\n\r\t\u0001<a>&\u2028\u2029é😀';
    const json = marshalTOC({ version: 1, entries: [{ name, type: 'reg' }] }).toString();
    expect(json).toContain('"name": "q\\"b\\\\s\\n\\r\\t\\u0001\\u003ca\\u003e\\u0026\\u2028\\u2029é😀"');
    expect(parseTOCJSON(Buffer.from(json), 'test').entries[0]!.name).toBe(name);
  });

  it('stays one valid document across the pieces it is encoded in', () => {
    const entries = Array.from({ length: 5000 }, (_, i) => ({
      name: `dir/file-${i}`,
      type: 'reg' as const,
      size: i + 1,
      offset: 100 + i,
      digest: `sha256:${i}`,
    }));
    const json = marshalTOC({ version: 1, entries });
    const parsed = JSON.parse(json.toString()) as JTOC;
    expect(parsed.entries).toHaveLength(5000);
    expect(parsed.entries[4321]).toEqual({
      name: 'dir/file-4321',
      type: 'reg',
      size: 4322,
      offset: 4421,
      digest: 'sha256:4321',
    });
  });
});
