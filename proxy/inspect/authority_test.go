package inspect

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/proxy/inspect/inspecttest"
)

func testCA(t testing.TB) *inspecttest.CA {
	t.Helper()
	ca, err := inspecttest.WriteCA(t.TempDir(), "test")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestLoadAuthority(t *testing.T) {
	ca := testCA(t)
	a, err := LoadAuthority(ca.CertFile, ca.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Certificate().Equal(ca.Intermediate) {
		t.Fatal("issuing certificate is not the file's first (the intermediate)")
	}
	if len(a.chain) != 2 {
		t.Fatalf("chain of %d certificates, want the file's 2", len(a.chain))
	}
}

// TestKeyPermissions: a CA key that group or others can read is refused,
// naming the key, the file and its mode.
func TestKeyPermissions(t *testing.T) {
	ca := testCA(t)
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, false}, {0o604, false}, {0o644, false}, {0o660, false}, {0o610, false},
	} {
		if err := os.Chmod(ca.KeyFile, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadAuthority(ca.CertFile, ca.KeyFile)
		if tt.ok {
			if err != nil {
				t.Errorf("mode %04o: %v", tt.mode, err)
			}
			continue
		}
		var ke *KeyError
		if !errors.Is(err, ErrKeyReadable) || !errors.As(err, &ke) || ke.Key != KeyCAKey || ke.Path != ca.KeyFile {
			t.Fatalf("mode %04o: error %v, want a KeyError for %s", tt.mode, err, KeyCAKey)
		}
		if want := "tls_inspection.ca_key: " + ca.KeyFile + ": readable by group or others (mode "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("mode %04o: message %q, want it to start %q", tt.mode, err, want)
		}
	}
	// Through a symlink (a Kubernetes secret volume): the target's mode counts.
	if err := os.Chmod(ca.KeyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "key")
	if err := os.Symlink(ca.KeyFile, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAuthority(ca.CertFile, link); !errors.Is(err, ErrKeyReadable) {
		t.Fatalf("symlink to a 0644 key: %v, want ErrKeyReadable", err)
	}
}

func TestLoadAuthorityErrors(t *testing.T) {
	ca := testCA(t)
	other := testCA(t)
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf, err := ca.Leaf("example.com")
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}))
	leafKeyDER, _ := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	leafKey := write("leaf.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: leafKeyDER})), 0o600)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	tests := []struct {
		name       string
		cert, key  string
		key2, want string
	}{
		{"missing key", ca.CertFile, filepath.Join(dir, "nope"), KeyCAKey, "no such file"},
		{"missing cert", filepath.Join(dir, "nope"), ca.KeyFile, KeyCACert, "no such file"},
		{"no certificate", write("empty.pem", "hello", 0o644), ca.KeyFile, KeyCACert, "no PEM CERTIFICATE"},
		{"not a CA", write("leaf.pem", leafPEM, 0o644), leafKey, KeyCACert, "not a CA certificate"},
		{"other CA's key", ca.CertFile, other.KeyFile, KeyCAKey, "does not match the certificate"},
		{"no key", ca.CertFile, write("nokey", "x", 0o600), KeyCAKey, "no PEM private key"},
		{"encrypted key", ca.CertFile, write("enc", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", 0o600), KeyCAKey, "encrypted"},
		{"SEC 1 key of another", ca.CertFile, write("ec.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})), 0o600), KeyCAKey, "does not match"},
		{"directory", ca.CertFile, dir, KeyCAKey, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadAuthority(tt.cert, tt.key)
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tt.key2 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %s: ...%s", err, tt.key2, tt.want)
			}
		})
	}
}

func TestLoadRoots(t *testing.T) {
	ca := testCA(t)
	pool, err := LoadRoots(ca.RootFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf("origin.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "origin.test"}); err != nil {
		t.Fatalf("upstream_ca_file's root not trusted: %v", err)
	}
	if _, err := LoadRoots(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.HasPrefix(err.Error(), KeyUpstreamCAFile+": ") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestBypass(t *testing.T) {
	b, err := ParseBypass([]string{"pinned.example.com", "*.bank.example", "Bücher.example"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"pinned.example.com":      true,
		"a.pinned.example.com":    false,
		"bank.example":            false,
		"www.bank.example":        true,
		"a.b.bank.example":        true,
		"xn--bcher-kva.example":   true,
		"other.example.com":       false,
		"pinned.example.com.evil": false,
	} {
		if got := b.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
	if _, err := ParseBypass([]string{"ok.example", "a.*.b"}); err == nil || !strings.Contains(err.Error(), "tls_inspection.bypass[1]") {
		t.Fatalf("bad entry: %v", err)
	}
	var none *Bypass
	if none.Matches("x") {
		t.Fatal("nil Bypass matched")
	}
}
