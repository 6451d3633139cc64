package main

import (
	"crypto/x509"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestPKIOriginChain: the origins of a run with -pki present a chain that
// a proxy trusting only origin-root.pem verifies (the leaf, then the origin
// CA's intermediate), for the names the benchmark dials.
func TestPKIOriginChain(t *testing.T) {
	dir := t.TempDir()
	if err := pkiMain([]string{"-dir", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	pki, err := loadPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("127.0.0.9")
	cfg, pool, err := newTestPKI("origin.bench.test", ip, pki)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, "origin-root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("origin-root.pem: no certificate")
	}
	chain := cfg.Certificates[0].Certificate
	if len(chain) != 2 {
		t.Fatalf("origin chain of %d certificates, want the leaf and the intermediate", len(chain))
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(chain[1])
	if err != nil {
		t.Fatal(err)
	}
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	for _, name := range []string{"origin.bench.test", "other.bench.test", ip.String()} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inters}); err != nil {
			t.Errorf("%s through origin-root.pem: %v", name, err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("%s through the returned pool: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "origin.bench.test", Roots: pki.inspectRoots, Intermediates: inters}); err == nil {
		t.Error("the inspection root verifies an origin certificate: the two CAs must be apart")
	}
}
