package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/proxy/inspect/inspecttest"
	"github.com/egressd/egressd/test/testnet"
)

// The pki subcommand writes, once per benchmark, the certificates every run
// shares: the origin CA (the HTTPS origin's certificate is signed by it in
// every run, so a proxy started before a run can trust it: egressd's
// upstream_ca_file, Squid's tls_outgoing_options cafile) and the inspection
// CA (tls_inspection.ca_cert and ca_key, Squid's ssl-bump tls-cert and
// tls-key; the inspect kind's clients trust its root). Each is an
// intermediate under a root of its own.
//
// Files in -dir:
//
//	origin-ca.pem, origin-ca.key, origin-root.pem      the origin CA (intermediate, then root), its key, the root
//	inspect-ca.pem, inspect-ca.key, inspect-root.pem   the inspection CA, the same way; keys mode 0600
func pkiMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pki", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to write the certificates and keys into (created)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("pki: -dir is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"origin", "inspect"} {
		if _, err := inspecttest.WriteCA(*dir, name); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(stdout, "egressbench: certificates in %s\n", *dir)
	return err
}

// benchPKI is what a run reads from -pki.
type benchPKI struct {
	// origin issues the HTTPS origins' certificates: the origin CA, an
	// intermediate (in every chain it issues) whose root the proxies trust.
	origin       *testnet.CA
	inspectRoots *x509.CertPool
}

func loadPKI(dir string) (*benchPKI, error) {
	readPEM := func(name string) (*pem.Block, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("-pki: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("-pki: %s: no PEM block", name)
		}
		return blk, nil
	}
	cb, err := readPEM("origin-ca.pem")
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("-pki: origin-ca.pem: %w", err)
	}
	kb, err := readPEM("origin-ca.key")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("-pki: origin-ca.key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("-pki: origin-ca.key cannot sign")
	}
	rb, err := os.ReadFile(filepath.Join(dir, "inspect-root.pem"))
	if err != nil {
		return nil, fmt.Errorf("-pki: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rb) {
		return nil, errors.New("-pki: inspect-root.pem: no certificate")
	}
	return &benchPKI{origin: testnet.CAFrom(ca, signer), inspectRoots: roots}, nil
}

// bulkPrefix starts the path of a large response: /bulk/N answers N bytes.
const bulkPrefix = "/bulk/"

// bulkBodyLen reads N from a /bulk/N path (at most 1 TiB).
func bulkBodyLen(path string) (int64, bool) {
	s, ok := strings.CutPrefix(path, bulkPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return 0, false
	}
	return n, true
}

// inspectedSession dials a tunnel to the TLS origin's name and completes a
// TLS handshake with the proxy, which terminates it.
func (b *bench) inspectedSession() (net.Conn, error) {
	c, err := b.d.tunnel(b.tlsName)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(b.cfg.Timeout))
	tc := tls.Client(c, b.inspectTLS)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls handshake with the proxy: %w", err)
	}
	return tc, nil
}

// runInspectRequests measures requests inside inspected sessions: Conc
// workers, each with a kept-alive inspected session, one small request at
// a time. The figure is the proxy's CPU per inspected request.
func (b *bench) runInspectRequests(ctx context.Context) error {
	t := b.tlsName
	req := getRequest("/", net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))), false, proxyAuth{})
	newOp := b.keepAliveOp(b.inspectedSession, req)
	r := b.newResult("inspect_requests")
	var m *meter
	lr, err := b.loop(ctx, b.cfg.Conc, b.cfg.InspRequests, 4*b.cfg.Conc, b.cfg.InspTime, 0, newOp, func() (err error) {
		m, err = b.startMeter()
		return err
	})
	if err != nil {
		return fmt.Errorf("inspect_requests: %w", err)
	}
	return b.finishLoop(r, m, lr, b.cfg.Conc, 0)
}

// inspectBulkChunk is the size of each response of inspect_bulk.
const inspectBulkChunk = 64 << 20

// runInspectBulk downloads InspBulkBytes through one inspected session, in
// responses of inspectBulkChunk, bounded by InspTime: the proxy decrypts
// the origin's TLS and encrypts the client's.
func (b *bench) runInspectBulk(ctx context.Context) error {
	t := b.tlsName
	host := net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
	req := getRequest(bulkPrefix+strconv.Itoa(inspectBulkChunk), host, false, proxyAuth{})
	c, err := b.inspectedSession()
	if err != nil {
		return fmt.Errorf("inspect_bulk: %w", err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	// One warm-up response: the proxy's upstream connection and buffers.
	_ = c.SetDeadline(time.Now().Add(b.cfg.Timeout))
	if _, _, err := roundTripN(c, br, getRequest("/", host, false, proxyAuth{})); err != nil {
		return fmt.Errorf("inspect_bulk: warm-up: %w", err)
	}
	r := b.newResult("inspect_bulk")
	m, err := b.startMeter()
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(b.cfg.InspTime)
	var moved int64
	for moved < b.cfg.InspBulkBytes && time.Now().Before(deadline) && ctx.Err() == nil {
		_ = c.SetDeadline(time.Now().Add(b.cfg.Timeout))
		keep, n, err := roundTripN(c, br, req)
		moved += n
		if err != nil {
			r.Errors++
			r.FirstError = err.Error()
			break
		}
		if !keep {
			r.Errors++
			r.FirstError = "the proxy closed the inspected session"
			break
		}
	}
	elapsed := time.Since(start)
	if err := m.stop(r, elapsed); err != nil {
		return err
	}
	r.Concurrency = 1
	r.Bytes = moved
	r.TimeBound = moved < b.cfg.InspBulkBytes && r.Errors == 0
	if r.Seconds > 0 {
		r.MiBPerSec = float64(r.Bytes) / (1 << 20) / r.Seconds
	}
	r.perGiB()
	return b.out(r)
}
