package icap

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/egressd/egressd/proxy/dlp/icap/icaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newClient(t *testing.T, srv *icaptest.Server, mod func(*Config)) *Client {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	cfg := Config{URL: u, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func post(body string) *Request {
	u, _ := url.Parse("http://upload.test:8080/put?x=1")
	h := http.Header{"Content-Type": {"text/plain"}, "X-Trace": {"abc"}}
	return &Request{Method: "POST", URL: u, Header: h, Body: []byte(body), ClientIP: "192.0.2.7", User: "alice"}
}

func noContent(*icaptest.Request) icaptest.Answer { return icaptest.Answer{NoContent: true} }

// A body longer than the preview: the client sends the preview, gets 100
// Continue, sends the rest; the service sees the whole request as it
// would be forwarded, with Allow: 204 and the client's identity.
func TestReqModPreviewContinue(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: 16, Allow204: true}, noContent)
	c := newClient(t, srv, nil)
	body := strings.Repeat("0123456789", 10)
	res, err := c.ReqMod(context.Background(), post(body))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 204 || res.Request != nil || res.Response != nil {
		t.Fatalf("result %+v, want 204 unmodified", res)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Preview != 16 || r.IEOF || string(r.Body) != body {
		t.Errorf("preview %d ieof %v body %q", r.Preview, r.IEOF, r.Body)
	}
	if r.Header.Get("Allow") != "204" {
		t.Errorf("Allow %q", r.Header.Get("Allow"))
	}
	if r.Header.Get("X-Client-Ip") != "192.0.2.7" || r.Header.Get("X-Authenticated-User") != base64.StdEncoding.EncodeToString([]byte("alice")) {
		t.Errorf("identity headers %v", r.Header)
	}
	h := r.HTTP
	if h.Method != "POST" || h.URL.String() != "http://upload.test:8080/put?x=1" || h.Host != "upload.test:8080" ||
		h.Header.Get("X-Trace") != "abc" || h.ContentLength != 100 {
		t.Errorf("encapsulated head %s %s host %s cl %d %v", h.Method, h.URL, h.Host, h.ContentLength, h.Header)
	}
}

// A body that fits the preview ends it with ieof: no 100 Continue.
func TestReqModPreviewIEOF(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: 1024}, noContent)
	c := newClient(t, srv, nil)
	if _, err := c.ReqMod(context.Background(), post("short body")); err != nil {
		t.Fatal(err)
	}
	r := srv.Requests()[0]
	if r.Preview != 10 || !r.IEOF || string(r.Body) != "short body" {
		t.Fatalf("preview %d ieof %v body %q", r.Preview, r.IEOF, r.Body)
	}
}

// Without Preview in OPTIONS the body goes whole; a bodiless request is
// null-body.
func TestReqModNoPreview(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, noContent)
	c := newClient(t, srv, nil)
	if _, err := c.ReqMod(context.Background(), post("whole")); err != nil {
		t.Fatal(err)
	}
	get := post("")
	get.Method = "GET"
	if _, err := c.ReqMod(context.Background(), get); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	if reqs[0].Preview != -1 || reqs[0].Header.Get("Preview") != "" || string(reqs[0].Body) != "whole" {
		t.Errorf("first: preview %d body %q", reqs[0].Preview, reqs[0].Body)
	}
	if !strings.Contains(reqs[1].Header.Get("Encapsulated"), "null-body") || reqs[1].HTTP.Method != "GET" {
		t.Errorf("second: %v", reqs[1].Header)
	}
}

// The service decides on the preview alone: no more of the body is sent,
// and the connection serves the next request.
func TestReqModDecideOnPreview(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: 8}, noContent)
	srv.DecideOnPreview = true
	c := newClient(t, srv, nil)
	for range 3 {
		if _, err := c.ReqMod(context.Background(), post(strings.Repeat("x", 5000))); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range srv.Requests() {
		if len(r.Body) != 8 || r.IEOF {
			t.Fatalf("service read %d bytes (ieof %v)", len(r.Body), r.IEOF)
		}
	}
	if srv.Accepted() != 1 {
		t.Fatalf("%d connections for 3 requests", srv.Accepted())
	}
}

// 200 with a modified request: the new head and body come back.
func TestReqModModified(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: 0}, func(r *icaptest.Request) icaptest.Answer {
		nr := r.HTTP.Clone(context.Background())
		nr.URL.Path = "/redacted"
		nr.Header.Set("X-Redacted", "1")
		nr.Header.Del("X-Trace")
		return icaptest.Answer{Request: nr, RequestBody: bytes.ReplaceAll(r.Body, []byte("secret"), []byte("******"))}
	})
	c := newClient(t, srv, nil)
	res, err := c.ReqMod(context.Background(), post("a secret here"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Request == nil || res.Response != nil {
		t.Fatalf("result %+v", res)
	}
	if res.Request.URL.Path != "/redacted" || res.Request.Header.Get("X-Redacted") != "1" || res.Request.Header.Get("X-Trace") != "" ||
		string(res.Body) != "a ****** here" || res.Request.ContentLength != int64(len(res.Body)) || res.Request.Header.Get("Content-Length") != "" {
		t.Fatalf("modified %s %v body %q", res.Request.URL, res.Request.Header, res.Body)
	}
	// Preview: 0 asks for the body after the head alone.
	if r := srv.Requests()[0]; r.Preview != 0 || string(r.Body) != "a secret here" {
		t.Fatalf("preview %d body %q", r.Preview, r.Body)
	}
}

// 200 with an encapsulated response: the block page comes back whole.
func TestReqModResponse(t *testing.T) {
	page := []byte("<html>blocked by policy</html>")
	srv := icaptest.New(t, icaptest.Options{Preview: 4}, func(r *icaptest.Request) icaptest.Answer {
		return icaptest.Answer{Response: &http.Response{StatusCode: 403, Header: http.Header{
			"Content-Type": {"text/html"}, "Content-Length": {"999"}}}, ResponseBody: page}
	})
	c := newClient(t, srv, nil)
	res, err := c.ReqMod(context.Background(), post("TOPSECRET"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Response == nil || res.Response.StatusCode != 403 || res.Response.Header.Get("Content-Type") != "text/html" {
		t.Fatalf("result %+v", res)
	}
	got, _ := io.ReadAll(res.Response.Body)
	if !bytes.Equal(got, page) || res.Response.ContentLength != int64(len(page)) || res.Response.Header.Get("Content-Length") != "" {
		t.Fatalf("body %q cl %d", got, res.Response.ContentLength)
	}
}

// Sequential requests share one connection and one OPTIONS.
func TestPersistentConnection(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: 16}, noContent)
	c := newClient(t, srv, nil)
	for range 10 {
		if _, err := c.ReqMod(context.Background(), post(strings.Repeat("y", 100))); err != nil {
			t.Fatal(err)
		}
	}
	if srv.Accepted() != 1 || srv.OptionsCount() != 1 {
		t.Fatalf("%d connections, %d OPTIONS for 10 requests", srv.Accepted(), srv.OptionsCount())
	}
	if st := c.Stats(); st.Open != 1 || st.Idle != 1 {
		t.Fatalf("pool %+v", st)
	}
}

// Max-Connections bounds the pool: concurrent requests wait for a
// connection rather than open more.
func TestMaxConnections(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 6)
	srv := icaptest.New(t, icaptest.Options{Preview: -1, MaxConnections: 2}, func(*icaptest.Request) icaptest.Answer {
		entered <- struct{}{}
		<-release
		return icaptest.Answer{NoContent: true}
	})
	c := newClient(t, srv, nil)
	if _, err := c.Options(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			_, err := c.ReqMod(context.Background(), post("z"))
			errs <- err
		})
	}
	// Two transactions reach the service; the others wait for a slot.
	<-entered
	<-entered
	if st := c.Stats(); st.Open != 2 {
		t.Errorf("pool open %d, want 2", st.Open)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if srv.Peak() > 2 || srv.Accepted() > 2 {
		t.Fatalf("service saw %d connections at once (%d in all), Max-Connections 2", srv.Peak(), srv.Accepted())
	}
}

// An answer with another ISTag makes the client ask OPTIONS again before
// its next request; so does an expired Options-TTL.
func TestOptionsRefresh(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: 4, ISTag: "T1", TTL: 60}, noContent)
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixNano())
	c := newClient(t, srv, func(cfg *Config) { cfg.Now = func() time.Time { return time.Unix(0, now.Load()) } })
	ask := func() {
		t.Helper()
		if _, err := c.ReqMod(context.Background(), post("body")); err != nil {
			t.Fatal(err)
		}
	}
	ask()
	ask()
	if n := srv.OptionsCount(); n != 1 {
		t.Fatalf("%d OPTIONS, want 1", n)
	}
	srv.SetOptions(icaptest.Options{Preview: 2, ISTag: "T2", TTL: 60})
	ask() // answered with ISTag T2: the options are stale
	if n := srv.OptionsCount(); n != 1 {
		t.Fatalf("%d OPTIONS before the next request, want 1", n)
	}
	ask()
	if n := srv.OptionsCount(); n != 2 {
		t.Fatalf("%d OPTIONS after the ISTag changed, want 2", n)
	}
	if r := srv.Requests(); r[len(r)-1].Preview != 2 {
		t.Fatalf("the new Preview was not used: %d", r[len(r)-1].Preview)
	}
	now.Add(int64(59 * time.Second))
	ask()
	if n := srv.OptionsCount(); n != 2 {
		t.Fatalf("%d OPTIONS within the TTL, want 2", n)
	}
	now.Add(int64(2 * time.Second))
	ask()
	if n := srv.OptionsCount(); n != 3 {
		t.Fatalf("%d OPTIONS after the TTL ran out, want 3", n)
	}
}

// A service that closed an idle connection: the request is retried once
// on a new one and succeeds.
func TestIdleConnectionClosedByService(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer {
		return icaptest.Answer{NoContent: true, Hangup: true}
	})
	c := newClient(t, srv, nil)
	for i := range 3 {
		if _, err := c.ReqMod(context.Background(), post("q")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// Connection: close is honoured without a failed attempt.
	srv2 := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer {
		return icaptest.Answer{NoContent: true, Close: true}
	})
	c2 := newClient(t, srv2, nil)
	for range 3 {
		if _, err := c2.ReqMod(context.Background(), post("q")); err != nil {
			t.Fatal(err)
		}
	}
	if st := c2.Stats(); st.Open != 0 {
		t.Fatalf("pool keeps %d closed connections", st.Open)
	}
}

// Services that fail: every failure is an error (the caller's failure
// policy decides), none is a hang, and nothing leaks.
func TestServiceFailures(t *testing.T) {
	cases := []struct {
		name    string
		opts    icaptest.Options // the connection of a well-formed OPTIONS stays pooled
		answer  icaptest.Answer
		isProto bool
		timeout bool
	}{
		{name: "stall", answer: icaptest.Answer{Stall: true}, timeout: true},
		{name: "drop", answer: icaptest.Answer{Drop: true}},
		{name: "garbage", answer: icaptest.Answer{Raw: []byte("HTTP/1.1 200 OK\r\n\r\n")}, isProto: true},
		{name: "binary garbage", answer: icaptest.Answer{Raw: []byte{0, 1, 2, 3, 0xff, '\n', '\n'}}, isProto: true},
		{name: "bad encapsulated", answer: icaptest.Answer{Raw: []byte("ICAP/1.0 200 OK\r\nEncapsulated: req-hdr=5, req-body=1\r\n\r\n")}, isProto: true},
		{name: "cut short", answer: icaptest.Answer{Raw: []byte("ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 403 No\r\n\r\n5\r\nab")}},
		{name: "huge chunk", answer: icaptest.Answer{Raw: []byte("ICAP/1.0 200 OK\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 403 No\r\n\r\nfffffffffff\r\n")}, isProto: true},
		{name: "icap error status", answer: icaptest.Answer{Status: 500}},
		{name: "200 without a message", answer: icaptest.Answer{Raw: []byte("ICAP/1.0 200 OK\r\nEncapsulated: null-body=0\r\n\r\n")}, isProto: true},
		{name: "no REQMOD", opts: icaptest.Options{Methods: "RESPMOD"}, answer: icaptest.Answer{NoContent: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Preview = -1
			srv := icaptest.New(t, tc.opts, func(*icaptest.Request) icaptest.Answer { return tc.answer })
			c := newClient(t, srv, func(cfg *Config) { cfg.Timeout = 300 * time.Millisecond })
			_, err := c.ReqMod(context.Background(), post("TOPSECRET-42 in the body"))
			if err == nil {
				t.Fatal("no error")
			}
			if tc.isProto && !errors.Is(err, ErrProtocol) {
				t.Errorf("error %v is not a protocol error", err)
			}
			if tc.timeout && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v is not a timeout", err)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Errorf("the error repeats the request: %v", err)
			}
			if st := c.Stats(); st.Open != st.Idle {
				t.Errorf("pool keeps %+v after a failure", st)
			}
		})
	}
}

// A service that is not there, and a client request that goes away.
func TestUnreachableAndCancel(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer { return icaptest.Answer{Stall: true} })
	addr := srv.Addr
	srv.Close()
	u, _ := url.Parse("icap://" + addr + "/reqmod")
	c, _ := New(Config{URL: u, Timeout: 2 * time.Second})
	defer c.Close()
	if _, err := c.ReqMod(context.Background(), post("x")); err == nil {
		t.Fatal("no error from a closed port")
	}

	arrived := make(chan struct{}, 1)
	srv2 := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer {
		arrived <- struct{}{}
		return icaptest.Answer{Stall: true}
	})
	c2 := newClient(t, srv2, func(cfg *Config) { cfg.Timeout = time.Minute })
	if _, err := c2.Options(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c2.ReqMod(ctx, post("x"))
		done <- err
	}()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want canceled", err)
	}
}

// An encapsulated body past MaxBody is refused, not buffered.
func TestMaxBody(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(r *icaptest.Request) icaptest.Answer {
		return icaptest.Answer{Response: &http.Response{StatusCode: 403, Header: http.Header{}}, ResponseBody: bytes.Repeat([]byte("x"), 5000)}
	})
	c := newClient(t, srv, func(cfg *Config) { cfg.MaxBody = 4096 })
	if _, err := c.ReqMod(context.Background(), post("x")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("error %v", err)
	}
}

// After Close, requests fail at once.
func TestClose(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, noContent)
	c := newClient(t, srv, nil)
	c.Start()
	if _, err := c.ReqMod(context.Background(), post("x")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.ReqMod(context.Background(), post("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("error %v after Close", err)
	}
}
