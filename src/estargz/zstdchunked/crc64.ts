/**
 * CRC-64 with the ISO polynomial, as Go's hash/crc64 computes it with crc64.MakeTable(crc64.ISO):
 * tar-split stores it (8 bytes, big-endian) for every file payload. The 64-bit register is kept as
 * two 32-bit halves: BigInt arithmetic per byte would cost more than the compression it runs next to.
 */

/** The ISO polynomial, reversed (0xD800000000000000), high half; the low half is zero. */
const ISO_POLY_HI = 0xd8000000;

function makeTables(): { lo: Uint32Array; hi: Uint32Array } {
  const lo = new Uint32Array(256);
  const hi = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let l = i;
    let h = 0;
    for (let bit = 0; bit < 8; bit++) {
      const carry = l & 1;
      l = ((l >>> 1) | ((h & 1) << 31)) >>> 0;
      h = h >>> 1;
      if (carry) h = (h ^ ISO_POLY_HI) >>> 0;
    }
    lo[i] = l;
    hi[i] = h;
  }
  return { lo, hi };
}

const TABLES = makeTables();

export class Crc64 {
  // The register holds ^crc, as Go's update loop does.
  private lo = 0xffffffff;
  private hi = 0xffffffff;

  update(data: Uint8Array): void {
    const tLo = TABLES.lo;
    const tHi = TABLES.hi;
    let lo = this.lo;
    let hi = this.hi;
    for (let i = 0; i < data.length; i++) {
      const index = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ tLo[index]!;
      hi = (hi >>> 8) ^ tHi[index]!;
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
