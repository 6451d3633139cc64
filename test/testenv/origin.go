package testenv

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Echo is what an [Origin] answers: what reached it. Every response body is
// one Echo as JSON; the response also carries the header X-Origin: Name.
type Echo struct {
	Origin string      `json:"origin"` // the origin's own name
	Method string      `json:"method"`
	Host   string      `json:"host"` // the Host the origin received (r.Host)
	Path   string      `json:"path"`
	Query  string      `json:"query,omitempty"`
	SNI    string      `json:"sni,omitempty"` // TLS server name, "" for plain HTTP or no SNI
	Remote string      `json:"remote"`        // the peer address (egressd's dialing side)
	Header http.Header `json:"header"`
	// Body is the request body the origin read (not echoed back), and
	// BodyErr why reading it stopped early ("" when it was whole): an
	// aborted upload shows here.
	Body    []byte `json:"-"`
	BodyErr string `json:"-"`
}

// ParseEcho decodes an origin's response body.
func ParseEcho(body []byte) (Echo, error) {
	var e Echo
	err := json.Unmarshal(body, &e)
	return e, err
}

// Origin is an HTTP or HTTPS server that echoes each request as JSON.
type Origin struct {
	// Name is the origin's own name, reported in every Echo.
	Name string
	// URL is the base URL by address, e.g. https://127.0.0.2:41234.
	URL string

	srv   *httptest.Server
	mu    sync.Mutex
	seen  []Echo
	conns int
	errs  []string
}

// TLSOrigin starts an HTTPS origin on ip:0 in the host namespace with a
// certificate from ca for names (and ip). Its Name is names[0], or ip.
func TLSOrigin(t testing.TB, ca *CA, ip string, names ...string) *Origin {
	t.Helper()
	return TLSOriginIn(t, nil, ca, ip, names...)
}

// TLSOriginIn is [TLSOrigin] inside ns (nil: the host namespace).
func TLSOriginIn(t testing.TB, ns *Netns, ca *CA, ip string, names ...string) *Origin {
	t.Helper()
	return startTLSOrigin(t, ns, ca, net.JoinHostPort(ip, "0"), names)
}

// TLSOriginAt is [TLSOriginIn] on addr ("ip:port"), for a namespace of the
// test's own where the origin must be on its service's port (443 behind an
// in-line gateway, which hands on the port the client dialed).
func TLSOriginAt(t testing.TB, ns *Netns, ca *CA, addr string, names ...string) *Origin {
	t.Helper()
	return startTLSOrigin(t, ns, ca, addr, names)
}

func startTLSOrigin(t testing.TB, ns *Netns, ca *CA, addr string, names []string) *Origin {
	t.Helper()
	ip, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("origin address %q: %v", addr, err)
	}
	cert := ca.Issue(append(append([]string(nil), names...), ip)...)
	o := newOrigin(t, ns, addr, names)
	o.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	o.srv.StartTLS()
	o.URL = o.srv.URL
	t.Cleanup(o.srv.Close)
	return o
}

// HTTPOrigin starts a plain HTTP origin on ip:0 in the host namespace.
func HTTPOrigin(t testing.TB, ip, name string) *Origin {
	t.Helper()
	return HTTPOriginIn(t, nil, ip, name)
}

// HTTPOriginIn is [HTTPOrigin] inside ns (nil: the host namespace).
func HTTPOriginIn(t testing.TB, ns *Netns, ip, name string) *Origin {
	t.Helper()
	return startHTTPOrigin(t, ns, net.JoinHostPort(ip, "0"), name)
}

// HTTPOriginAt is [HTTPOriginIn] on addr ("ip:port"); see [TLSOriginAt].
func HTTPOriginAt(t testing.TB, ns *Netns, addr, name string) *Origin {
	t.Helper()
	return startHTTPOrigin(t, ns, addr, name)
}

func startHTTPOrigin(t testing.TB, ns *Netns, addr, name string) *Origin {
	t.Helper()
	var names []string
	if name != "" {
		names = []string{name}
	}
	o := newOrigin(t, ns, addr, names)
	o.srv.Start()
	o.URL = o.srv.URL
	t.Cleanup(o.srv.Close)
	return o
}

// newOrigin listens on addr ("ip:port"); its Name is names[0], or the ip.
func newOrigin(t testing.TB, ns *Netns, addr string, names []string) *Origin {
	t.Helper()
	ip, _, _ := net.SplitHostPort(addr)
	o := &Origin{Name: ip}
	if len(names) > 0 {
		o.Name = names[0]
	}
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("origin listen on %s: %v", addr, err)
	}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	o.srv.Config.ErrorLog = log.New(errorSink{o}, "", 0)
	o.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			o.mu.Lock()
			o.conns++
			o.mu.Unlock()
		}
	}
	o.srv.Listener.Close()
	o.srv.Listener = ln
	return o
}

func (o *Origin) serve(w http.ResponseWriter, r *http.Request) {
	e := Echo{
		Origin: o.Name,
		Method: r.Method,
		Host:   r.Host,
		Path:   r.URL.Path,
		Query:  r.URL.RawQuery,
		Remote: r.RemoteAddr,
		Header: r.Header.Clone(),
	}
	if r.TLS != nil {
		e.SNI = r.TLS.ServerName
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	e.Body = body
	if err != nil {
		e.BodyErr = err.Error()
	}
	o.mu.Lock()
	o.seen = append(o.seen, e)
	o.mu.Unlock()
	body, _ = json.Marshal(e)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Origin", o.Name)
	w.Write(append(body, '\n'))
}

// Addr returns the origin's "ip:port".
func (o *Origin) Addr() string { return o.srv.Listener.Addr().String() }

// Port returns the origin's port.
func (o *Origin) Port() int {
	_, p, _ := net.SplitHostPort(o.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

// Requests returns every request the origin answered, in order.
func (o *Origin) Requests() []Echo {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Echo(nil), o.seen...)
}

// Count returns how many requests the origin answered.
func (o *Origin) Count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen)
}

// Conns returns how many TCP connections the origin accepted, including
// ones that never completed a request (a failed TLS handshake, say).
func (o *Origin) Conns() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conns
}

// Errors returns what the server would have logged: TLS handshake failures
// (a client that rejected the certificate, a non-TLS client) and the like.
func (o *Origin) Errors() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.errs...)
}

// errorSink collects the http.Server's error log into the Origin.
type errorSink struct{ o *Origin }

func (s errorSink) Write(p []byte) (int, error) {
	s.o.mu.Lock()
	s.o.errs = append(s.o.errs, strings.TrimSpace(string(p)))
	s.o.mu.Unlock()
	return len(p), nil
}
