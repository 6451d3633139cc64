package forward

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/cache/httpcache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/dlp"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/inspect"
	"github.com/egressd/egressd/proxy/inspect/inspecttest"
	"github.com/egressd/egressd/proxy/tunnel"
)

// lineBuffer collects JSON access lines.
type lineBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed at the next write
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return b.buf.Write(p)
}

// wait returns a channel closed at the next write.
func (b *lineBuffer) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

func (b *lineBuffer) Sync() error { return nil }

func (b *lineBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// resolver maps every name to one address.
type resolver struct{ addr netip.Addr }

func (r resolver) LookupNetIP(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{r.addr}, nil
}

// inspectEnv is the inspected path as proxy.Server wires it: the policy
// engine, forward.Handler's chain behind inspect.Server, an origin on
// loopback with a certificate from its own root, and a listener whose
// connections are tunnels the policy allowed, handed to inspect.Server as
// proxy/tunnel does after the guard.
type inspectEnv struct {
	t       *testing.T
	ca      *inspecttest.CA // the inspection CA clients trust
	ins     *inspect.Server
	ln      net.Listener
	origin  *httptest.Server
	port    uint16 // the origin's port, the tunnels' port
	reached atomic.Int32
	seen    chan *http.Request // what reached the origin
	log     *lineBuffer
	wg      sync.WaitGroup
}

const inspectPolicy = `
- name: uploads
  hosts: ["upload.test"]
  inspect: true
  dlp: strict
  methods: [GET, POST]
  paths: ["/api/v2/*", "/upload"]
  request_headers_add: {"X-Egress-Client-Group": "{group}", "X-Egress-Rule": "{rule}"}
- name: open
  hosts: ["open.test", "badcert.test"]
  inspect: true
`

func newInspectEnv(t *testing.T, mode string, originCert func(*inspecttest.CA) tls.Certificate, cache *httpcache.Cache, originTLS ...func(*tls.Config)) *inspectEnv {
	t.Helper()
	ca, err := inspecttest.WriteCA(t.TempDir(), "inspect")
	if err != nil {
		t.Fatal(err)
	}
	originCA, err := inspecttest.WriteCA(t.TempDir(), "origin")
	if err != nil {
		t.Fatal(err)
	}
	e := &inspectEnv{t: t, ca: ca, seen: make(chan *http.Request, 16), log: &lineBuffer{}}
	e.origin = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.reached.Add(1)
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		e.seen <- r
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("X-Egress-Denied", "forged by the origin")
		io.WriteString(w, "origin saw "+r.Method+" "+r.Host+" "+r.URL.RequestURI()+" body="+string(body))
	}))
	e.origin.TLS = &tls.Config{Certificates: []tls.Certificate{originCert(originCA)}}
	for _, f := range originTLS {
		f(e.origin.TLS)
	}
	e.origin.Config.ErrorLog = log.New(io.Discard, "", 0) // egressd's refused handshakes
	e.origin.StartTLS()
	t.Cleanup(e.origin.Close)
	e.port = netip.MustParseAddrPort(e.origin.Listener.Addr().String()).Port()

	var rules []policy.Rule
	if err := yaml.Unmarshal([]byte(inspectPolicy), &rules); err != nil {
		t.Fatal(err)
	}
	for i := range rules {
		rules[i].Ports = []int{int(e.port)}
	}
	pol, err := policy.Compile(policy.Config{
		Mode:     mode,
		TLSPorts: []int{int(e.port)},
		Groups:   map[string]policy.Group{"web": {CIDRs: []string{"127.0.0.0/8"}}},
		Rules:    rules,
	})
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(pol, resolver{netip.MustParseAddr("127.0.0.1")})
	dlpRules, err := dlp.Compile(dlp.Config{MaxScanBytes: 1 << 20, Oversize: dlp.OversizeBlock, ICAP: dlp.ICAPConfig{Timeout: time.Second, Failure: dlp.FailureClosed}, Profiles: map[string]dlp.ProfileConfig{
		"strict": {Detectors: []string{"aws_access_key"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := inspect.Load(inspect.Config{CACert: ca.CertFile, CAKey: ca.KeyFile, UpstreamCAFile: originCA.RootFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{MessageKey: "", TimeKey: ""})
	access := accesslog.NewLogger(zap.New(zapcore.NewCore(enc, e.log, zap.InfoLevel)), nil)
	var ins *inspect.Server
	h := New(Options{
		Decider:     engine,
		Dialer:      &egress.Dialer{},
		Log:         access,
		Runner:      &tunnel.Runner{},
		Idle:        10 * time.Second,
		DLP:         dlp.NewEngine(dlpRules),
		Cache:       cache,
		UpstreamTLS: func(name string) *tls.Config { return ins.UpstreamTLS(name) },
	})
	ins = inspect.New(m, inspect.Options{Chain: http.HandlerFunc(h.ServeInspected), Handshake: 5 * time.Second, Idle: time.Minute})
	e.ins = ins
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		ins.Run()
	}()
	go func() {
		defer e.wg.Done()
		for {
			c, err := e.ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.tunnel(engine, access, c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		e.ln.Close()
		ins.Close()
		e.wg.Wait()
	})
	return e
}

// tunnel is what a front end and proxy/tunnel do for one client: decide
// the destination (the test client sends its name first, one line), run
// the guard, hand an inspected tunnel over.
func (e *inspectEnv) tunnel(engine *policy.Engine, access *accesslog.Logger, c *net.TCPConn) {
	var name []byte
	for b := make([]byte, 1); len(name) < 64; {
		if _, err := c.Read(b); err != nil {
			c.Close()
			return
		}
		if b[0] == '\n' {
			break
		}
		name = append(name, b[0])
	}
	host := string(name)
	rec := access.NewRecord(policy.ListenerConnect, netip.MustParseAddr("127.0.0.1"))
	dec, err := engine.Decide(context.Background(), policy.Request{Listener: policy.ListenerConnect, Client: policy.Client{Addr: rec.Client}, Host: host, Port: e.port})
	rec.Decision, rec.Host, rec.Port = dec, dec.Host, dec.Port
	if err != nil || !dec.Verdict.Passes() || !e.ins.Inspects(dec) {
		e.t.Errorf("tunnel to %s: %v %+v", host, err, dec)
		c.Close()
		return
	}
	first, ok := (&tunnel.Runner{Handshake: 5 * time.Second}).GuardSNI(c, nil, dec, rec)
	if !ok {
		c.Close()
		rec.Finish()
		return
	}
	e.ins.Serve(c, first, dec, rec, 0, rec.Finish)
}

// client reaches host through an inspected tunnel, trusting the
// inspection CA.
func (e *inspectEnv) client(host string, h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", e.ln.Addr().String())
			if err != nil {
				return nil, err
			}
			if _, err := io.WriteString(c, host+"\n"); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.ca.Pool},
		ForceAttemptHTTP2: h2,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (e *inspectEnv) url(host, path string) string {
	return "https://" + net.JoinHostPort(host, itoa(e.port)) + path
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

type response struct {
	status int
	denied string
	body   string
}

func do(t *testing.T, c *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header.Get("X-Egress-Denied"), string(b)}
}

func newReq(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// lineFor waits for the inner access line of a request for method and path.
func (e *inspectEnv) lineFor(method, path string) map[string]any {
	e.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		changed := e.log.wait()
		for _, l := range e.log.lines(e.t) {
			if l["inspected"] == true && l["method"] == method && l["path"] == path {
				return l
			}
		}
		select {
		case <-changed:
		case <-timeout:
			e.t.Fatalf("no inspected access line for %s", path)
		}
	}
}

func originLeaf(names ...string) func(*inspecttest.CA) tls.Certificate {
	return func(ca *inspecttest.CA) tls.Certificate {
		c, err := ca.Leaf(names...)
		if err != nil {
			panic(err)
		}
		return c
	}
}

// TestInspectedRequests: requests inside an inspected tunnel reach the
// origin through the chain, over HTTP/1.1 and HTTP/2, with the rule's
// headers set over what the client sent, origin X-Egress-* headers
// dropped, and an access line each.
func TestInspectedRequests(t *testing.T) {
	e := newInspectEnv(t, policy.ModeEnforce, originLeaf("upload.test", "open.test"), nil)
	for _, h2 := range []bool{false, true} {
		c := e.client("upload.test", h2)
		req := newReq(t, "POST", e.url("upload.test", "/upload?token=x"), "hello")
		req.Header.Set("X-Egress-Client-Group", "admin") // forged: replaced
		got := do(t, c, req)
		want := "origin saw POST upload.test:" + itoa(e.port) + " /upload?token=x body=hello"
		if got.status != 200 || got.body != want || got.denied != "" {
			t.Fatalf("h2 %v: %+v, want 200 %q without X-Egress-Denied", h2, got, want)
		}
		seen := <-e.seen
		if g := seen.Header.Values("X-Egress-Client-Group"); len(g) != 1 || g[0] != "web" {
			t.Fatalf("origin got X-Egress-Client-Group %q, want [web]", g)
		}
		if g := seen.Header.Get("X-Egress-Rule"); g != "uploads" {
			t.Fatalf("origin got X-Egress-Rule %q", g)
		}
		line := e.lineFor("POST", "/upload")
		for k, v := range map[string]any{"listener": "connect", "method": "POST", "status": 200.0, "decision": "allow",
			"rule": "uploads", "host": "upload.test", "sni": "upload.test", "ip": "127.0.0.1", "group": "web", "reason": ""} {
			if line[k] != v {
				t.Errorf("h2 %v: access line %s = %v, want %v (%v)", h2, k, line[k], v, line)
			}
		}
		c.Transport.(*http.Transport).CloseIdleConnections()
		e.log.mu.Lock()
		e.log.buf.Reset()
		e.log.mu.Unlock()
	}
}

// TestInspectedDenials: every check inside the tunnel answers 403 (or 502)
// inside TLS with its reason, and the origin sees nothing.
func TestInspectedDenials(t *testing.T) {
	e := newInspectEnv(t, policy.ModeEnforce, originLeaf("upload.test", "open.test"), nil)
	c := e.client("upload.test", false)
	tests := []struct {
		name, method, path, host, body string
		status                         int
		reason                         string
	}{
		{"method", "DELETE", "/upload", "", "", 403, "not_allowed"},
		{"path", "GET", "/admin", "", "", 403, "not_allowed"},
		{"dot-dot out of the prefix", "GET", "/api/v2/%2e%2e/admin", "", "", 403, "not_allowed"},
		{"host", "GET", "/api/v2/x", "evil.test", "", 403, "host_mismatch"},
		{"host port", "GET", "/api/v2/x", "upload.test:1", "", 403, "host_mismatch"},
		{"dlp", "POST", "/upload", "", "key=AKIAIOSFODNN7REALKEY", 403, "dlp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newReq(t, tt.method, e.url("upload.test", tt.path), tt.body)
			if tt.host != "" {
				req.Host = tt.host
			}
			got := do(t, c, req)
			if got.status != tt.status || got.denied != tt.reason {
				t.Fatalf("%+v, want %d %s", got, tt.status, tt.reason)
			}
			line := e.lineFor(tt.method, strings.SplitN(tt.path, "?", 2)[0])
			if line["reason"] != tt.reason || line["decision"] != "deny" || line["status"] != float64(tt.status) {
				t.Fatalf("access line %v", line)
			}
		})
	}
	if n := e.reached.Load(); n != 0 {
		t.Fatalf("the origin saw %d requests, want none", n)
	}
}

// TestInspectedReportMode: in report mode a method, path or Host the rule
// does not allow is logged and forwarded.
func TestInspectedReportMode(t *testing.T) {
	e := newInspectEnv(t, policy.ModeReport, originLeaf("upload.test", "open.test"), nil)
	c := e.client("upload.test", false)
	got := do(t, c, newReq(t, "DELETE", e.url("upload.test", "/upload"), ""))
	if got.status != 200 {
		t.Fatalf("%+v", got)
	}
	<-e.seen
	line := e.lineFor("DELETE", "/upload")
	if line["decision"] != "report" || line["reason"] != "not_allowed" {
		t.Fatalf("access line %v", line)
	}
}

// TestInspectedUpstreamCertificate: an origin whose certificate is not
// valid for the name, or that speaks nothing newer than TLS 1.1, gets the
// client a 502 upstream_tls inside TLS, never the origin's answer.
func TestInspectedUpstreamCertificate(t *testing.T) {
	for name, cert := range map[string]func(*inspecttest.CA) tls.Certificate{
		"self-signed": func(*inspecttest.CA) tls.Certificate {
			c, err := inspecttest.SelfSigned("badcert.test")
			if err != nil {
				panic(err)
			}
			return c
		},
		"other name": originLeaf("elsewhere.test"),
		"TLS 1.1":    originLeaf("badcert.test"), // a valid certificate: only the version is refused
	} {
		t.Run(name, func(t *testing.T) {
			e := newInspectEnv(t, policy.ModeEnforce, cert, nil, func(c *tls.Config) {
				if name == "TLS 1.1" {
					c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
				}
			})
			got := do(t, e.client("badcert.test", false), newReq(t, "GET", e.url("badcert.test", "/x"), ""))
			if got.status != http.StatusBadGateway || got.denied != "upstream_tls" {
				t.Fatalf("%+v, want 502 upstream_tls", got)
			}
			line := e.lineFor("GET", "/x")
			if line["reason"] != "upstream_tls" || line["status"] != 502.0 {
				t.Fatalf("access line %v", line)
			}
			if n := e.reached.Load(); n != 0 {
				t.Fatalf("the origin handled %d requests", n)
			}
		})
	}
}

// TestInspectedCache: with the HTTP cache on, inner requests are cached
// like forwarded ones: the second GET is a hit the origin never sees.
func TestInspectedCache(t *testing.T) {
	cache := httpcache.New(httpcache.Options{MaxBytes: 1 << 20, MaxObjectBytes: 1 << 20, CollapseTimeout: time.Second})
	e := newInspectEnv(t, policy.ModeEnforce, originLeaf("upload.test", "open.test"), cache)
	c := e.client("open.test", false)
	for i, want := range []string{"miss", "hit"} {
		got := do(t, c, newReq(t, "GET", e.url("open.test", "/cached"), ""))
		if got.status != 200 {
			t.Fatalf("request %d: %+v", i, got)
		}
		if i == 0 {
			<-e.seen
		}
		line := e.lineFor("GET", "/cached")
		if line["cache"] != want {
			t.Fatalf("request %d: cache %v, want %s", i, line["cache"], want)
		}
		e.log.mu.Lock()
		e.log.buf.Reset()
		e.log.mu.Unlock()
	}
	if n := e.reached.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}
