#!/usr/bin/env bash
# The project's test command: formatting, vet, every Go test with the race detector, and the Node client
# tests. Every step runs even when an earlier one failed (a Go failure used to hide whether the Node
# clients still worked); a summary at the end says which steps failed, and the exit status is non-zero
# if any did.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
skipped=()

# step NAME COMMAND...: runs one step and records its failure.
step() {
  local name=$1
  shift
  echo "== $name"
  if ! "$@"; then
    echo "-- FAILED: $name"
    failed+=("$name")
  fi
}

check_gofmt() {
  local unformatted
  unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*' -not -path '*/node_modules/*')) || return 1
  if [ -n "$unformatted" ]; then
    echo "gofmt would change:"
    echo "$unformatted"
    return 1
  fi
}

node_tests() {
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error && node --test)
}

# The TypeScript example's Go test (examples/nats-ts) compiles and runs it: its packages come first.
examples_npm() {
  (cd examples/nats-ts && npm ci --no-audit --no-fund --loglevel=error)
}

step "gofmt" check_gofmt
step "go vet" go vet ./...
if command -v npm >/dev/null 2>&1 && [ -d examples/nats-ts ]; then
  step "npm ci for examples/nats-ts" examples_npm
fi
step "go test -race" go test -race -count=1 -timeout 15m ./...
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  step "node clients (tests/node: Discordeno proxy mode and discord.js against dd)" node_tests
else
  echo "== node clients: SKIPPED: node is not installed, so the Node client tests in tests/node did not run"
  skipped+=("node clients (node is not installed)")
fi

echo
echo "== summary"
for s in "${skipped[@]+"${skipped[@]}"}"; do
  echo "skipped: $s"
done
if [ ${#failed[@]} -gt 0 ]; then
  for f in "${failed[@]}"; do
    echo "FAILED: $f"
  done
  echo "${#failed[@]} step(s) failed"
  exit 1
fi
echo "every step passed"
