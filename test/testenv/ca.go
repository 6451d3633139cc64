package testenv

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/test/testnet"
)

// CA is a throwaway certificate authority for one test ([testnet.CA] whose
// errors fail the test).
type CA struct {
	*testnet.CA
	t testing.TB
}

// NewCA creates a CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := testnet.NewCA("egressd test CA")
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca, t: t}
}

// Issue returns a server certificate for names: DNS names, and IP literals
// which go into the IP SANs. The first name is the subject CN.
func (ca *CA) Issue(names ...string) tls.Certificate {
	ca.t.Helper()
	cert, err := ca.CA.Issue(names...)
	if err != nil {
		ca.t.Fatal(err)
	}
	return cert
}

// WritePEM writes the CA certificate to dir/ca.pem and returns the path,
// for curl --cacert.
func (ca *CA) WritePEM(dir string) string {
	ca.t.Helper()
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, ca.PEM(), 0o644); err != nil {
		ca.t.Fatalf("write ca: %v", err)
	}
	return p
}
