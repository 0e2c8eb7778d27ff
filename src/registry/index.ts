// The registry client's public surface (images and transports live in src/image/).
export { RegistryClient, type RegistryClientOptions, type UploadResult } from './client.js';
export { resolveCredentials, dockerConfigDir, type Credentials } from './credentials.js';
export { parseChallenges, type Challenge } from './challenge.js';
export {
  parseReference,
  formatReference,
  repositoryName,
  registryApiHost,
  isLoopbackRegistry,
  DOCKER_HUB,
  DOCKER_HUB_API_HOST,
  type ImageReference,
} from './reference.js';
