/**
 * CRC-64 with the ISO polynomial, as Go's hash/crc64 computes it with crc64.MakeTable(crc64.ISO):
 * tar-split stores it (8 bytes, big-endian) for every file payload. The 64-bit register is kept as
 * two 32-bit halves: BigInt arithmetic per byte would cost more than the compression it runs next to.
 */

/** The ISO polynomial, reversed (0xD800000000000000), high half; the low half is zero. */
const ISO_POLY_HI = 0xd8000000;

/** The byte-at-a-time table, and the slicing-by-8 tables derived from it (table k = k more zero bytes). */
function makeTables(): { lo: Uint32Array[]; hi: Uint32Array[] } {
  const lo = Array.from({ length: 8 }, () => new Uint32Array(256));
  const hi = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let l = i;
    let h = 0;
    for (let bit = 0; bit < 8; bit++) {
      const carry = l & 1;
      l = ((l >>> 1) | ((h & 1) << 31)) >>> 0;
      h = h >>> 1;
      if (carry) h = (h ^ ISO_POLY_HI) >>> 0;
    }
    lo[0]![i] = l;
    hi[0]![i] = h;
  }
  for (let k = 1; k < 8; k++) {
    for (let i = 0; i < 256; i++) {
      const l = lo[k - 1]![i]!;
      const h = hi[k - 1]![i]!;
      const index = l & 0xff;
      lo[k]![i] = (((l >>> 8) | (h << 24)) ^ lo[0]![index]!) >>> 0;
      hi[k]![i] = ((h >>> 8) ^ hi[0]![index]!) >>> 0;
    }
  }
  return { lo, hi };
}

const TABLES = makeTables();

export class Crc64 {
  // The register holds ^crc, as Go's update loop does.
  private lo = 0xffffffff;
  private hi = 0xffffffff;

  update(data: Uint8Array): void {
    const [l0, l1, l2, l3, l4, l5, l6, l7] = TABLES.lo as [
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
    ];
    const [h0, h1, h2, h3, h4, h5, h6, h7] = TABLES.hi as [
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
      Uint32Array,
    ];
    let lo = this.lo;
    let hi = this.hi;
    let i = 0;
    // Slicing by 8: eight bytes folded in per step.
    for (const end = data.length - 7; i < end; i += 8) {
      const a = (lo ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
      const b = (hi ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24))) >>> 0;
      lo =
        l7[a & 0xff]! ^
        l6[(a >>> 8) & 0xff]! ^
        l5[(a >>> 16) & 0xff]! ^
        l4[a >>> 24]! ^
        l3[b & 0xff]! ^
        l2[(b >>> 8) & 0xff]! ^
        l1[(b >>> 16) & 0xff]! ^
        l0[b >>> 24]!;
      hi =
        h7[a & 0xff]! ^
        h6[(a >>> 8) & 0xff]! ^
        h5[(a >>> 16) & 0xff]! ^
        h4[a >>> 24]! ^
        h3[b & 0xff]! ^
        h2[(b >>> 8) & 0xff]! ^
        h1[(b >>> 16) & 0xff]! ^
        h0[b >>> 24]!;
    }
    for (; i < data.length; i++) {
      const index = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ l0[index]!;
      hi = (hi >>> 8) ^ h0[index]!;
    }
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }

  /** The checksum as Go's Sum(nil) returns it: 8 bytes, big-endian. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE(~this.hi >>> 0, 0);
    out.writeUInt32BE(~this.lo >>> 0, 4);
    return out;
  }

  reset(): void {
    this.lo = 0xffffffff;
    this.hi = 0xffffffff;
  }
}
