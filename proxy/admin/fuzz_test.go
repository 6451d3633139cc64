package admin

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/egressd/egressd/policy"
)

// FuzzCheckRequest: /api/check's parameters never panic the parser; what it
// accepts is a HOST:PORT with a port in 1..65535 and a client that is an IP
// address or empty.
func FuzzCheckRequest(f *testing.F) {
	f.Add("10.0.1.7", "alice", "github.com:443")
	f.Add("", "", "[2001:db8::1]:8443")
	f.Add("::ffff:10.0.1.7", "", "x<script>:0")
	f.Add("10.0.1", "", "github.com")
	f.Add("fe80::1%eth0", "", ":65536")
	f.Fuzz(func(t *testing.T, client, user, target string) {
		req, err := checkRequest(client, user, target)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		host, port, serr := net.SplitHostPort(target)
		if serr != nil || req.Host != host || strconv.Itoa(int(req.Port)) != strings.TrimLeft(port, "0") || req.Port == 0 {
			t.Fatalf("accepted %q as host %q port %d", target, req.Host, req.Port)
		}
		if req.Client.User != user || (client == "") != !req.Client.Addr.IsValid() || req.Client.Addr.Is4In6() {
			t.Fatalf("client %q user %q became %+v", client, user, req.Client)
		}
	})
}

// FuzzClip: a kept host, user or SNI is at most maxText bytes plus the
// mark, is a prefix of the original, and stays valid UTF-8 when the input
// was; the ring's fixed text agrees with the sketch's copy.
func FuzzClip(f *testing.F) {
	f.Add("github.com")
	f.Add(strings.Repeat("é", 200))
	f.Add(strings.Repeat("a", maxText-1) + "€")
	f.Add("\xff\xfe" + strings.Repeat("x", 300))
	f.Fuzz(func(t *testing.T, s string) {
		c := clip(s)
		var tx text
		tx.set(s)
		if tx.String() != c {
			t.Fatalf("ring text %q, sketch %q", tx.String(), c)
		}
		kept, cut := strings.CutSuffix(c, "…")
		if !cut || len(s) <= maxText {
			kept = c
		}
		if len(kept) > maxText || !strings.HasPrefix(s, kept) || (len(s) > maxText) != (kept != s) {
			t.Fatalf("clip(%d bytes) = %d bytes", len(s), len(c))
		}
		if utf8.ValidString(s) && !utf8.ValidString(c) {
			t.Fatalf("clip broke UTF-8: %q", c)
		}
	})
}

// FuzzHostAllowed: the status page's Host check never panics; with no
// admin.ui_hosts, no ASCII name whose last label has a letter that no IP
// spelling uses (a name a web page could point at the admin address) gets
// through unless it is localhost; and listing a name only ever adds that
// name.
func FuzzHostAllowed(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9090", "[::1]:9090", "[::1]", "localhost.", "LocalHost:80", "evil.example",
		"evil.example:9090", "0x7f.1", "2130706433", "egressd.internal", "EGRESSD.internal.:443", "[fe80::1%25eth0]:80", ":80", ""} {
		f.Add(s)
	}
	listed := func() []string { return []string{"egressd.internal"} }
	f.Fuzz(func(t *testing.T, host string) {
		plain := hostAllowed(host, nil)
		withList := hostAllowed(host, listed)
		if plain && !withList {
			t.Fatalf("%q: allowed without admin.ui_hosts, refused with it", host)
		}
		part := host
		if h, _, err := net.SplitHostPort(host); err == nil {
			part = h
		}
		if withList && !plain {
			if n, _, _, err := policy.NormalizeHost(part); err != nil || n != "egressd.internal" {
				t.Fatalf("%q: allowed only by the list, but it is not egressd.internal", host)
			}
		}
		if !plain || strings.ContainsAny(part, ":[") || !isASCII(part) {
			return
		}
		name := strings.ToLower(strings.TrimSuffix(part, "."))
		last := name[strings.LastIndexByte(name, '.')+1:]
		if name != "localhost" && strings.ContainsAny(last, "ghijklmnopqrstuvwyz") {
			t.Fatalf("%q: a name got through with no admin.ui_hosts", host)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
