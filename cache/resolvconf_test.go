package cache

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

func TestParseResolvConf(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ResolvConf
		err  bool
	}{
		{name: "empty file: glibc's loopback default", in: "",
			want: ResolvConf{Servers: []string{"127.0.0.1:53"}, Attempts: 2}},
		{name: "comments and search only", in: "# generated\n; by hand\nsearch corp.example\ndomain corp.example\n",
			want: ResolvConf{Servers: []string{"127.0.0.1:53"}, Attempts: 2}},
		{name: "kubernetes", in: "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
			want: ResolvConf{Servers: []string{"10.96.0.10:53"}, Attempts: 2}},
		{name: "aws vpc resolver with options", in: "nameserver 169.254.169.253\noptions timeout:2 attempts:5 rotate edns0 trust-ad\n",
			want: ResolvConf{Servers: []string{"169.254.169.253:53"}, Timeout: 2 * time.Second, Attempts: 5, Rotate: true}},
		{name: "at most three servers, in order", in: "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 10.0.0.4\n",
			want: ResolvConf{Servers: []string{"10.0.0.1:53", "10.0.0.2:53", "[::1]:53"}, Attempts: 2}},
		{name: "zone, mapped, bad lines skipped", in: "nameserver fe80::1%eth0\nnameserver\nnameserver dns.example\nnameserver ::ffff:10.0.0.9\n",
			want: ResolvConf{Servers: []string{"[fe80::1%eth0]:53", "10.0.0.9:53"}, Attempts: 2}},
		{name: "inline comment and tabs", in: "nameserver\t10.0.0.53 # local\noptions\ttimeout:3\n",
			want: ResolvConf{Servers: []string{"10.0.0.53:53"}, Timeout: 3 * time.Second, Attempts: 2}},
		{name: "limits: timeout 30s, attempts 5, nonsense ignored", in: "nameserver 10.0.0.1\noptions timeout:99 attempts:42\noptions timeout:0 attempts:-1 attempts:x timeout:\n",
			want: ResolvConf{Servers: []string{"10.0.0.1:53"}, Timeout: 30 * time.Second, Attempts: 5}},
		{name: "the last option wins", in: "nameserver 10.0.0.1\noptions attempts:1\noptions attempts:3\n",
			want: ResolvConf{Servers: []string{"10.0.0.1:53"}, Attempts: 3}},
		{name: "nameserver lines but none usable", in: "nameserver bogus\nnameserver 10.0.0\n", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResolvConf([]byte(tt.in))
			if tt.err {
				if err == nil {
					t.Fatalf("ParseResolvConf = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// FuzzParseResolvConf: no input panics, and what comes out is always
// usable: one to three "ip:53" servers, sane attempts and timeout.
func FuzzParseResolvConf(f *testing.F) {
	for _, s := range []string{
		"", "nameserver 10.0.0.2\n", "nameserver ::1\noptions rotate timeout:1 attempts:3\n",
		"nameserver fe80::1%eth0\nsearch a b\noptions ndots:5\n", "nameserver x\n", "options attempts:99999999999999999999\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, err := ParseResolvConf(data)
		if err != nil {
			if !errors.Is(err, errNoNameserver) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n := len(rc.Servers); n < 1 || n > 3 {
			t.Fatalf("%d servers: %q", n, rc.Servers)
		}
		for _, s := range rc.Servers {
			host, port, err := net.SplitHostPort(s)
			if err != nil || port != "53" {
				t.Fatalf("server %q: %v", s, err)
			}
			if _, err := netip.ParseAddr(host); err != nil {
				t.Fatalf("server %q: %v", s, err)
			}
		}
		if rc.Attempts < 1 || rc.Attempts > 5 || rc.Timeout < 0 || rc.Timeout > 30*time.Second {
			t.Fatalf("options out of range: %+v", rc)
		}
	})
}

// writeFile replaces path's contents the way editors and DHCP clients do:
// a new file renamed into place.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// twoDNSServers starts two servers on one port, on 127.0.0.1 and
// 127.0.0.2, as resolv.conf's servers all share one port.
func twoDNSServers(t *testing.T) (a, b *testenv.DNSServer, port string) {
	t.Helper()
	for range 20 {
		a = testenv.NewDNSServerIn(t, nil, "127.0.0.1")
		_, port, _ = net.SplitHostPort(a.Addr())
		var err error
		if b, err = testenv.StartDNSServerAt(t, nil, net.JoinHostPort("127.0.0.2", port)); err == nil {
			return a, b, port
		}
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil, ""
}

// readings collects OnResolvConf calls.
type readings chan resolvReading

type resolvReading struct {
	rc  ResolvConf
	err error
}

func (r readings) hook(rc ResolvConf, err error) { r <- resolvReading{rc, err} }

func (r readings) next(t *testing.T) resolvReading {
	t.Helper()
	select {
	case got := <-r:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("resolv.conf not read within 10s")
		return resolvReading{}
	}
}

// waitFor skips readings until one has servers want (or, for nil, an
// error): one change of the file may be seen as more than one event.
func (r readings) waitFor(t *testing.T, want []string) resolvReading {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-r:
			if want == nil && got.err != nil || want != nil && got.err == nil && cmp.Equal(got.rc.Servers, want) {
				return got
			}
		case <-deadline:
			t.Fatalf("no reading with servers %q (nil: an error) within 10s", want)
			return resolvReading{}
		}
	}
}

// TestResolverReadsResolvConf: with no servers, the resolver asks the name
// servers of resolv.conf, with their TTLs and caching, as absolute names
// (no search list); it follows the file when it changes, keeps the last
// good servers when a new file is unusable, and falls back to 127.0.0.1
// when the file names none.
func TestResolverReadsResolvConf(t *testing.T) {
	a, b, port := twoDNSServers(t)
	a.Set("site.test", 30, ip1)
	b.Set("site.test", 30, ip2)
	a.Set("site.corp.test", 30, ip6b)
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	writeFile(t, path, "search corp.test\noptions ndots:5\nnameserver 127.0.0.1\n")

	seen := make(readings, 16)
	r, clk, _ := newTestResolver(t, ResolverConfig{ResolvConf: path, Watch: true, OnResolvConf: seen.hook, resolvPort: port})
	defer r.Close()
	if got := seen.next(t); got.err != nil || !cmp.Equal(got.rc.Servers, []string{"127.0.0.1:" + port}) {
		t.Fatalf("first reading: %+v", got)
	}
	for range 3 {
		if _, err := lookup(t, r, "site"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bare name: err = %v, want not found (no search list)", err)
		}
		if d := diff([]netip.Addr{ip1}, mustLookup(t, r, "site.test")); d != "" {
			t.Fatalf("(-want +got):\n%s", d)
		}
	}
	if q := a.Queries("site.test"); q != 2 {
		t.Errorf("queries = %d after 3 lookups within the TTL, want 2 (A+AAAA once)", q)
	}
	if q := a.Queries("site.corp.test"); q != 0 {
		t.Errorf("search list used: %d queries for site.corp.test", q)
	}

	// The file changes (rename into place): the next lookup asks b.
	writeFile(t, path, "nameserver 127.0.0.2\n")
	seen.waitFor(t, []string{"127.0.0.2:" + port})
	clk.advance(30 * time.Second)
	if d := diff([]netip.Addr{ip2}, mustLookup(t, r, "site.test")); d != "" {
		t.Errorf("after the change (-want +got):\n%s", d)
	}

	// An unusable file keeps b.
	writeFile(t, path, "nameserver not-an-address\n")
	seen.waitFor(t, nil)
	clk.advance(30 * time.Second)
	if d := diff([]netip.Addr{ip2}, mustLookup(t, r, "site.test")); d != "" {
		t.Errorf("after an unusable file (-want +got):\n%s", d)
	}
	if got := r.Servers(); !cmp.Equal(got, []string{"127.0.0.2:" + port}) {
		t.Errorf("servers after an unusable file: %q", got)
	}

	// In-place writes are seen too (a bind-mounted file changes in place).
	if err := os.WriteFile(path, []byte("# no nameserver: glibc asks 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	seen.waitFor(t, []string{"127.0.0.1:" + port})
}

func TestResolverResolvConfMissing(t *testing.T) {
	seen := make(readings, 4)
	r, err := NewResolver(ResolverConfig{ResolvConf: filepath.Join(t.TempDir(), "none"), OnResolvConf: seen.hook})
	if err != nil {
		t.Fatal(err)
	}
	if got := seen.next(t); !errors.Is(got.err, os.ErrNotExist) {
		t.Errorf("reading: %+v, want not-exist", got)
	}
	if got := r.Servers(); !cmp.Equal(got, []string{"127.0.0.1:53"}) {
		t.Errorf("servers = %q, want glibc's 127.0.0.1:53", got)
	}
}

// TestResolverResolvConfOptions: attempts rounds over the servers, rotate
// spreads the first query over them, timeout bounds each query.
func TestResolverResolvConfOptions(t *testing.T) {
	a, b, port := twoDNSServers(t)
	path := filepath.Join(t.TempDir(), "resolv.conf")

	t.Run("attempts", func(t *testing.T) {
		a.SetRcode("fail.test", dns.RcodeServerFailure)
		b.SetRcode("fail.test", dns.RcodeServerFailure)
		writeFile(t, path, "nameserver 127.0.0.1\nnameserver 127.0.0.2\noptions attempts:3\n")
		r, _, _ := newTestResolver(t, ResolverConfig{ResolvConf: path, resolvPort: port})
		if _, err := lookup(t, r, "fail.test"); err == nil {
			t.Fatal("SERVFAIL everywhere resolved")
		}
		// A and AAAA, three rounds over both servers.
		if qa, qb := a.Queries("fail.test"), b.Queries("fail.test"); qa != 6 || qb != 6 {
			t.Errorf("queries %d and %d, want 6 each", qa, qb)
		}
	})
	t.Run("in order without rotate", func(t *testing.T) {
		writeFile(t, path, "nameserver 127.0.0.1\nnameserver 127.0.0.2\n")
		r, _, _ := newTestResolver(t, ResolverConfig{ResolvConf: path, resolvPort: port})
		for _, n := range []string{"o1.test", "o2.test", "o3.test", "o4.test"} {
			a.Set(n, 30, ip1)
			b.Set(n, 30, ip2)
			if d := diff([]netip.Addr{ip1}, mustLookup(t, r, n)); d != "" {
				t.Errorf("%s (-want +got):\n%s", n, d)
			}
		}
	})
	t.Run("rotate", func(t *testing.T) {
		writeFile(t, path, "nameserver 127.0.0.1\nnameserver 127.0.0.2\noptions rotate\n")
		r, _, _ := newTestResolver(t, ResolverConfig{ResolvConf: path, resolvPort: port})
		before := b.TotalQueries()
		for _, n := range []string{"r1.test", "r2.test", "r3.test", "r4.test"} {
			a.Set(n, 30, ip1)
			b.Set(n, 30, ip1)
			mustLookup(t, r, n)
		}
		// Eight queries (A and AAAA of four names), each answered by the
		// server asked first: every other one starts at the second.
		if q := b.TotalQueries() - before; q != 4 {
			t.Errorf("second server got %d of 8 queries, want 4 under rotate", q)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		a.SetSilent("slow.test")
		b.Set("slow.test", 30, ip2)
		writeFile(t, path, "nameserver 127.0.0.1\nnameserver 127.0.0.2\noptions timeout:1\n")
		r, err := NewResolver(ResolverConfig{ResolvConf: path, resolvPort: port, Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if d := diff([]netip.Addr{ip2}, mustLookup(t, r, "slow.test")); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
		// A bound, not a timing goal: options timeout:1 must win over the
		// configured minute, or the lookup would not end within the 10s
		// of mustLookup.
		if took := time.Since(start); took > 9*time.Second {
			t.Errorf("lookup took %v", took)
		}
	})
}
