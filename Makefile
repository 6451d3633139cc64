# egressd. Targets are phony; none downloads tools implicitly except
# scripts/setup.sh, which installs the system packages the tests use.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     ?= bin/egressd
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: help build run test race fuzz lint bench e2e docker package farm clean

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

bench: ## benchmark egressd against direct, Squid and smokescreen; writes docs/benchmarks.md
	./scripts/bench.sh

e2e: build ## end-to-end tests in test/ only
	$(GO) test -count=1 ./test/...

docker: ## container image (needs a Docker engine)
	docker build -t egressd:$(VERSION) .

clean:
	rm -rf bin
