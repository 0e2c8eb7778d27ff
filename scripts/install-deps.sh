#!/usr/bin/env bash
# Installs what esgz and its test suite need, and only what is missing: Debian packages,
# npm packages (which build the native addons at install), the TypeScript build, then the Node
# LTS the tests also run under.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  runc zstd busybox-static libfuse2 fuse3 libfuse-dev pkg-config
  docker-registry skopeo libdeflate-dev libdeflate-tools debootstrap time
  gcc make g++ python3 ca-certificates apache2-utils
  pigz isal  # --estargz-gzip-helper pigz|unpigz|igzip
  attr
  containerd stargz-snapshotter
  podman  # test oracle: podman's zstd:chunked partial pull of esgz images (test/estargz/zstdchunked/podman.test.ts)
  golang-github-containers-common  # /usr/share/containers/seccomp.json: the workload's seccomp profile (src/runtime/seccomp.ts)
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "esgz setup: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  echo "esgz setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  node scripts/build-native.mjs
fi
npm run build --silent
# The second Node the test suite runs under (scripts/test.sh), from the npm registry into a cache.
bash scripts/node-lts.sh >/dev/null
