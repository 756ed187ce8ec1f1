# sipis — make help lists the targets.
GO       ?= go
PKG      := github.com/sipis/sipis
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD    := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The commit's time, not the current one: an unchanged tree links to the same binary, so
# `make build` and `make run` do not relink it.
DATE     := $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
LDFLAGS  := -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Build=$(BUILD) -X $(PKG)/internal/version.Date=$(DATE)
SETTINGS ?= Settings.example.xml
FUZZTIME ?= 10s
BENCHTIME ?= 1s
BENCHCOUNT ?= 5

# bash with pipefail, so that `go test ... | tee` fails when a benchmark fails.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: help build run test test-short bench load fuzz lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/sipis and bin/sipis-load, version stamped from git
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sipis ./cmd/sipis
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/sipis-load ./cmd/sipis-load

run: build ## run the server on Settings.example.xml (embedded SQLite under var/)
	./bin/sipis -settings $(SETTINGS)

test: ## the whole test suite, with the race detector (Kamailio, SIPp and Chromium tests included when installed)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

test-short: ## quick tests only (no Kamailio, no browser)
	$(GO) test -short -count=1 ./...

bench: build ## Go benchmarks (medians of BENCHCOUNT runs), sipis vs Kamailio uac_reg (when installed) and the registration load tool
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./internal/... ./pkg/... | tee bench.out
	$(GO) test -run '^$$' -bench '^BenchmarkRefreshVsUacReg$$' -benchtime 1x -count 1 -timeout 60m ./internal/instance -args -uacreg | tee -a bench.out
	./bin/sipis-load -n 10000
	./bin/sipis-load -n 100000
	./bin/sipis-load -api -n 10000 -concurrency 64
	./bin/sipis-load -api -n 10000 -concurrency 256
	./bin/sipis-load -resume -n 1000000 -expires 3600 -window 90s -runs 3 -timeout 30m
	$(GO) test -run '^$$' -bench '^BenchmarkCallPathKamailio$$' -benchtime 3000x -count 3 ./internal/app | tee -a bench.out
	$(GO) test -run '^$$' -bench '^BenchmarkClusterTakeOver$$' -count 1 -timeout 20m ./internal/app | tee -a bench.out

load: build ## the registration load tool alone: make load N=100000
	./bin/sipis-load -n $(or $(N),10000)

fuzz: ## run every fuzz target for FUZZTIME each (default 10s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint: ## gofmt, go vet, and staticcheck when it is installed
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "not gofmt-formatted"; exit 1; }
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed: go install honnef.co/go/tools/cmd/staticcheck@latest"; fi

clean: ## remove build output (not var/, which holds the example's database and keys)
	rm -rf bin bench.out
