package inspect

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/netip"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Leaf certificates: ECDSA P-256, valid for LeafLifetime from an hour
// before issuance (clients with a slow clock), used until an hour before
// they expire.
const (
	LeafLifetime  = 12 * time.Hour
	leafBackdate  = time.Hour
	leafRenewal   = time.Hour
	leafCacheSize = 10000
)

// Issuer issues and caches the leaf certificates of one Authority, one per
// name. Concurrent first requests for a name share one issuance
// (singleflight); later ones take it from a least-recently-used cache of
// leafCacheSize names. A CA reload makes a new Issuer, so no leaf of the
// old CA outlives it.
type Issuer struct {
	ca     *Authority
	cache  *lru.Cache[string, *tls.Certificate]
	flight singleflight.Group
	issued atomic.Uint64
	// now is the clock (tests move it).
	now func() time.Time
	// onIssue, when set, is called after each issuance (the metric).
	onIssue func()
}

// NewIssuer returns an Issuer signing with ca. onIssue (nil: none) is
// called once per certificate issued.
func NewIssuer(ca *Authority, onIssue func()) *Issuer {
	c, _ := lru.New[string, *tls.Certificate](leafCacheSize) // only errs for a size <= 0
	return &Issuer{ca: ca, cache: c, now: time.Now, onIssue: onIssue}
}

// Issued is the number of leaf certificates issued so far.
func (is *Issuer) Issued() uint64 { return is.issued.Load() }

// Certificate returns a leaf for name, a normalized host name or IP
// address, issued now or taken from the cache.
func (is *Issuer) Certificate(name string) (*tls.Certificate, error) {
	if c, ok := is.cache.Get(name); ok && is.fresh(c) {
		return c, nil
	}
	v, err, _ := is.flight.Do(name, func() (any, error) {
		// A caller that waited for the previous flight of this name to
		// end finds its leaf here.
		if c, ok := is.cache.Get(name); ok && is.fresh(c) {
			return c, nil
		}
		c, err := is.issue(name)
		if err != nil {
			return nil, err
		}
		is.cache.Add(name, c)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

func (is *Issuer) fresh(c *tls.Certificate) bool {
	return is.now().Before(c.Leaf.NotAfter.Add(-leafRenewal))
}

// issue signs a new leaf for name.
func (is *Issuer) issue(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("leaf serial: %w", err)
	}
	now := is.now()
	ca := is.ca.cert
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             later(now.Add(-leafBackdate), ca.NotBefore),
		NotAfter:              earlier(now.Add(LeafLifetime), ca.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if a, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, is.ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse leaf for %s: %w", name, err)
	}
	is.issued.Add(1)
	if is.onIssue != nil {
		is.onIssue()
	}
	return is.ca.tlsCertificate(der, leaf, key), nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
