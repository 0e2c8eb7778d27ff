/**
 * Which layer provides each path of the final root filesystem: the topmost layer that wrote it,
 * after whiteouts and opaque directories of higher layers are applied. Built from the unpack
 * callbacks, so it does not depend on whether the layers were mounted or merged. Layers are
 * given lowest first. Each call costs the depth of its path plus what it removes: a layer of
 * 100k whiteouts must not scan every known path 100k times.
 */
export class LayerProvenance {
  private readonly owner = new Map<string, { layer: number; kind: string; size: number }>();
  /** Directory → its children that are known paths or lead to some ("" is the root). */
  private readonly children = new Map<string, Set<string>>();
  /** `layer:dir` pairs already emptied of lower layers' paths (nothing lower is added later). */
  private readonly cleared = new Set<string>();

  /** `path` is written by `layer` (a higher layer replaces a lower one). */
  add(path: string, layer: number, kind: string, size = 0): void {
    this.owner.set(path, { layer, kind, size });
    for (let child = path; child !== '';) {
      const parent = parentOf(child);
      let set = this.children.get(parent);
      if (!set) this.children.set(parent, (set = new Set()));
      if (set.has(child)) break;
      set.add(child);
      child = parent;
    }
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
    for (let at = dir; ; at = parentOf(at)) {
      if (this.cleared.has(`${layer}:${at}`)) return;
      if (at === '') break;
    }
    this.cleared.add(`${layer}:${dir}`);
    this.prune(dir, layer);
  }

  /** Drops the paths under `dir` that lower layers wrote, and index entries that lead nowhere now. */
  private prune(dir: string, layer: number): void {
    const set = this.children.get(dir);
    if (!set) return;
    for (const child of set) {
      this.prune(child, layer);
      const entry = this.owner.get(child);
      if (entry && entry.layer !== layer) this.owner.delete(child);
      if (!this.owner.has(child) && !this.children.get(child)?.size) {
        set.delete(child);
        this.children.delete(child);
      }
    }
  }
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}
