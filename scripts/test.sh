#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need,
# checks formatting and vet, then runs every test with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="/usr/local/go/bin:$PATH"
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 30m ./...
echo "== packaging module (deployments/package)"
(cd deployments/package && GOWORK=off go vet ./... && GOWORK=off go test -count=1 ./...)
