package policy

import (
	"strings"
	"testing"
)

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"example.com", "EXAMPLE.com.", "bücher.example", "xn--bcher-kva.example", "a..b", "*.x",
		"2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "127.1", "0x7f.1", "1.2.3.256", "[::1]",
		"[::ffff:a9fe:a9fe]", "fe80::1%eth0", "１２７．０．０．１", "example。com", "a\u200d.b", "0x", "09",
		strings.Repeat("a.", 130),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		host, addr, isIP, err := NormalizeHost(raw)
		if err != nil {
			if host != "" || addr.IsValid() || isIP {
				t.Fatalf("error with results: %q %v %v", host, addr, isIP)
			}
			return
		}
		if isIP != addr.IsValid() {
			t.Fatalf("isIP %v but addr %v", isIP, addr)
		}
		if isIP {
			if host != addr.String() || addr.Zone() != "" {
				t.Fatalf("IP host %q is not canonical %v", host, addr)
			}
		} else {
			if len(host) == 0 || len(host) > maxHostLen || asciiClass(host) != classLower {
				t.Fatalf("bad normalized name %q from %q", host, raw)
			}
			if strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
				t.Fatalf("empty label in %q from %q", host, raw)
			}
		}
		h2, a2, ip2, err := NormalizeHost(host)
		if err != nil || h2 != host || a2 != addr || ip2 != isIP {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, host, h2, err)
		}
	})
}

// FuzzHostPattern checks the compiled matcher against a naive reference:
// scan the rules in order and compare patterns as strings. The second
// pattern is a deny rule on every port; the others allow port 443.
func FuzzHostPattern(f *testing.F) {
	f.Add("example.com", "*.example.com", "*.com", "www.example.com")
	f.Add("*.a.b", "a.b", "*.b", "a.b")
	f.Add("*.a.b", "x.a.b", "*.b", "y.x.a.b")
	f.Add("*.a.b", "x.a.b", "*.b", "x.a.b")
	f.Add("Bücher.example", "*.example", "x", "xn--bcher-kva.example")
	f.Add("*.example.com", "a.*.com", "*", "example.com")
	f.Add("x", "*.x", "*.y.x", "z.y.x")
	f.Add("a.b", "*.a.b", "*.b", "10.0.0.1")
	f.Fuzz(func(t *testing.T, p0, p1, p2, host string) {
		var cfg Config
		type refRule struct {
			hp   HostPattern
			deny bool
		}
		var ref []refRule
		for i, s := range []string{p0, p1, p2} {
			hp, err := ParseHostPattern(s)
			if err != nil {
				continue
			}
			r := Rule{Name: string(rune('a' + i)), Hosts: []string{s}, Ports: []int{443}}
			if i == 1 {
				r.Action, r.Ports = ActionDeny, nil
			}
			ref = append(ref, refRule{hp, i == 1})
			cfg.Rules = append(cfg.Rules, r)
		}
		p, err := Compile(cfg)
		if err != nil {
			t.Fatalf("patterns that parse must compile: %v", err)
		}
		norm, _, isIP, nerr := NormalizeHost(host)
		for _, port := range []uint16{443, 80} {
			want, wantReason, hostMatched := -1, ReasonNotAllowed, false
			if nerr == nil && !isIP {
				for i, r := range ref {
					if !r.hp.Matches(norm) {
						continue
					}
					if r.deny {
						want, wantReason = i, ReasonDeniedByRule
						break
					}
					hostMatched = true
					if port == 443 {
						want, wantReason = i, ReasonNone
						break
					}
				}
			}
			if want < 0 && hostMatched {
				wantReason = ReasonPortNotAllowed
			}
			m := p.Match(Request{Host: host, Port: port})
			if m.Rule != want || m.Reason != wantReason {
				t.Fatalf("host %q (%q) port %d patterns %v: Match rule %d %q, reference %d %q",
					host, norm, port, ref, m.Rule, m.Reason, want, wantReason)
			}
		}
	})
}

// FuzzCheckPath checks the paths matcher against a naive reference: decode
// the path, refuse what has an escaped separator or a segment that origins
// read differently, then compare each entry as a string.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{
		"/api/v2/x", "/api/v2/", "/api/v2", "/upload", "/api/v2/../admin", "/api/v2/%2e%2e/admin",
		"/api/v2/x%2F..%2Fadmin", "/api//v2/x", "/api/v2/..\\admin", "/uplo%61d", "/%zz", "", "/",
		"/api/v2/./x", "/api/v2/%00", "/api/v2/%",
	} {
		f.Add(s)
	}
	p, err := Compile(Config{Rules: []Rule{{
		Name: "r", Hosts: []string{"example.com"}, Ports: []int{443}, Inspect: true,
		Paths: []string{"/api/v2/*", "/upload", "/"},
	}}})
	if err != nil {
		f.Fatal(err)
	}
	d := Decision{Verdict: Allow, Policy: p, HTTP: p.rules[0].http}
	f.Fuzz(func(t *testing.T, path string) {
		_, r := p.CheckRequest(d, "GET", path)
		if got, want := r == ReasonNone, naivePathAllowed(path); got != want {
			t.Fatalf("CheckRequest(%q) allowed=%v, reference says %v", path, got, want)
		}
	})
}

func naivePathAllowed(path string) bool {
	lower := strings.ToLower(path)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return false
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] != '%' {
			b.WriteByte(path[i])
			continue
		}
		if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
			return false
		}
		b.WriteByte(unhex(path[i+1])<<4 | unhex(path[i+2]))
		i += 2
	}
	dec := b.String()
	if !strings.HasPrefix(dec, "/") {
		return false
	}
	for _, c := range []byte(dec) {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	segs := strings.Split(dec[1:], "/")
	for i, s := range segs {
		if s == "." || s == ".." || (s == "" && i < len(segs)-1) {
			return false
		}
	}
	return dec == "/upload" || dec == "/" || strings.HasPrefix(dec, "/api/v2/")
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// FuzzHeaderTemplate: a request_headers_add value either fails to compile
// or fills in to a value that net/http would send, whatever the client's
// user name holds.
func FuzzHeaderTemplate(f *testing.F) {
	for _, s := range []string{"{group}", "{user}@{client}", "a{rule}b{host}c", "{", "}", "{grup}", "{{group}}", "x\ty", ""} {
		f.Add(s, "alice")
	}
	f.Add("{user}", "a\r\nX-Evil: 1")
	f.Fuzz(func(t *testing.T, tmpl, user string) {
		p, err := Compile(Config{
			Groups: map[string]Group{"web": {CIDRs: []string{"10.0.0.0/8"}}},
			Rules: []Rule{{
				Name: "r", Hosts: []string{"example.com"}, Ports: []int{443}, Inspect: true,
				RequestHeadersAdd: map[string]string{"X-T": tmpl},
			}},
		})
		if err != nil {
			return
		}
		d := Decision{Group: "web", Rule: "r", Host: "example.com", HTTP: p.rules[0].http}
		d.HTTP.SetHeaders(d, Client{User: user}, func(k, v string) {
			if k != "X-T" || !validFieldText(v) {
				t.Fatalf("set %q: %q", k, v)
			}
		})
	})
}

// FuzzCheckHost: a Host value is allowed only when it names the decided
// host (and port, if it has one), never panics.
func FuzzCheckHost(f *testing.F) {
	for _, s := range []string{"upload.test", "upload.test:443", "UPLOAD.test.", "[::1]:443", "[::1]", "::1", "upload.test:", ":443", "a:b:c", "[x]y", "upload.test:0443", ""} {
		f.Add(s)
	}
	p, err := Compile(Config{})
	if err != nil {
		f.Fatal(err)
	}
	names := []Decision{
		{Host: "upload.test", Port: 443, Policy: p},
		{Host: "::1", IsIP: true, Port: 443, Policy: p},
	}
	f.Fuzz(func(t *testing.T, hostport string) {
		for _, d := range names {
			v, _ := p.CheckHost(d, hostport)
			if v != Allow || hostport == "" {
				continue
			}
			host, port, ok := splitHostHeader(hostport)
			if !ok || port != "" && port != "443" {
				t.Fatalf("%q allowed for %s:%d", hostport, d.Host, d.Port)
			}
			norm, addr, isIP, err := NormalizeHost(host)
			if err != nil || isIP != d.IsIP || (!isIP && norm != d.Host) || (isIP && addr.Unmap().String() != d.Host) {
				t.Fatalf("%q allowed for %s", hostport, d.Host)
			}
		}
	})
}
