import { EsgzError } from '../errors.js';
import { parseDigest } from '../oci/digest.js';

/**
 * Image references as docker and containerd write them (distribution's reference grammar):
 * `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`, with Docker Hub's shorthands expanded
 * (`ubuntu` -> `docker.io/library/ubuntu:latest`).
 */
export interface ImageReference {
  /** Registry as users name it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `localhost`. */
  registry: string;
  /** Repository path inside the registry: `library/ubuntu`. */
  repository: string;
  /** Set unless only a digest was given; `latest` when neither was given. */
  tag?: string;
  /** When present it wins over the tag for fetching (the tag is kept for messages and pushes). */
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** Docker Hub's registry API does not live at docker.io. */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';
const DEFAULT_TAG = 'latest';

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_PATTERN = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const PATH_COMPONENT_PATTERN = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_PATTERN = /^[\w][\w.-]{0,127}$/;
const MAX_NAME_LENGTH = 255;

/** Parses `input`, naming it in a BAD_REFERENCE error when it is not a valid image reference. */
export function parseReference(input: string): ImageReference {
  const fail = (why: string): never => {
    throw new EsgzError('BAD_REFERENCE', `invalid image reference "${input}": ${why}`);
  };
  if (input.length === 0) fail('empty');
  if (/\s/.test(input)) fail('contains whitespace');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      parseDigest(digest, 'digest');
    } catch (err) {
      fail(
        `bad digest "${digest}"${err instanceof EsgzError && err.code === 'UNSUPPORTED' ? ' (unsupported algorithm)' : ''}`,
      );
    }
  }

  // A tag is what follows the last colon, unless that colon is part of DOMAIN:PORT (then a slash follows it).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0 && !rest.slice(colon + 1).includes('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_PATTERN.test(tag)) fail(`bad tag "${tag}"`);
  }

  if (rest.length === 0) fail('no repository name');
  let registry: string;
  let repository: string;
  const slash = rest.indexOf('/');
  const first = slash >= 0 ? rest.slice(0, slash) : '';
  // Same rule as docker: the first component is a registry only if it looks like a host.
  if (
    slash >= 0 &&
    (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())
  ) {
    registry = first;
    repository = rest.slice(slash + 1);
    if (!DOMAIN_PATTERN.test(registry)) fail(`bad registry host "${registry}"`);
  } else {
    registry = DOCKER_HUB;
    repository = rest;
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API_HOST) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;

  if (repository.length === 0) fail('no repository name');
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT_PATTERN.test(component)) {
      fail(
        component !== component.toLowerCase()
          ? 'repository name must be lowercase'
          : `bad repository path component "${component}"`,
      );
    }
  }
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH) fail(`name longer than ${MAX_NAME_LENGTH} characters`);

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const ref: ImageReference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** The fully qualified form: `docker.io/library/ubuntu:latest`, `host:5000/a/b@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** `registry/repository`, no tag or digest. */
export function repositoryName(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The host[:port] to send API requests to. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
}

/** Loopback registries: the only ones allowed to fall back to plain HTTP when TLS is refused. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(0, registry.indexOf(']') + 1) : registry.split(':')[0]!;
  return host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
