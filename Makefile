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

## lint: gofmt and go vet
lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf build
