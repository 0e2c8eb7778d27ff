#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, checks types, lint
# (with the import-boundary rule) and formatting (Prettier) of src/ and test/ once, then runs
# vitest twice: under the machine's Node (20 here) and under the Node LTS of scripts/node-lts.sh (24), both against the
# same build and the same native addons (N-API, so one build loads in both).
# Arguments go to both vitest runs, e.g. `npm test -- test/oci`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm run --silent typecheck
npm run --silent lint
npm run --silent format:check

nodes=("$(command -v node)")
lts="$(bash scripts/node-lts.sh)"
[ "$("$lts" --version)" = "$(node --version)" ] || nodes+=("$lts")
# test/harness/node-versions.ts: the CLI is also run under each of these to compare outputs.
ESGZ_TEST_NODES="$(IFS=:; echo "${nodes[*]}")"
export ESGZ_TEST_NODES

summary=()
failed=0
for node in "${nodes[@]}"; do
  version="$("$node" --version)"
  echo "esgz test: vitest under node $version ($node)"
  started=$SECONDS
  # The node first on PATH is the one the tests' CLI runs (`node bin/run.js`) use. The machine's
  # own node keeps PATH as it is (its directory may not come first, e.g. /usr/local/bin).
  path="$PATH"
  [ "$node" = "${nodes[0]}" ] || path="$(dirname "$node"):$PATH"
  # Tests that take minutes (test/harness/long-tests.ts) run in the first pass only.
  long=1
  [ "$node" = "${nodes[0]}" ] || long=0
  if ESGZ_TEST_LONG=$long PATH="$path" "$node" node_modules/vitest/vitest.mjs run "$@"; then result=passed; else result=FAILED; failed=1; fi
  summary+=("node $version: $result in $((SECONDS - started)) s")
done
printf 'esgz test: %s\n' "${summary[@]}"
exit "$failed"
