package test

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// TestSystemResolverCaches: with no dns.servers, egressd asks the name
// servers of /etc/resolv.conf itself (here the namespace's, which `ip netns
// exec` mounts over /etc/resolv.conf) with real TTLs: many tunnels to one
// name make one query pair per TTL, concurrent lookups collapse, a TTL of 0
// is held for dns.min_ttl, the search list is never applied, and a change
// of the file is followed without a restart.
func TestSystemResolverCaches(t *testing.T) {
	const originIP = "127.0.0.2"
	ns := testenv.NewNetns(t)
	ca := testenv.NewCA(t)
	origin := testenv.TLSOriginIn(t, ns, ca, originIP, "cached.test", "zero.test", "moved.test")
	first, err := testenv.StartDNSServerAt(t, ns, "127.0.0.53:53")
	if err != nil {
		t.Fatal(err)
	}
	second, err := testenv.StartDNSServerAt(t, ns, "127.0.0.54:53")
	if err != nil {
		t.Fatal(err)
	}
	o := netip.MustParseAddr(originIP)
	for _, s := range []*testenv.DNSServer{first, second} {
		s.Set("cached.test", 300, o)
		s.Set("zero.test", 0, o)
		s.Set("moved.test", 300, o)
		s.Set("cached.test.corp.test", 300, o)
	}
	ns.SetResolvConf(t, "search corp.test\noptions ndots:5 timeout:1\nnameserver 127.0.0.53\n")

	c := testenv.NewConfig(t)
	c.Listen.HTTP, c.Listen.Admin = ns.FreeAddr(t, "127.0.0.1"), ns.FreeAddr(t, "127.0.0.1")
	c.DNS.MinTTL = time.Second // no dns.servers: the name servers of resolv.conf
	c.Policy.Mode = "enforce"
	c.Policy.Rules = []testenv.Rule{
		{Name: "origin", Hosts: []string{"cached.test", "zero.test", "moved.test"}, Ports: []int{origin.Port()}, AllowRanges: []string{"127.0.0.0/24"}},
	}
	p := (&testenv.Egressd{Netns: ns}).StartConfig(t, c)
	client := p.HTTPClient(t, ca.CertPool())
	client.Transport.(*http.Transport).DisableKeepAlives = true // a new tunnel per request
	get := func(name string) {
		t.Helper()
		resp, err := client.Get(fmt.Sprintf("https://%s:%d/", name, origin.Port()))
		if err != nil {
			t.Fatalf("GET %s: %v", name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", name, resp.Status)
		}
	}

	// 40 tunnels, 8 at a time, within a 300s TTL: one A and one AAAA query.
	const tunnels = 40
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, tunnels)
	for range tunnels {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := client.Get(fmt.Sprintf("https://cached.test:%d/", origin.Port()))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := origin.Count(); n < tunnels {
		t.Fatalf("origin answered %d of %d requests", n, tunnels)
	}
	if q := first.Queries("cached.test"); q != 2 {
		t.Errorf("%d queries for %d tunnels to one name within its TTL, want 2 (A and AAAA once)", q, tunnels)
	}
	if q := first.Queries("cached.test.corp.test"); q != 0 {
		t.Errorf("the search list was applied: %d queries for cached.test.corp.test", q)
	}

	// TTL 0 is held for dns.min_ttl (1s here): tunnels for 2.5s ask once
	// per second at most, and more than once.
	start := time.Now()
	n := 0
	for (time.Since(start) < 2500*time.Millisecond || n < 3) && n < 2000 {
		get("zero.test")
		n++
	}
	elapsed := time.Since(start)
	lookups := first.QueriesOfType("zero.test", 1 /* A */)
	if maxLookups := int(elapsed/time.Second) + 1; lookups < 2 || lookups > maxLookups {
		t.Errorf("TTL 0, min_ttl 1s: %d lookups for %d tunnels in %v, want 2..%d", lookups, n, elapsed.Round(time.Millisecond), maxLookups)
	}

	// The file changes in place (the bind mount keeps its inode): egressd
	// follows it without a restart or a reload.
	ns.SetResolvConf(t, "nameserver 127.0.0.54\n")
	waitUntil(t, 10*time.Second, func() bool { return strings.Contains(p.Stderr(), `"servers":["127.0.0.54:53"]`) },
		func() string { return "resolv.conf change not seen; stderr:\n" + p.Stderr() })
	get("moved.test")
	if q1, q2 := first.Queries("moved.test"), second.Queries("moved.test"); q1 != 0 || q2 != 2 {
		t.Errorf("after the change: %d queries to the old server, %d to the new, want 0 and 2", q1, q2)
	}
	p.WaitForLog(t, testenv.Fields(map[string]any{"host": "moved.test", "decision": "allow"}))
}
