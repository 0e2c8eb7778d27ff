#!/usr/bin/env bash
# One command for a fresh Debian 12 machine (as root): system packages, npm packages,
# native pieces, build, `esgz` and its `ctr-remote` alias on PATH, then the sample job.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

# /usr/local/bin comes before /usr/bin on PATH, so `ctr-remote` finds esgz while Debian's
# reference binary stays at /usr/bin/ctr-remote (npm link would overwrite it: npm's prefix is /usr).
bin_dir="${ESGZ_BIN_DIR:-/usr/local/bin}"
if mkdir -p "$bin_dir" 2>/dev/null && [ -w "$bin_dir" ]; then
  for name in esgz ctr-remote; do ln -sfn "$PWD/bin/run.js" "$bin_dir/$name"; done
  echo "esgz setup: installed esgz and ctr-remote in $bin_dir"
else
  echo "esgz setup: $bin_dir is not writable; run esgz as $PWD/bin/run.js"
fi

npm run --silent sample
