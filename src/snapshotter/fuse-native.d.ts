// Minimal typings for fuse-native 2.2.6 (the package ships none): only what fusefs.ts uses.
declare module 'fuse-native' {
  type Cb<T extends unknown[] = []> = (code: number, ...rest: T) => void;

  export interface FuseStat {
    mode: number;
    uid: number;
    gid: number;
    size: number;
    dev?: number;
    nlink: number;
    ino: number;
    rdev: number;
    blksize?: number;
    blocks?: number;
    atime: Date | number;
    mtime: Date | number;
    ctime: Date | number;
  }

  export interface FuseOps {
    init?(cb: Cb): void;
    getattr?(path: string, cb: (code: number, stat?: FuseStat) => void): void;
    fgetattr?(path: string, fd: number, cb: (code: number, stat?: FuseStat) => void): void;
    readdir?(path: string, cb: (code: number, names?: string[], stats?: FuseStat[]) => void): void;
    readlink?(path: string, cb: (code: number, target?: string) => void): void;
    open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
    opendir?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
    release?(path: string, fd: number, cb: Cb): void;
    releasedir?(path: string, fd: number, cb: Cb): void;
    read?(
      path: string,
      fd: number,
      buffer: Buffer,
      length: number,
      position: number,
      cb: (result: number) => void,
    ): void;
    getxattr?(path: string, name: string, position: number, cb: (code: number, value?: Buffer | null) => void): void;
    listxattr?(path: string, cb: (code: number, names?: string[]) => void): void;
    statfs?(path: string, cb: (code: number, statfs?: Record<string, number>) => void): void;
    access?(path: string, mode: number, cb: Cb): void;
  }

  export interface FuseOptions {
    timeout?: number | false | Record<string, number | false>;
    force?: boolean;
    mkdir?: boolean;
    debug?: boolean;
    allowOther?: boolean;
    allowRoot?: boolean;
    defaultPermissions?: boolean;
    kernelCache?: boolean;
    autoCache?: boolean;
    fsname?: string;
    subtype?: string;
    entryTimeout?: number;
    attrTimeout?: number;
    maxRead?: number;
  }

  class Fuse {
    constructor(mnt: string, ops: FuseOps, opts?: FuseOptions);
    readonly mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static EPERM: number;
    static ENOENT: number;
    static EIO: number;
    static EACCES: number;
    static ENOTDIR: number;
    static EISDIR: number;
    static EINVAL: number;
    static EROFS: number;
    static ENODATA: number;
    static ERANGE: number;
    static ETIMEDOUT: number;
  }
  export default Fuse;
}
