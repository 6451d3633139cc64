package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/egressd/egressd/policy"
)

// getHost is GET path with the given Host header, as a browser sends the
// name in its address bar.
func (f *uiFixture) getHost(t *testing.T, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// short keeps an unexpected body's start for a failure message.
func short(s string) string { return s[:min(len(s), 120)] }

// TestUIHostGuard: DNS rebinding. A page on evil.example that points its
// name at the admin address makes the browser send Host: evil.example; the
// page, its API, its assets and pprof answer 403 to that and show nothing,
// while an IP literal, localhost or a name in admin.ui_hosts gets them.
// /metrics, /healthz and /readyz answer any Host (scrapers and load
// balancers use names).
func TestUIHostGuard(t *testing.T) {
	t.Parallel()
	f := newUIFixture(t)
	f.finish(policy.ListenerConnect, "10.0.2.9", "bob", "pastebin.com", 443, policy.Deny, policy.ReasonNotAllowed, "")
	port := f.srv.Listener.Addr().(*net.TCPAddr).Port
	withPort := func(h string) string { return net.JoinHostPort(h, strconv.Itoa(port)) }
	// The check's target lacks its port: 400, which only a request past the
	// guard gets, and which spends none of /api/check's rate budget (eleven
	// good checks in a row would meet its 429, sooner on a faster machine).
	const badCheck = "/api/check?client=10.0.1.7&target=github.com"
	guarded := []string{"/", badCheck, "/api/denials",
		"/assets/app.js", "/debug/pprof/", "/debug/pprof/cmdline"}
	open := []string{"/metrics", "/healthz", "/readyz"}

	allowed := []string{
		withPort("127.0.0.1"), "127.0.0.1", withPort("::1"), "[::1]", withPort("10.1.2.3"),
		withPort("::ffff:127.0.0.1"), "2130706433", // IPv4 in any inet_aton spelling: no browser resolves it
		"1.2.3", withPort("localhost"), "LOCALHOST.", "localhost:",
	}
	refused := []string{
		withPort("evil.example"), "evil.example", "localhost.evil.example", "127.0.0.1.evil.example",
		"egressd.internal", "admin.egressd.internal", "evil.example:9090@127.0.0.1",
		"xn--", "a..b", // does not normalize: refused, not guessed at
	}
	for _, host := range allowed {
		for _, p := range guarded {
			want := 200
			if p == badCheck {
				want = 400
			}
			if code, body := f.getHost(t, host, p); code != want {
				t.Errorf("Host %q: GET %s = %d %q, want %d", host, p, code, short(body), want)
			}
		}
	}
	for _, host := range refused {
		for _, p := range guarded {
			code, body := f.getHost(t, host, p)
			if code != 403 || !strings.Contains(body, "admin.ui_hosts") || strings.Contains(body, "pastebin") {
				t.Errorf("Host %q: GET %s = %d %q, want 403 naming admin.ui_hosts", host, p, code, short(body))
			}
		}
		for _, p := range open {
			if code, _ := f.getHost(t, host, p); code != 200 {
				t.Errorf("Host %q: GET %s = %d, want 200 (not guarded)", host, p, code)
			}
		}
	}

	// admin.ui_hosts lists names, normalized by the config; a reload
	// changes them on the next request.
	f.hosts.Store(&[]string{"egressd.internal"})
	for _, host := range []string{"egressd.internal", withPort("EgressD.Internal."), "egressd.internal:443"} {
		if code, body := f.getHost(t, host, "/api/denials"); code != 200 || !strings.Contains(body, "pastebin.com") {
			t.Errorf("listed Host %q: %d %q", host, code, short(body))
		}
	}
	for _, host := range []string{"admin.egressd.internal", "internal", "evil.example"} {
		if code, _ := f.getHost(t, host, "/"); code != 403 {
			t.Errorf("Host %q with ui_hosts [egressd.internal]: %d, want 403", host, code)
		}
	}
	f.hosts.Store(nil)
	if code, _ := f.getHost(t, "egressd.internal", "/"); code != 403 {
		t.Errorf("after the reload dropped it: %d, want 403", code)
	}

	// HTTP/1.0 may omit Host: that is no IP literal either.
	c, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /api/denials HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("no Host: %d, want 403", resp.StatusCode)
	}
}

// countingDecider counts the decisions it is asked for.
type countingDecider struct {
	policy.Decider
	n atomic.Int64
}

func (c *countingDecider) Decide(ctx context.Context, r policy.Request) (policy.Decision, error) {
	c.n.Add(1)
	return c.Decider.Decide(ctx, r)
}

// TestUICheckRateLimit: /api/check asks the resolver, so it admits 10
// checks at once and 10 a second after that; past it, 429 with
// Retry-After, and the engine (so the resolver) is not asked. Bad
// parameters cost nothing. Fake time (synctest): no sleeping for real.
func TestUICheckRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pol, err := policy.Compile(policy.Config{
			Mode:       policy.ModeEnforce,
			DenyRanges: []string{policy.DefaultRanges},
			Rules:      []policy.Rule{{Name: "github", Hosts: []string{"github.com"}, Ports: []int{443}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		dec := &countingDecider{Decider: policy.NewEngine(pol, names{"github.com": {netip.MustParseAddr("140.82.112.3")}})}
		h := Handler(Options{UI: func() bool { return true }, Decider: dec})
		check := func(query string) *httptest.ResponseRecorder {
			r := httptest.NewRequest("GET", "http://127.0.0.1:9090/api/check?"+query, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		const good = "target=github.com:443"
		expect := func(what string, n, code int) {
			t.Helper()
			for i := range n {
				if w := check(good); w.Code != code {
					t.Fatalf("%s, check %d: %d %s, want %d", what, i+1, w.Code, w.Body, code)
				}
			}
		}
		expect("a burst", checkBurst, 200)
		if w := check("target=github.com"); w.Code != 400 {
			t.Fatalf("bad parameters past the burst: %d, want 400 (not counted)", w.Code)
		}
		w := check(good)
		var e struct{ Error string }
		if w.Code != 429 || w.Header().Get("Retry-After") != "1" || json.Unmarshal(w.Body.Bytes(), &e) != nil ||
			e.Error != "too many checks: at most 10 a second" {
			t.Fatalf("past the burst: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
		}
		if n := dec.n.Load(); n != checkBurst {
			t.Fatalf("engine asked %d times, want %d: a refused check must not resolve", n, checkBurst)
		}
		time.Sleep(time.Second / checkRate) // one token back
		expect("a token later", 1, 200)
		expect("then", 1, 429)
		time.Sleep(time.Minute) // the bucket holds checkBurst at most
		expect("a minute later", checkBurst, 200)
		expect("past the burst again", 1, 429)
	})
}
