// Command egressd-package builds the egressd Debian package from
// deployments/nfpm.yaml with github.com/goreleaser/nfpm/v2 used as a library.
//
// It lives in its own Go module (deployments/package/go.mod) because nfpm
// brings about forty modules (go-git, ProtonMail crypto, sprig, ...) that the
// proxy itself never uses; keeping them out of the main go.mod keeps the
// proxy's module to the libraries the binary runs. The directory also holds
// the package's maintainer scripts (postinstall.sh, preremove.sh,
// postremove.sh), which nfpm.yaml references.
//
// Usage, from anywhere inside the repository:
//
//	go run . -binary ../../bin/egressd -version 1.2.3 [-arch amd64] [-out ../../dist]
//
// The nfpm.yaml placeholders ${EGRESSD_VERSION}, ${EGRESSD_ARCH} and
// ${EGRESSD_BINARY} are filled from the flags, so the same file also works
// with the nfpm CLI and those environment variables. Relative paths in
// nfpm.yaml are relative to the repository root, found by walking up to the
// go.mod of module github.com/egressd/egressd (or given with -root).
package main
