#!/usr/bin/env bash
# make release: static binaries and Debian packages of egressd for
# linux/amd64 and linux/arm64 with the version stamped, a CycloneDX SBOM
# (JSON) per binary, and SHA256SUMS over all of them, in dist/release/.
#
#   VERSION=v1.2.3 make release      (default: git describe)
#
# Reproducible: -trimpath, no VCS-dependent paths, SOURCE_DATE_EPOCH from
# the commit for the SBOMs' timestamp. Nothing is downloaded but the Go
# modules go.sum pins (and the packaging module's nfpm).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
# Debian versions must start with a digit: VERSION when it is one (1.2.3 or
# v1.2.3), else the last v1.2.3 tag, else 0.0.0-dev.
if [[ -z ${PKG_VERSION:-} ]]; then
	if [[ $VERSION =~ ^v?[0-9] ]]; then
		PKG_VERSION=$VERSION
	else
		PKG_VERSION=$(git describe --tags --match 'v[0-9]*' 2>/dev/null || echo v0.0.0-dev)
	fi
fi
OUT=$(realpath -m "${RELEASE_DIR:-dist/release}")
ARCHES=${RELEASE_ARCHES:-amd64 arm64}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

rm -rf "$OUT"
mkdir -p "$OUT"
for arch in $ARCHES; do
	bin="$OUT/egressd_${VERSION}_linux_${arch}"
	echo "== egressd $VERSION linux/$arch" >&2
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$bin" ./cmd/egressd
	go run ./cmd/sbom -binary "$bin" -version "$VERSION" -o "$bin.cdx.json"
	(cd deployments/package && GOWORK=off go run . -root "$OLDPWD" -binary "$bin" \
		-version "$PKG_VERSION" -arch "$arch" -out "$OUT") >/dev/null
done
(cd "$OUT" && sha256sum -- * >SHA256SUMS && sha256sum --check --quiet SHA256SUMS)
echo "== $OUT:" >&2
ls -l "$OUT" >&2
