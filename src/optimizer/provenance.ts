/**
 * Which layer provides each path of the final root filesystem: the topmost layer that wrote it,
 * after whiteouts and opaque directories of higher layers are applied. Built from the unpack
 * callbacks, so it does not depend on whether the layers were mounted or merged.
 */
export class LayerProvenance {
  private readonly owner = new Map<string, { layer: number; kind: string; size: number }>();

  /** `path` is written by `layer` (a higher layer replaces a lower one). */
  add(path: string, layer: number, kind: string, size = 0): void {
    this.owner.set(path, { layer, kind, size });
  }

  /** A whiteout in `layer` hides `path` and everything under it from lower layers. */
  whiteout(path: string, layer: number): void {
    const current = this.owner.get(path);
    if (current && current.layer !== layer) this.owner.delete(path);
    this.removeBelow(path, layer);
  }

  /** An opaque directory in `layer` hides the lower layers' contents of `dir`. */
  opaque(dir: string, layer: number): void {
    this.removeBelow(dir, layer);
  }

  /** The layer index that provides `path`, or undefined when the image does not contain it. */
  layerOf(path: string): number | undefined {
    return this.owner.get(path)?.layer;
  }

  /** Size in bytes of the regular file at `path` (0 for other entry types). */
  sizeOf(path: string): number {
    return this.owner.get(path)?.size ?? 0;
  }

  kindOf(path: string): string | undefined {
    return this.owner.get(path)?.kind;
  }

  get size(): number {
    return this.owner.size;
  }

  private removeBelow(dir: string, layer: number): void {
    const prefix = dir === '' ? '' : `${dir}/`;
    for (const [path, entry] of this.owner) {
      if (path.startsWith(prefix) && path !== dir && entry.layer !== layer) this.owner.delete(path);
    }
  }
}
