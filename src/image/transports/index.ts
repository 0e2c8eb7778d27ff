// One place that turns a user's image argument into a source or a sink:
//   oci:DIR[:TAG|@DIGEST]        an OCI image layout directory
//   oci-archive:FILE[:TAG]       a tar of an OCI image layout (skopeo's name; `image export` writes one)
//   docker-archive:FILE[:TAG]    a `docker save` tar file
//   local:NAME                   esgz's content store under the state root (`image pull`, `image ls`)
//   [docker://]REGISTRY/REPO[:TAG|@DIGEST]   a registry (Docker Hub shorthands allowed)
// A name with no transport prefix is a registry reference unless `unqualified: 'local'` says it
// names the store, as every image name does for ctr (`registry2:5000/app:esgz` included).
import { EsgzError } from '../../errors.js';
import { parseDigest } from '../../oci/digest.js';
import type { ImageSink, ImageSource } from '../types.js';
import { openDockerArchiveSink, openDockerArchiveSource } from './docker-archive.js';
import { openOciSink, openOciSource } from './oci-layout.js';
import { LOCAL_PREFIX, openLocalSink, openLocalSource, type StoreLocation } from './local.js';
import { openOciArchiveSink, openOciArchiveSource } from './oci-archive.js';
import type { RegistryOptions } from './registry.js';

export interface TransportOptions extends RegistryOptions {
  /** Where `local:` names live (default: the default state root, namespace `default`). */
  store?: StoreLocation;
  /** What a name without a transport prefix means: a registry reference (default) or a `local:` name. */
  unqualified?: 'registry' | 'local';
}

export type TransportReference =
  | { transport: 'oci'; dir: string; tag?: string; digest?: string }
  | { transport: 'docker-archive' | 'oci-archive'; file: string; tag?: string }
  | { transport: 'local'; name: string }
  | { transport: 'registry'; reference: string };

const TAG_PATTERN = /^[\w][\w.-]{0,127}$/;
/** Transports other tools (skopeo, containers/image) accept and esgz does not. */
const OTHER_TRANSPORTS = ['dir', 'docker-daemon', 'containers-storage', 'tarball', 'sif', 'ostree'];

export function parseTransportReference(
  spec: string,
  options: Pick<TransportOptions, 'unqualified'> = {},
): TransportReference {
  const bad = (why: string): never => {
    throw new EsgzError('BAD_REFERENCE', `invalid image "${spec}": ${why}`);
  };
  if (spec.startsWith('oci:')) {
    let rest = spec.slice('oci:'.length);
    let digest: string | undefined;
    const at = rest.lastIndexOf('@');
    if (at >= 0 && /^[a-z0-9]+:/.test(rest.slice(at + 1))) {
      digest = rest.slice(at + 1);
      rest = rest.slice(0, at);
      try {
        parseDigest(digest, 'digest');
      } catch (err) {
        bad((err as Error).message);
      }
    }
    let tag: string | undefined;
    const colon = rest.lastIndexOf(':');
    if (colon >= 0 && !rest.slice(colon + 1).includes('/')) {
      tag = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
      if (!TAG_PATTERN.test(tag)) bad(`bad tag "${tag}" (letters, digits, '_', '.', '-'; at most 128)`);
    }
    if (rest.length === 0) bad('expected oci:DIR[:TAG]');
    if (tag !== undefined && digest !== undefined) bad('give a tag or a digest, not both');
    return {
      transport: 'oci',
      dir: rest,
      ...(tag !== undefined ? { tag } : {}),
      ...(digest !== undefined ? { digest } : {}),
    };
  }
  for (const transport of ['docker-archive', 'oci-archive'] as const) {
    if (!spec.startsWith(`${transport}:`)) continue;
    const rest = spec.slice(transport.length + 1);
    // File names rarely hold ':'; the tag (`name:tag`, as `docker save` records it) may.
    const colon = rest.indexOf(':');
    const file = colon >= 0 ? rest.slice(0, colon) : rest;
    const tag = colon >= 0 ? rest.slice(colon + 1) : undefined;
    if (file.length === 0) bad(`expected ${transport}:FILE[:TAG]`);
    if (tag !== undefined && (tag.length === 0 || /\s/.test(tag))) bad(`bad tag "${tag}"`);
    return { transport, file, ...(tag !== undefined ? { tag } : {}) };
  }
  if (spec.startsWith(LOCAL_PREFIX)) {
    const name = spec.slice(LOCAL_PREFIX.length);
    if (name.length === 0 || /\s/.test(name)) bad('expected local:NAME');
    return { transport: 'local', name };
  }
  if (spec.startsWith('docker://')) return { transport: 'registry', reference: spec.slice('docker://'.length) };
  const scheme = /^([a-z][a-z0-9+.-]*):(?!\d+(\/|$))/.exec(spec);
  if (scheme && (OTHER_TRANSPORTS.includes(scheme[1]!) || spec.startsWith(`${scheme[1]}://`))) {
    bad(
      `transport "${scheme[1]}:" is not supported (use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG], local:NAME or REGISTRY/REPO[:TAG])`,
    );
  }
  if (options.unqualified === 'local') return { transport: 'local', name: spec };
  return { transport: 'registry', reference: spec };
}

export async function openSource(spec: string, options: TransportOptions = {}): Promise<ImageSource> {
  const ref = parseTransportReference(spec, options);
  switch (ref.transport) {
    case 'oci':
      return openOciSource(ref);
    case 'oci-archive':
      return openOciArchiveSource(ref);
    case 'docker-archive':
      return openDockerArchiveSource(ref);
    case 'local':
      return openLocalSource(ref.name, options.store);
    case 'registry':
      // Loaded on demand: the HTTP stack is most of a local conversion's start-up time.
      return (await import('./registry.js')).openRegistrySource(ref.reference, options);
  }
}

export async function openSink(spec: string, options: TransportOptions = {}): Promise<ImageSink> {
  const ref = parseTransportReference(spec, options);
  switch (ref.transport) {
    case 'oci':
      return openOciSink(ref);
    case 'oci-archive':
      return openOciArchiveSink(ref);
    case 'docker-archive':
      return openDockerArchiveSink(ref);
    case 'local':
      return openLocalSink(ref.name, options.store);
    case 'registry':
      return (await import('./registry.js')).openRegistrySink(ref.reference, options);
  }
}
