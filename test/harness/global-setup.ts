// Suite-wide setup: services the integration tests share (filled in by the registry harness).
export default async function setup(): Promise<() => Promise<void>> {
  return async () => {};
}
