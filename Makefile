# ntpexp Makefile. The Dockerfile runs the same build command (see
# build-cmd below; a test checks that they agree).

GO        ?= go
PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    := bin
PKG       := github.com/ntpexp/ntpexp
VERSION   ?= $(shell cat VERSION 2>/dev/null || echo 0.0.0)
REVISION  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILDDATE ?= $(shell date -u +%Y%m%d-%H:%M:%S)
BUILDUSER ?= $(shell id -un 2>/dev/null || echo unknown)@$(shell hostname 2>/dev/null || echo unknown)
VPKG      := github.com/prometheus/common/version
LDFLAGS   := -s -w -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) \
             -X $(VPKG).Branch=$(BRANCH) -X $(VPKG).BuildUser=$(BUILDUSER) -X $(VPKG).BuildDate=$(BUILDDATE)
# Go test timeout for the whole suite; CI allows 90 minutes, we aim under 15.
TEST_TIMEOUT ?= 20m

.PHONY: all build run test unit e2e peers lint bench install clean fuzz

all: build

build:
	CGO_ENABLED=1 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BINDIR)/ ./cmd/...

# The main job: serve NTP on port 123 and metrics on :10123 with the
# built-in default configuration; the database goes in the working directory.
run: build
	./$(BINDIR)/ntpexp serve

# Everything: installs the real peers (as root), lints, runs every test
# including the end-to-end ones against real chronyd, ntpdig, NTPsec ntpd,
# Prometheus and Alertmanager.
test: peers lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

peers:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-peers.sh; \
	elif [ "$$CI" = true ]; then echo "make test: CI must run as root to install real peers" >&2; exit 1; \
	else echo "make test: NOT ROOT: real peers are not installed; end-to-end tests will SKIP (run 'sudo make test' for the full suite)" >&2; fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./ntp/ ./exporter/ ./sqlitestore/

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/ntpexp/dashboards $(DESTDIR)$(PREFIX)/share/ntpexp/alerts
	install -m 0755 $(BINDIR)/ntpexp $(DESTDIR)$(PREFIX)/bin/ntpexp

clean:
	rm -rf $(BINDIR)
