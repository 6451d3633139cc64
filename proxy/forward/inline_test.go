package forward

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// TestInlineTarget: a request read on an in-line connection becomes
// http://Host/path on the port the client dialed; a Host naming another
// port, or none, is refused.
func TestInlineTarget(t *testing.T) {
	d80 := netip.MustParseAddrPort("203.0.113.10:80")
	d8080 := netip.MustParseAddrPort("203.0.113.10:8080")
	for _, tc := range []struct {
		host string
		dst  netip.AddrPort
		want string // the URL's authority; "" refused
	}{
		{"example.com", d80, "example.com"},
		{"example.com:80", d80, "example.com"},
		{"Example.COM.", d80, "Example.COM."},
		{"example.com", d8080, "example.com:8080"},
		{"example.com:8080", d8080, "example.com:8080"},
		{"example.com:8080", d80, ""},
		{"example.com:443", d80, ""},
		{"example.com:", d80, ""},
		{"203.0.113.20", d80, "203.0.113.20"},
		{"[2001:db8::1]", d80, "[2001:db8::1]"},
		{"[2001:db8::1]:8080", d8080, "[2001:db8::1]:8080"},
		{"", d80, ""},
		{"a@b.com", d80, ""},
		{"a/b", d80, ""},
		{"a:b:c", d80, ""},
		{"[fe80::1%25eth0]", d80, ""},
		{"a b", d80, ""},
	} {
		r := &http.Request{Method: http.MethodGet, Host: tc.host, URL: &url.URL{Path: "/p", RawQuery: "q=1"}}
		ok := inlineTarget(r, tc.dst)
		if ok != (tc.want != "") {
			t.Errorf("Host %q to %v: ok %v, want %v", tc.host, tc.dst, ok, tc.want != "")
			continue
		}
		if !ok {
			continue
		}
		if got := r.URL.String(); got != "http://"+tc.want+"/p?q=1" || r.Host != tc.want {
			t.Errorf("Host %q to %v: URL %s, Host %q; want authority %s", tc.host, tc.dst, got, r.Host, tc.want)
		}
	}
}

// FuzzInlineTarget: whatever the Host, an accepted request is an
// absolute http URL whose authority is one host on the dialed port.
func FuzzInlineTarget(f *testing.F) {
	for _, s := range []string{"example.com", "example.com:80", "[::1]:80", "a:b:c", "[", "]:80", "x@y", "", "%31.2.3.4"} {
		f.Add(s, uint16(80))
	}
	f.Add("example.com:8080", uint16(8080))
	f.Fuzz(func(t *testing.T, host string, port uint16) {
		if port == 0 {
			port = 80
		}
		r := &http.Request{Method: http.MethodGet, Host: host, URL: &url.URL{Path: "/"}}
		if !inlineTarget(r, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)) {
			return
		}
		if r.URL.Scheme != "http" || r.URL.User != nil || r.Host != r.URL.Host {
			t.Fatalf("Host %q: URL %s, Host %q", host, r.URL, r.Host)
		}
		u, err := url.Parse(r.URL.String())
		if err != nil || u.Host != r.URL.Host {
			t.Fatalf("Host %q: %s does not parse back to its authority: %v", host, r.URL, err)
		}
		h, p, err := net.SplitHostPort(r.URL.Host)
		if err != nil {
			h, p = strings.TrimSuffix(strings.TrimPrefix(r.URL.Host, "["), "]"), "80"
		}
		if p != strconv.Itoa(int(port)) || h == "" {
			t.Fatalf("Host %q on port %d: authority %q", host, port, r.URL.Host)
		}
	})
}
