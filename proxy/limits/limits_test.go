package limits

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

var (
	alice = netip.MustParseAddr("10.1.2.3")
	bob   = netip.MustParseAddr("::ffff:10.1.2.4") // an IPv4-mapped spelling: counted as 10.1.2.4
)

func newLimiter(lim Limits) (*Limiter, *accesslog.Metrics) {
	m := accesslog.NewMetrics(prometheus.NewRegistry())
	return New(lim, m), m
}

func gauge(m *accesslog.Metrics, l policy.Listener) float64 {
	return testutil.ToFloat64(m.ClientConns.WithLabelValues(string(l)))
}

func mustAdmit(t *testing.T, l *Limiter, listener policy.Listener, client netip.Addr) Slot {
	t.Helper()
	s, limit := l.Admit(listener, client)
	if limit != "" {
		t.Fatalf("Admit(%v) refused: %s", client, limit)
	}
	return s
}

func TestMaxConnections(t *testing.T) {
	l, m := newLimiter(Limits{MaxConnections: 2})
	a := mustAdmit(t, l, policy.ListenerHTTP, alice)
	mustAdmit(t, l, policy.ListenerSOCKS5, bob)
	if s, limit := l.Admit(policy.ListenerHTTP, alice); limit != accesslog.LimitMaxConnections || s.held {
		t.Fatalf("third connection: %q, slot %+v", limit, s)
	}
	if g := gauge(m, policy.ListenerHTTP); g != 1 {
		t.Errorf("http gauge %v, want 1", g)
	}
	if g := gauge(m, policy.ListenerSOCKS5); g != 1 {
		t.Errorf("socks5 gauge %v, want 1", g)
	}
	l.Release(&a)
	mustAdmit(t, l, policy.ListenerHTTP, alice)
	if n := l.Open(); n != 2 {
		t.Errorf("Open() = %d, want 2", n)
	}
}

func TestMaxConnectionsPerClient(t *testing.T) {
	l, _ := newLimiter(Limits{MaxConnectionsPerClient: 2})
	a1 := mustAdmit(t, l, policy.ListenerHTTP, alice)
	mustAdmit(t, l, policy.ListenerSOCKS5, alice)
	if _, limit := l.Admit(policy.ListenerHTTP, alice); limit != accesslog.LimitMaxConnectionsPerClient {
		t.Fatalf("alice's third connection: %q", limit)
	}
	// Another client is not affected; the mapped spelling is one client.
	mustAdmit(t, l, policy.ListenerHTTP, bob)
	mustAdmit(t, l, policy.ListenerHTTP, netip.MustParseAddr("10.1.2.4"))
	if _, limit := l.Admit(policy.ListenerHTTP, bob); limit != accesslog.LimitMaxConnectionsPerClient {
		t.Fatalf("bob's third connection (mapped spelling): %q", limit)
	}
	l.Release(&a1)
	mustAdmit(t, l, policy.ListenerHTTP, alice)
}

// Behind a load balancer a connection counts first only against
// max_connections, then against the client the PROXY header names.
func TestClaim(t *testing.T) {
	l, m := newLimiter(Limits{MaxConnections: 10, MaxConnectionsPerClient: 2})
	var slots []Slot
	for range 4 {
		slots = append(slots, mustAdmit(t, l, policy.ListenerHTTP, netip.Addr{}))
	}
	for i := range 2 {
		if limit := l.Claim(&slots[i], alice); limit != "" {
			t.Fatalf("alice's connection %d refused under the cap: %s", i+1, limit)
		}
	}
	// Claiming again changes nothing.
	if limit := l.Claim(&slots[0], alice); limit != "" {
		t.Fatalf("a slot already alice's: %s", limit)
	}
	if limit := l.Claim(&slots[2], alice); limit != accesslog.LimitMaxConnectionsPerClient {
		t.Fatalf("alice's third connection: %q", limit)
	}
	if slots[2].held {
		t.Fatal("a refused claim kept its slot")
	}
	if limit := l.Claim(&slots[3], bob); limit != "" {
		t.Fatalf("bob: %s", limit)
	}
	if n := l.Open(); n != 3 {
		t.Errorf("Open() = %d, want 3 (the refused one released)", n)
	}
	if g := gauge(m, policy.ListenerHTTP); g != 3 {
		t.Errorf("gauge %v, want 3", g)
	}
	l.Release(&slots[0])
	s := mustAdmit(t, l, policy.ListenerHTTP, netip.Addr{})
	if limit := l.Claim(&s, alice); limit != "" {
		t.Fatalf("alice refused after one of her two connections closed: %s", limit)
	}
}

// A slot is released once, however often its owners say so.
func TestReleaseOnce(t *testing.T) {
	l, m := newLimiter(Limits{MaxConnectionsPerClient: 1})
	s := mustAdmit(t, l, policy.ListenerHTTP, alice)
	other := mustAdmit(t, l, policy.ListenerHTTP, bob)
	l.Release(&s)
	l.Release(&s)
	var zero Slot
	l.Release(&zero)
	if n := l.Open(); n != 1 {
		t.Fatalf("Open() = %d, want 1", n)
	}
	if g := gauge(m, policy.ListenerHTTP); g != 1 {
		t.Fatalf("gauge %v, want 1", g)
	}
	l.Release(&other)
	if len(l.clients) != 0 {
		t.Fatalf("per-client counts left: %v", l.clients)
	}
}

func TestSetLimits(t *testing.T) {
	l, _ := newLimiter(Limits{MaxConnections: 1})
	mustAdmit(t, l, policy.ListenerHTTP, alice)
	if _, limit := l.Admit(policy.ListenerHTTP, bob); limit == "" {
		t.Fatal("admitted past max_connections 1")
	}
	l.SetLimits(Limits{MaxConnections: 2})
	mustAdmit(t, l, policy.ListenerHTTP, bob)
	l.SetLimits(Limits{})
	for range 100 {
		mustAdmit(t, l, policy.ListenerSOCKS5, alice)
	}
}
