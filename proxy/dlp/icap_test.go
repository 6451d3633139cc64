package dlp

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/dlp/icap/icaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// icapEngine is an engine whose profiles ask srv: "strict" (built-in
// detectors, then ICAP), "only" (ICAP alone) and "watch" (report mode).
func icapEngine(t *testing.T, srv *icaptest.Server, failure, oversize string, max int64) *Engine {
	t.Helper()
	r, err := Compile(icapConfig(srv.URL, failure, oversize, max))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(r)
	e.Start()
	t.Cleanup(e.Close)
	return e
}

func icapConfig(u, failure, oversize string, max int64) Config {
	return Config{
		DefaultProfile: "strict", MaxScanBytes: max, Oversize: oversize,
		ICAP: ICAPConfig{URL: u, Timeout: 2 * time.Second, Failure: failure},
		Profiles: map[string]ProfileConfig{
			"strict": {Mode: ModeEnforce, Detectors: BuiltinDetectors, ICAP: true},
			"only":   {Mode: ModeEnforce, ICAP: true},
			"watch":  {Mode: ModeReport, ICAP: true},
		},
	}
}

func icapInspect(t *testing.T, e *Engine, profile string, body string) (*Outcome, []byte) {
	t.Helper()
	u, _ := url.Parse("http://upload.test/path?q=1")
	h := http.Header{"Content-Type": {"text/plain"}, "X-Trace": {"t1"}}
	out := e.Inspect(context.Background(), profile, &Request{
		Client: policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), User: "bob"},
		Host:   "upload.test", Port: 80, Method: "POST", URL: u, Header: h, ContentLength: int64(len(body)),
	}, io.NopCloser(strings.NewReader(body)))
	if out == nil {
		t.Fatal("not inspected")
	}
	var fwd []byte
	if out.Action == Forward && out.Body != nil {
		fwd, _ = io.ReadAll(out.Body)
		out.Body.Close()
	}
	return out, fwd
}

func blockPage(*icaptest.Request) icaptest.Answer {
	return icaptest.Answer{Response: &http.Response{StatusCode: 403, Header: http.Header{
		"Content-Type": {"text/html"}, "X-Egress-Denied": {"forged"}, "Connection": {"X-Hop"}, "X-Hop": {"1"},
	}}, ResponseBody: []byte("<h1>blocked</h1>")}
}

// The chain: built-in detectors first; a request they block never goes to
// the ICAP service. Clean requests are asked, and each ICAP answer maps to
// forward, replace or block.
func TestICAPChain(t *testing.T) {
	var answer func(*icaptest.Request) icaptest.Answer
	srv := icaptest.New(t, icaptest.Options{Preview: 8, Allow204: true}, func(r *icaptest.Request) icaptest.Answer { return answer(r) })
	e := icapEngine(t, srv, FailureClosed, OversizeBlock, 1<<20)

	answer = func(*icaptest.Request) icaptest.Answer { return icaptest.Answer{NoContent: true} }
	out, _ := icapInspect(t, e, "strict", "token="+testSecret)
	if out.Action != Block || out.ICAP != "" || len(srv.Requests()) != 0 {
		t.Fatalf("built-in block: action %d icap %q, service asked %d times", out.Action, out.ICAP, len(srv.Requests()))
	}

	out, fwd := icapInspect(t, e, "strict", "a clean body, longer than the preview")
	if out.Action != Forward || out.ICAP != ICAPAllow || out.Replace != nil || string(fwd) != "a clean body, longer than the preview" {
		t.Fatalf("204: action %d icap %q fwd %q", out.Action, out.ICAP, fwd)
	}
	r := srv.Requests()[0]
	if r.HTTP.URL.String() != "http://upload.test/path?q=1" || r.Header.Get("X-Client-Ip") != "192.0.2.9" || string(r.Body) != "a clean body, longer than the preview" {
		t.Fatalf("the service saw %s %v %q", r.HTTP.URL, r.Header, r.Body)
	}

	// A 200 that returns the request unchanged is an allow.
	answer = func(r *icaptest.Request) icaptest.Answer {
		return icaptest.Answer{Request: r.HTTP, RequestBody: r.Body}
	}
	if out, fwd := icapInspect(t, e, "only", "same"); out.ICAP != ICAPAllow || out.Replace != nil || string(fwd) != "same" {
		t.Fatalf("echo: icap %q replace %v fwd %q", out.ICAP, out.Replace, fwd)
	}

	answer = func(r *icaptest.Request) icaptest.Answer {
		nr := r.HTTP.Clone(context.Background())
		nr.URL.Path = "/clean"
		nr.Header.Set("X-Redacted", "yes")
		return icaptest.Answer{Request: nr, RequestBody: []byte("redacted")}
	}
	out, fwd = icapInspect(t, e, "only", "card 4556737586899855")
	if out.Action != Forward || out.ICAP != ICAPModify || out.Replace == nil || string(fwd) != "redacted" ||
		out.Replace.URL.Path != "/clean" || out.Replace.Header.Get("X-Redacted") != "yes" {
		t.Fatalf("modify: action %d icap %q replace %+v fwd %q", out.Action, out.ICAP, out.Replace, fwd)
	}

	answer = blockPage
	out, _ = icapInspect(t, e, "only", "TOPSECRET")
	if out.Action != Block || out.ICAP != ICAPBlock || out.Response == nil || locations(out.Findings) != "icap@icap" {
		t.Fatalf("block: action %d icap %q findings %s", out.Action, out.ICAP, locations(out.Findings))
	}
	page, _ := io.ReadAll(out.Response.Body)
	h := out.Response.Header
	if out.Response.StatusCode != 403 || string(page) != "<h1>blocked</h1>" || h.Get("Content-Type") != "text/html" ||
		h.Get("X-Egress-Denied") != "" || h.Get("X-Hop") != "" || h.Get("Connection") != "" {
		t.Fatalf("block page %d %v %q", out.Response.StatusCode, h, page)
	}

	// Report mode forwards what it would block or modify, as it was sent.
	out, fwd = icapInspect(t, e, "watch", "TOPSECRET")
	if out.Action != Forward || !out.Report || out.ICAP != ICAPBlock || out.Response != nil || string(fwd) != "TOPSECRET" {
		t.Fatalf("report: action %d icap %q fwd %q", out.Action, out.ICAP, fwd)
	}
}

// dlp.icap.failure: closed answers dlp_unavailable and forwards nothing;
// open forwards the request untouched and says the service failed.
func TestICAPFailurePolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer icaptest.Answer
	}{
		{"stall", icaptest.Answer{Stall: true}},
		{"drop", icaptest.Answer{Drop: true}},
		{"garbage", icaptest.Answer{Raw: []byte("NOT ICAP\r\n\r\n")}},
		{"icap 500", icaptest.Answer{Status: 500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer { return tc.answer })
			for _, failure := range []string{FailureClosed, FailureOpen} {
				cfg := icapConfig(srv.URL, failure, OversizeBlock, 1<<20)
				cfg.ICAP.Timeout = 300 * time.Millisecond
				r, err := Compile(cfg)
				if err != nil {
					t.Fatal(err)
				}
				e := NewEngine(r)
				var states []bool
				e.OnICAPState = func(up bool, err error) { states = append(states, up) }
				out, fwd := icapInspect(t, e, "only", "payload")
				out2, _ := icapInspect(t, e, "only", "payload")
				e.Close()
				if out.ICAP != ICAPError || out2.ICAP != ICAPError || len(states) != 1 || states[0] {
					t.Errorf("%s: icap %q, state changes %v", failure, out.ICAP, states)
				}
				switch failure {
				case FailureClosed:
					if out.Action != Unavailable || out.Body != nil {
						t.Errorf("closed: action %d", out.Action)
					}
				case FailureOpen:
					if out.Action != Forward || string(fwd) != "payload" {
						t.Errorf("open: action %d fwd %q", out.Action, fwd)
					}
				}
			}
		})
	}
}

// A service that comes back is reported once.
func TestICAPStateRecovers(t *testing.T) {
	fail := true
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer {
		if fail {
			return icaptest.Answer{Status: 503}
		}
		return icaptest.Answer{NoContent: true}
	})
	e := icapEngine(t, srv, FailureClosed, OversizeBlock, 1<<20)
	var states []bool
	var lastErr error
	e.OnICAPState = func(up bool, err error) { states, lastErr = append(states, up), err }
	icapInspect(t, e, "only", "x")
	icapInspect(t, e, "only", "x")
	if len(states) != 1 || states[0] || lastErr == nil {
		t.Fatalf("states %v err %v", states, lastErr)
	}
	fail = false
	if out, _ := icapInspect(t, e, "only", "x"); out.ICAP != ICAPAllow {
		t.Fatalf("icap %q", out.ICAP)
	}
	if len(states) != 2 || !states[1] {
		t.Fatalf("states %v", states)
	}
}

// An oversize body (oversize: allow) shows the service its held part; a
// modification of a part cannot be applied to the whole: blocked.
func TestICAPPartialBody(t *testing.T) {
	modify := false
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(r *icaptest.Request) icaptest.Answer {
		if modify {
			return icaptest.Answer{Request: r.HTTP, RequestBody: []byte("changed")}
		}
		return icaptest.Answer{NoContent: true}
	})
	e := icapEngine(t, srv, FailureClosed, OversizeAllow, 64)
	body := strings.Repeat("z", 200)
	out, fwd := icapInspect(t, e, "only", body)
	if out.Action != Forward || string(fwd) != body {
		t.Fatalf("action %d fwd %d bytes", out.Action, len(fwd))
	}
	if r := srv.Requests()[0]; len(r.Body) != 65 || r.HTTP.ContentLength > 0 {
		t.Fatalf("the service saw %d bytes, Content-Length %d", len(r.Body), r.HTTP.ContentLength)
	}
	modify = true
	if out, _ := icapInspect(t, e, "only", body); out.Action != Block || out.ICAP != ICAPModify && out.ICAP != ICAPBlock {
		t.Fatalf("partial modify: action %d icap %q", out.Action, out.ICAP)
	}
}

// A reload that leaves dlp.icap alone keeps the client (its connections
// and options); one that changes it swaps the client.
func TestICAPReloadKeepsClient(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer { return icaptest.Answer{NoContent: true} })
	e := icapEngine(t, srv, FailureClosed, OversizeBlock, 1<<20)
	icapInspect(t, e, "only", "x")
	cfg := icapConfig(srv.URL, FailureOpen, OversizeBlock, 1<<20)
	r, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.Store(r)
	icapInspect(t, e, "only", "x")
	if srv.Accepted() != 1 || srv.OptionsCount() != 1 {
		t.Fatalf("reload reconnected: %d connections, %d OPTIONS", srv.Accepted(), srv.OptionsCount())
	}
	cfg.ICAP.Timeout = 3 * time.Second
	if r, err = Compile(cfg); err != nil {
		t.Fatal(err)
	}
	e.Store(r)
	icapInspect(t, e, "only", "x")
	if srv.Accepted() != 2 {
		t.Fatalf("a changed dlp.icap kept the old client: %d connections", srv.Accepted())
	}
}

// An interim status is no block page: egressd's own 403.
func TestICAPInterimResponse(t *testing.T) {
	srv := icaptest.New(t, icaptest.Options{Preview: -1}, func(*icaptest.Request) icaptest.Answer {
		return icaptest.Answer{Response: &http.Response{StatusCode: 101, Header: http.Header{"Upgrade": {"x"}}}}
	})
	e := icapEngine(t, srv, FailureClosed, OversizeBlock, 1<<20)
	if out, _ := icapInspect(t, e, "only", "x"); out.Action != Block || out.Response != nil {
		t.Fatalf("action %d response %v", out.Action, out.Response)
	}
}
