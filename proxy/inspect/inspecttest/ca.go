// Package inspecttest makes certificate authorities for tests and
// benchmarks of TLS inspection: a root, an intermediate that issues
// (what tls_inspection.ca_cert and ca_key name), and origin certificates.
package inspecttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/egressd/egressd/test/testnet"
)

// CA is a test root and the intermediate under it that signs leaves.
type CA struct {
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	// RootPEM is the root alone: what a client trusts (SSL_CERT_FILE,
	// curl --cacert).
	RootPEM []byte
	// CertFile holds the intermediate then the root (tls_inspection.ca_cert);
	// KeyFile the intermediate's key, mode 0600 (tls_inspection.ca_key);
	// RootFile the root alone.
	CertFile, KeyFile, RootFile string
	// Pool trusts the root.
	Pool *x509.CertPool

	rootKey, key crypto.Signer
}

// WriteCA makes a root and an intermediate CA and writes their files
// into dir.
func WriteCA(dir, name string) (*CA, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	root, rootDER, err := sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: name + " root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, rootKey, rootKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	inter, interDER, err := sign(&x509.Certificate{
		Subject:               pkix.Name{CommonName: name + " intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, root, key, rootKey)
	if err != nil {
		return nil, err
	}
	ca := &CA{Root: root, Intermediate: inter, rootKey: rootKey, key: key, Pool: x509.NewCertPool()}
	ca.Pool.AddCert(root)
	ca.RootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}), ca.RootPEM...)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	ca.CertFile = filepath.Join(dir, name+"-ca.pem")
	ca.KeyFile = filepath.Join(dir, name+"-ca.key")
	ca.RootFile = filepath.Join(dir, name+"-root.pem")
	if err := os.WriteFile(ca.CertFile, chain, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(ca.RootFile, ca.RootPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(ca.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// Leaf issues a server certificate for names (host names or IP
// addresses) signed by the root, for origins the clients of a test reach
// through egressd; the chain holds the leaf and the root.
func (ca *CA) Leaf(names ...string) (tls.Certificate, error) {
	return testnet.CAFrom(ca.Root, ca.rootKey).Issue(names...)
}

// SelfSigned is a server certificate for names that no CA vouches for:
// an origin whose certificate egressd must refuse.
func SelfSigned(names ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		DNSNames:              names,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	leaf, der, err := sign(tmpl, nil, key, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func sign(tmpl, parent *x509.Certificate, key, parentKey crypto.Signer) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign %s: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, der, nil
}
