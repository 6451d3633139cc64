# syntax=docker/dockerfile:1
# Multi-stage, multi-arch build: a static egressd on a distroless, non-root
# base. The build stage runs on the builder's own platform and cross-compiles
# for the target (no emulation):
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v1.2.3 -t egressd:v1.2.3 .
# Base images are pinned by digest (multi-arch index digests; the newest
# found on 2026-12-07). Renew them deliberately, e.g. with
#   docker buildx imagetools inspect golang:1.26
#   docker buildx imagetools inspect gcr.io/distroless/static:nonroot
FROM --platform=$BUILDPLATFORM golang:1.26@sha256:3c3e25a4da13fd0478eed2df1eb35a0e667094a7124d3993a6a1d30f71c17e79 AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
	go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/egressd ./cmd/egressd

FROM gcr.io/distroless/static:nonroot@sha256:1c2c046bc09ed40fad370b599a0b1ae7987f55b01e247cf27a7c27cd97e5bbc7
COPY --from=build /out/egressd /egressd
COPY deployments/egressd.example.yaml /etc/egressd/egressd.yaml
COPY LICENSE /usr/share/doc/egressd/LICENSE
USER nonroot
# Keeps the Go runtime's sysmon thread out of deep sleep: less CPU per new
# connection (README, "Runtime settings for a farm"). egressd logs the
# GODEBUG in force at start.
ENV GODEBUG=schedtrace=2147483647
EXPOSE 3128 1080 9090
# The image has no shell or curl: egressd asks its own /readyz (listen.admin
# of the config) and exits 0 or 1. A config with listen.admin "" needs
# HEALTHCHECK NONE or --addr.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
	CMD ["/egressd", "health", "--config", "/etc/egressd/egressd.yaml", "--timeout", "4s"]
ENTRYPOINT ["/egressd", "serve"]
CMD ["--config", "/etc/egressd/egressd.yaml"]
