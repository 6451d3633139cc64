package inspect

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"sync"
	"testing"
	"time"
)

func TestLeaf(t *testing.T) {
	ca := testCA(t)
	a, err := LoadAuthority(ca.CertFile, ca.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	is := NewIssuer(a, nil)
	c, err := is.Certificate("upload.example.com")
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > LeafLifetime+leafBackdate || life < LeafLifetime {
		t.Fatalf("leaf valid for %v, want hours (%v + %v backdated)", life, LeafLifetime, leafBackdate)
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	// A client that trusts only the root verifies the leaf through the
	// intermediate egressd serves after it.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, Intermediates: inter, DNSName: "upload.example.com"}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, Intermediates: inter, DNSName: "other.example.com"}); err == nil {
		t.Fatal("leaf verifies for another name")
	}
	ipc, err := is.Certificate("192.0.2.10")
	if err != nil {
		t.Fatal(err)
	}
	if len(ipc.Leaf.IPAddresses) != 1 || len(ipc.Leaf.DNSNames) != 0 {
		t.Fatalf("IP leaf: IPs %v names %v", ipc.Leaf.IPAddresses, ipc.Leaf.DNSNames)
	}
}

// TestLeafIssuedOnce: 100 concurrent first requests for a name share one
// issuance; later requests take it from the cache until it nears expiry.
func TestLeafIssuedOnce(t *testing.T) {
	ca := testCA(t)
	a, err := LoadAuthority(ca.CertFile, ca.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	var counted int
	var mu sync.Mutex
	is := NewIssuer(a, func() { mu.Lock(); counted++; mu.Unlock() })
	var wg sync.WaitGroup
	got := make([]any, 100)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := is.Certificate("busy.example.com")
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = c
		}()
	}
	wg.Wait()
	if is.Issued() != 1 || counted != 1 {
		t.Fatalf("issued %d (counted %d) leaves for 100 concurrent requests of one name, want 1", is.Issued(), counted)
	}
	for _, c := range got {
		if c != got[0] {
			t.Fatal("concurrent requests got different leaves")
		}
	}
	if _, err := is.Certificate("other.example.com"); err != nil || is.Issued() != 2 {
		t.Fatalf("a second name: %v, issued %d", err, is.Issued())
	}
	// An hour before it expires, a leaf is replaced.
	now := time.Now()
	is.now = func() time.Time { return now.Add(LeafLifetime - leafRenewal + time.Minute) }
	c, err := is.Certificate("busy.example.com")
	if err != nil || c == got[0] || is.Issued() != 3 {
		t.Fatalf("near expiry: same leaf %v, issued %d, %v", c == got[0], is.Issued(), err)
	}
}
