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
# make install: the unit goes where systemd looks for units of this prefix
# (/usr/local/lib/systemd/system, /usr/lib/systemd/system); the rest is data.
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SHAREDIR  ?= $(PREFIX)/share/ntpexp
DOCKER    ?= docker
IMAGE     ?= ntpexp:$(VERSION)
DOCKER_BUILD = $(DOCKER) build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
             --build-arg BRANCH=$(BRANCH) --build-arg BUILDDATE=$(BUILDDATE) --build-arg BUILDUSER=$(BUILDUSER) -t $(IMAGE) .
# Go test timeout for the whole suite; CI allows 90 minutes, we aim under 15.
TEST_TIMEOUT ?= 20m
# Time each fuzz target runs in `make test` (and `make fuzz`).
FUZZTIME ?= 10s
FUZZ_TARGETS := ./ntp:FuzzParse ./ntp:FuzzRespond ./ntp:FuzzPassive ./ntp:FuzzDecodeFrame

.PHONY: all build run test peers lint bench install clean fuzz build-cmd docker docker-build-cmd

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
	$(MAKE) --no-print-directory fuzz

# Each fuzz target for FUZZTIME. The committed corpus (testdata/fuzz) also
# runs in every plain `go test`; a crasher found here is written there and
# must be kept, renamed after what it is.
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) || exit 1; done

peers:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-peers.sh; \
	elif [ "$$CI" = true ]; then echo "make test: CI must run as root to install real peers" >&2; exit 1; \
	else echo "make test: NOT ROOT: real peers are not installed; end-to-end tests will SKIP (run 'sudo make test' for the full suite)" >&2; fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Speed and memory, measured, not asserted by timed tests: Go
# microbenchmarks (codec and request path, client table bytes per client,
# metrics, store ingest against a plain go-sqlite3 baseline, export against
# the sqlite3 CLI), then ntpexp side by side with chronyd and a UDP echo
# ceiling under the same load. docs/performance.md records a run.
BENCH_DURATION ?= 10s
# Distinct client addresses for the memory-per-client run of `make bench` (0 skips it).
BENCH_SCALE ?= 1000000
bench: build
	$(GO) build -o $(BINDIR)/ ./bench/udpecho
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./ntp/ ./exporter/
	$(GO) test -run '^$$' -bench . -benchmem ./sqlitestore/
	$(GO) run ./bench/sidebyside -bin $(BINDIR) -duration $(BENCH_DURATION) -scale $(BENCH_SCALE)

# Installs the binary, the systemd unit (its ExecStart pointed at
# $(PREFIX)/bin/ntpexp), the example config, dashboards and alert rules.
# Never touches /etc: see docs/deployment.md for the config file.
# Packagers: make install PREFIX=/usr DESTDIR=$$PWD/pkgroot
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SHAREDIR)/dashboards $(DESTDIR)$(SHAREDIR)/alerts
	install -m 0755 $(BINDIR)/ntpexp $(DESTDIR)$(PREFIX)/bin/ntpexp
	sed 's|/usr/local/bin/ntpexp|$(PREFIX)/bin/ntpexp|g' deploy/systemd/ntpexp.service >$(DESTDIR)$(UNITDIR)/ntpexp.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ntpexp.service
	install -m 0644 deploy/config.example.json $(DESTDIR)$(SHAREDIR)/config.example.json
	install -m 0644 $(wildcard dashboards/*.json) $(DESTDIR)$(SHAREDIR)/dashboards/
	install -m 0644 $(filter-out %.test.yml,$(wildcard alerts/*.yml)) $(DESTDIR)$(SHAREDIR)/alerts/

# build-cmd prints the exact build command. The Dockerfile runs `make build`
# itself, so the image is built the same way (deploy/deploy_test.go checks).
build-cmd:
	@$(MAKE) --no-print-directory -n build

# The container image (Dockerfile): the same `make build`, with the version
# information passed in (the build context has no .git).
docker-build-cmd:
	@echo '$(DOCKER_BUILD)'

docker:
	$(DOCKER_BUILD)

clean:
	rm -rf $(BINDIR)
