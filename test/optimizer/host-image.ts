import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import type { TestEntry } from './tar-helpers.js';

/**
 * Layer entries that reproduce chosen host files inside an image, including every symlink met
 * on the way (Debian's merged /usr: /lib64 -> usr/lib64, ld.so symlinks), so programs copied
 * from this Debian host run in the container exactly as they do here.
 */
export function hostFilesEntries(paths: string[]): TestEntry[] {
  const entries = new Map<string, TestEntry>();
  const addDirs = (dir: string) => {
    const parts = dir.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const name = parts.slice(0, i).join('/');
      if (!entries.has(name)) entries.set(name, { name: `${name}/`, type: 'directory' });
    }
  };
  const visit = (path: string, depth = 0): void => {
    if (depth > 40) throw new Error(`symlink loop at ${path}`);
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const sub = `/${parts.slice(0, i).join('/')}`;
      const st = lstatSync(sub);
      const name = sub.slice(1);
      if (st.isSymbolicLink()) {
        const target = readlinkSync(sub);
        addDirs(dirname(name) === '.' ? '' : dirname(name));
        entries.set(name, { name, type: 'symlink', linkname: target });
        const resolved = posix.resolve(posix.dirname(sub), target);
        visit(posix.join(resolved, ...parts.slice(i)), depth + 1);
        return;
      }
      if (i === parts.length) {
        if (st.isDirectory()) addDirs(name);
        else {
          addDirs(dirname(name));
          entries.set(name, { name, content: readFileSync(sub), mode: st.mode & 0o7777 });
        }
      }
    }
  };
  for (const p of paths) visit(p);
  // Directories before their contents, everything else in a stable order.
  return [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** The files /usr/bin/python3.11 needs to start on this host, found by asking it. */
export function pythonStartupFiles(): string[] {
  const libs = ['/lib64/ld-linux-x86-64.so.2', '/etc/ld.so.cache'];
  for (const lib of ['libc.so.6', 'libm.so.6', 'libz.so.1', 'libexpat.so.1']) libs.push(`/lib/x86_64-linux-gnu/${lib}`);
  const stdlib = '/usr/lib/python3.11';
  const modules = ['encodings/__init__.py', 'encodings/aliases.py', 'encodings/utf_8.py', 'codecs.py', 'io.py', 'abc.py', 'os.py', 'stat.py', 'posixpath.py', 'genericpath.py', '_collections_abc.py', 'site.py', '_sitebuiltins.py'];
  const files = ['/usr/bin/python3', ...libs];
  for (const m of modules) {
    files.push(join(stdlib, m));
    const pyc = join(stdlib, dirname(m), '__pycache__', `${m.split('/').pop()!.replace(/\.py$/, '')}.cpython-311.pyc`);
    if (existsSync(pyc)) files.push(pyc);
  }
  files.push(join(stdlib, 'lib-dynload'));
  return files;
}

export function hasHostPython(): boolean {
  return existsSync('/usr/bin/python3.11') && existsSync('/usr/lib/python3.11/encodings/__init__.py') && readdirSync('/usr/lib/python3.11').length > 0;
}
