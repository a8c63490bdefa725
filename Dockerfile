# syntax=docker/dockerfile:1
# ntpexp container image. Build it with `make docker` (or see
# `make docker-build-cmd`); docs/deployment.md explains how to run it.
#
# The builder runs `make build`, the very command a developer runs, so the
# binary in the image is built exactly like bin/ntpexp (deploy/deploy_test.go
# checks this file against the Makefile and go.mod).

FROM golang:1.26-bookworm AS builder
# golang:*-bookworm already has gcc, libc6-dev and make (go-sqlite3 is cgo).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Version information: the build context has no .git, so pass it in
# (`make docker` does); whatever is not passed gets the Makefile's default.
ARG VERSION
ARG REVISION
ARG BRANCH
ARG BUILDDATE
ARG BUILDUSER
RUN make build ${VERSION:+"VERSION=$VERSION"} ${REVISION:+"REVISION=$REVISION"} ${BRANCH:+"BRANCH=$BRANCH"} ${BUILDDATE:+"BUILDDATE=$BUILDDATE"} ${BUILDUSER:+"BUILDUSER=$BUILDUSER"}
# Port 123 without root: a file capability on the binary. It survives
# COPY --from with BuildKit (Docker's builder since 23.0), but not a chown:
# the binary stays root-owned. docs/deployment.md says what to do when a
# builder drops it, and why the capability is ignored under
# --security-opt no-new-privileges.
RUN install -D -m 0755 bin/ntpexp /out/usr/local/bin/ntpexp \
 && setcap cap_net_bind_service=+ep /out/usr/local/bin/ntpexp \
 && install -D -m 0644 deploy/config.example.json /out/usr/local/share/ntpexp/config.example.json

FROM debian:bookworm-slim
# No extra packages: the health check below uses bash, which the image has.
COPY --from=builder /out/usr/local/ /usr/local/
RUN install -d -o 65532 -g 65532 -m 0700 /var/lib/ntpexp
USER 65532:65532
WORKDIR /var/lib/ntpexp
VOLUME /var/lib/ntpexp
EXPOSE 123/udp 10123/tcp
# /-/healthy over plain HTTP on the default web port. With TLS
# (--web.config.file) or another port, override it: docker run --health-cmd ...
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/10123 && printf 'GET /-/healthy HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r proto code rest <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/ntpexp"]
CMD ["serve", "--database.path=/var/lib/ntpexp/ntpexp.db"]
