#!/bin/bash
# Builds bench/reference-snapshotter/main.go (the stargz snapshotter as a containerd proxy plugin)
# from Debian's Go sources, offline, in GOPATH mode: no module download.
#   bash bench/reference-snapshotter/setup.sh   ->  bench/.cache/stargz-snapshotter-grpc
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../.cache/stargz-snapshotter-grpc"
missing=()
for pkg in golang-go golang-github-containerd-stargz-snapshotter-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/esgz-bench/reference-snapshotter"
cp "$here/main.go" "$gopath/src/esgz-bench/reference-snapshotter/"
mkdir -p "$(dirname "$out")"
# Debian's Go libraries live in /usr/share/gocode/src; GOPATH mode builds against them as they are.
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOCACHE="$gopath/cache" \
  go build -o "$out" esgz-bench/reference-snapshotter
echo "$out"
