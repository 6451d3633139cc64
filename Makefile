# egressd. Targets are phony; none downloads tools implicitly except
# scripts/setup.sh, which installs the system packages the tests use.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Debian versions must start with a digit: tags v1.2.3, else 0.0.0-dev.
PKG_VERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null || echo v0.0.0-dev)
# Go lives in /usr/local/go on a fresh machine of this kind, not always on PATH.
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
BIN     ?= bin/egressd
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: help build run test race fuzz lint bench cache-tests e2e screenshot docker package release farm schema clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## static binary in bin/egressd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/egressd

run: build ## run on the embedded default config (report mode, loopback listeners)
	./$(BIN) serve

test: ## the whole suite: set-up, vet, gofmt, race tests (what CI runs)
	./scripts/test.sh

race: ## go test -race ./... only
	$(GO) test -race -count=1 ./...

fuzz: ## each fuzz target for FUZZTIME (default 20s)
	./scripts/fuzz.sh

lint: ## go vet and gofmt
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

schema: ## regenerate docs/egressd.schema.json from the Go config types (after adding a config key)
	$(GO) run ./cmd/egressd config schema > docs/egressd.schema.json

bench: ## benchmark egressd against direct, Squid and smokescreen; writes docs/benchmarks.md
	./scripts/bench.sh

cache-tests: ## HTTP cache conformance (cache-tests.fyi suite) of egressd and Squid; writes docs/cache-conformance.md
	./scripts/cache-tests.sh

e2e: build ## end-to-end tests in test/ only
	$(GO) test -count=1 ./test/...

screenshot: ## docs/status-page.png, from the status page test in headless Chromium
	./scripts/setup.sh
	STATUS_PAGE_SCREENSHOT=$(CURDIR)/docs/status-page.png $(GO) test -count=1 -run '^TestStatusPage$$' ./test/

package: build ## Debian package in dist/ (nfpm; nested module deployments/package)
	cd deployments/package && GOWORK=off $(GO) run . -root $(CURDIR) -binary $(CURDIR)/$(BIN) -version $(PKG_VERSION) -arch $$($(GO) env GOARCH) -out $(CURDIR)/dist

release: ## binaries, .debs and CycloneDX SBOMs for linux/amd64 and arm64, and SHA256SUMS, in dist/release
	VERSION=$(VERSION) ./scripts/release.sh

farm: build ## 3 egressd behind HAProxy on loopback; prints the client address
	./scripts/setup.sh
	./scripts/farm.sh -b $(BIN)

docker: ## container image (needs a Docker engine)
	docker build -t egressd:$(VERSION) .

clean:
	rm -rf bin
