package testenv

import (
	"net"
	"testing"

	"github.com/egressd/egressd/test/testnet"
)

// DNSServer is an in-process authoritative DNS server (UDP and TCP on the
// same port) with a zone the test sets: see [testnet.DNSServer] for its
// methods (Set, SetSequence, SetDomain, SetCNAME, SetRcode, SetSilent,
// Delete, Queries, ...).
type DNSServer = testnet.DNSServer

// NewDNSServer starts a server on 127.0.0.1:0 in the host namespace.
func NewDNSServer(t testing.TB) *DNSServer {
	t.Helper()
	return NewDNSServerIn(t, nil, "127.0.0.1")
}

// NewDNSServerIn starts a server on ip:0 (UDP and TCP, same port) inside
// ns (nil: the host namespace). It stops on cleanup.
func NewDNSServerIn(t testing.TB, ns *Netns, ip string) *DNSServer {
	t.Helper()
	s, err := testnet.ListenDNS(net.JoinHostPort(ip, "0"), ns.ListenPacket, ns.Listen)
	if err != nil {
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// StartDNSServerAt starts a server on addr ("ip:port", UDP and TCP) inside
// ns (nil: the host namespace), for resolvers that take no port, such as
// resolv.conf's (port 53, inside a namespace of the test's own). It
// returns an error when the address is taken; the server stops on cleanup.
func StartDNSServerAt(t testing.TB, ns *Netns, addr string) (*DNSServer, error) {
	t.Helper()
	s, err := testnet.ListenDNS(addr, ns.ListenPacket, ns.Listen)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	return s, nil
}
