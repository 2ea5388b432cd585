# Thin wrapper over the go tool; see README.md.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := build/bin

.PHONY: all build test test-short deps lint clean

all: build

## build: the server, the admin CLI and the client into build/bin
build:
	mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/livepatch-server ./cmd/livepatch-admin ./cmd/livepatch-client

## deps: install what the tests need on a Debian/Ubuntu machine (PostgreSQL, haproxy, htpasswd)
deps:
	./.ci/deps

## test: every test, with the race detector, against real PostgreSQL and haproxy
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

## test-short: the fast lane: unit tests, no deployments nor whole-program runs (tests/README.md)
test-short:
	$(GO) test -short -count=1 ./...

## lint: gofmt and go vet
lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf build

## charms: build/livepatch.charm and build/ubuntu-advantage.charm, validated with juju/charm/v12
## CHARMS_BIN is where the programs are built before they are copied into the charms: kept
## between runs, so that go build links only what changed (the tests point it at their
## shared build directory, internal/testbin).
CHARMS_OUT ?= build
CHARMS_STAGE := $(CHARMS_OUT)/stage
CHARMS_BIN ?= $(CHARMS_OUT)/charms-bin
.PHONY: charms
charms:
	rm -rf $(CHARMS_STAGE)
	mkdir -p $(CHARMS_STAGE)/livepatch/bin $(CHARMS_STAGE)/ubuntu-advantage $(CHARMS_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(CHARMS_BIN)/ \
		./cmd/livepatch-charm ./cmd/ubuntu-advantage-charm ./cmd/livepatch-server
	cp $(CHARMS_BIN)/livepatch-charm $(CHARMS_STAGE)/livepatch/dispatch
	cp $(CHARMS_BIN)/ubuntu-advantage-charm $(CHARMS_STAGE)/ubuntu-advantage/dispatch
	cp $(CHARMS_BIN)/livepatch-server $(CHARMS_STAGE)/livepatch/bin/livepatch-server
	cp charms/livepatch/metadata.yaml charms/livepatch/config.yaml charms/livepatch/actions.yaml \
		charms/livepatch/charmcraft.yaml charms/livepatch/README.md $(CHARMS_STAGE)/livepatch/
	cp charms/ubuntu-advantage/metadata.yaml charms/ubuntu-advantage/config.yaml \
		charms/ubuntu-advantage/charmcraft.yaml charms/ubuntu-advantage/README.md $(CHARMS_STAGE)/ubuntu-advantage/
	$(GO) run ./charms/pack -out $(CHARMS_OUT) -bundle bundle/bundle.yaml -overlay bundle/local-overlay.yaml \
		-public bundle/testdata $(CHARMS_STAGE)/livepatch $(CHARMS_STAGE)/ubuntu-advantage

## bench: the load and benchmark harness (tests/load): BENCH_SIZE=quick (a few minutes) or
## full; check-ins, downloads, check-ins with and without a rollout policy, fleet reports,
## then the charm hooks (the e2e deploy bench);
## prints a table and writes docs/benchmarks.md. BENCH_FLAGS passes more lpbench flags
## (e.g. BENCH_FLAGS='-only hooks').
BENCH_SIZE  ?= quick
BENCH_FLAGS ?=
BENCH_BIN   := build/bench/bin
.PHONY: bench
bench: deps
	./tests/load/deps
	mkdir -p $(BENCH_BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BENCH_BIN)/ ./cmd/livepatch-server ./tests/load/cmd/...
	$(BENCH_BIN)/lpbench -size $(BENCH_SIZE) -bin $(BENCH_BIN) -work build/bench/run -out docs/benchmarks.md $(BENCH_FLAGS)

## soak: the harness's soak phase alone (lpbench -only soak; not part of make test, nor of
## make bench's default phases): 1,000,000 distinct machines checking in at 3,000/s
## through haproxy for 30 minutes while retention and the stale-machine job run; p99 per
## minute and the tables' sizes at start, middle and end, written to docs/soak.md.
## SOAK_FLAGS passes more lpbench flags (e.g. SOAK_FLAGS='-soak-duration 3m').
SOAK_FLAGS ?=
SOAK_OUT   ?= docs/soak.md
.PHONY: soak
soak: deps
	./tests/load/deps
	mkdir -p $(BENCH_BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BENCH_BIN)/ ./cmd/livepatch-server ./tests/load/cmd/...
	$(BENCH_BIN)/lpbench -only soak -size $(BENCH_SIZE) -bin $(BENCH_BIN) -work build/bench/soak -out $(SOAK_OUT) $(SOAK_FLAGS)

## jujusim: the Juju model emulator CLI (tests/cmd/jujusim) into build/bin; see tests/README.md
.PHONY: jujusim test-emulator
jujusim:
	mkdir -p $(BIN)
	$(GO) build -o $(BIN)/jujusim ./tests/cmd/jujusim

## test-emulator: the emulator's own tests (hook machinery, stand-ins, CLI)
test-emulator:
	$(GO) test -race -count=1 ./tests/jujusim/... ./tests/standin/... ./tests/cmd/...

## reliability: the full failure drills and zero-downtime rolling upgrade (tests/reliability)
## under continuous check-ins, with the measured table of docs/reliability.md rewritten.
## `go test ./tests/reliability/` (and make test) runs the short variant.
.PHONY: reliability
reliability: deps
	LIVEPATCH_RELIABILITY=full LIVEPATCH_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md \
		$(GO) test -count=1 -timeout 60m -v -run 'TestReliability|TestMigrations' ./tests/reliability/

## demo: deploy the bundle in the emulator and walk the deployment guide, enrolling a
## machine (tests/demo/demo.sh); the model keeps running. demo-down removes it.
.PHONY: demo demo-down
demo: deps
	./tests/demo/demo.sh

demo-down:
	./tests/demo/demo.sh down

## demo-chain: the demo's deployment as a central one serving downstream servers
## (sync_server), a regional deployment in a second model syncing from it with a sync
## token and its signing key, and a machine patched through the regional one
## (tests/demo/demo.sh chain). demo-chain-down removes both models.
.PHONY: demo-chain demo-chain-down
demo-chain: deps
	./tests/demo/demo.sh chain

demo-chain-down: demo-down
