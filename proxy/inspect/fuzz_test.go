package inspect

import (
	"os"
	"testing"
)

// FuzzParsePEM: what tls_inspection's files hold never panics the
// parsers, and a key they accept can sign.
func FuzzParsePEM(f *testing.F) {
	ca := testCA(f)
	for _, p := range []string{ca.CertFile, ca.KeyFile, ca.RootFile} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if certs, err := parseCertificates(data); err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificate")
		}
		if k, err := parseKey(data); err == nil && k.Public() == nil {
			t.Fatal("a key without a public half")
		}
	})
}
