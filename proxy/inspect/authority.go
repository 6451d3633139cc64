package inspect

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// Config keys, for errors that name the key at fault.
const (
	KeyCACert         = "tls_inspection.ca_cert"
	KeyCAKey          = "tls_inspection.ca_key"
	KeyUpstreamCAFile = "tls_inspection.upstream_ca_file"
	KeyBypass         = "tls_inspection.bypass"
)

// KeyError is a problem with the file a tls_inspection key names.
type KeyError struct {
	Key  string // config key, e.g. tls_inspection.ca_key
	Path string // the file it names
	Err  error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Path + ": " + e.Err.Error() }

func (e *KeyError) Unwrap() error { return e.Err }

// ErrKeyReadable is the refusal of a CA key file that users other than its
// owner could read.
var ErrKeyReadable = errors.New("readable by group or others")

// Authority is the operator's CA that signs leaf certificates: the issuing
// certificate (a root or an intermediate) with its key, and the chain to
// serve after each leaf.
type Authority struct {
	cert  *x509.Certificate
	chain [][]byte // DER: every certificate of the ca_cert file, issuing one first
	key   crypto.Signer
}

// Certificate returns the issuing certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// LoadAuthority reads the CA certificate file (PEM: the issuing
// certificate first, then any intermediates up to, optionally, the root)
// and its private key file (PEM: PKCS#8, PKCS#1 or SEC 1). The key file
// must not be readable by group or others: a CA key that signs for every
// name is refused otherwise (ErrKeyReadable). The certificate must be a
// CA allowed to sign certificates, valid now, and match the key.
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	keyPEM, err := readKey(keyFile)
	if err != nil {
		return nil, &KeyError{Key: KeyCAKey, Path: keyFile, Err: err}
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &KeyError{Key: KeyCACert, Path: certFile, Err: err}
	}
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, &KeyError{Key: KeyCACert, Path: certFile, Err: err}
	}
	cert := certs[0]
	if err := checkIssuer(cert, time.Now()); err != nil {
		return nil, &KeyError{Key: KeyCACert, Path: certFile, Err: err}
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, &KeyError{Key: KeyCAKey, Path: keyFile, Err: err}
	}
	if !publicKeyEqual(cert.PublicKey, key.Public()) {
		return nil, &KeyError{Key: KeyCAKey, Path: keyFile, Err: fmt.Errorf("does not match the certificate in %s", certFile)}
	}
	a := &Authority{cert: cert, key: key}
	for _, c := range certs {
		a.chain = append(a.chain, c.Raw)
	}
	return a, nil
}

// readKey reads a key file after checking that only its owner can read it.
// The mode is that of the file a symlink points to (a Kubernetes secret
// volume's files are symlinks).
func readKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w (mode %04o): chmod 600 it, or 400", ErrKeyReadable, uint32(perm))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%v)", fi.Mode().Type())
	}
	return os.ReadFile(path)
}

// parseCertificates returns every CERTIFICATE block of a PEM file, in order.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE in it")
	}
	return certs, nil
}

// checkIssuer refuses a certificate that cannot sign leaves now.
func checkIssuer(c *x509.Certificate, now time.Time) error {
	switch {
	case !c.BasicConstraintsValid || !c.IsCA:
		return errors.New("not a CA certificate (basicConstraints CA:TRUE)")
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("its key usage does not include keyCertSign")
	case now.Before(c.NotBefore):
		return fmt.Errorf("not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(c.NotAfter):
		return fmt.Errorf("expired %s", c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// parseKey reads the first private key block of a PEM file.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key in it")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the key is encrypted: egressd needs it unencrypted (and readable only by its user)")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%T keys cannot sign", k)
		}
		switch s.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// LoadRoots returns the roots upstream certificates are verified against:
// the system's, with the certificates of file added when it is not "".
func LoadRoots(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if file == "" {
		return pool, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, &KeyError{Key: KeyUpstreamCAFile, Path: file, Err: err}
	}
	certs, err := parseCertificates(data)
	if err != nil {
		return nil, &KeyError{Key: KeyUpstreamCAFile, Path: file, Err: err}
	}
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// tlsCertificate is the leaf cert with the authority's chain behind it.
func (a *Authority) tlsCertificate(leafDER []byte, leaf *x509.Certificate, key crypto.Signer) *tls.Certificate {
	chain := make([][]byte, 0, 1+len(a.chain))
	chain = append(chain, leafDER)
	for _, c := range a.chain {
		if bytes.Equal(c, leafDER) {
			continue
		}
		chain = append(chain, c)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}
