package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/proxy/dlp/icap/icaptest"
	"github.com/egressd/egressd/test/testenv"
)

// newICAPFarm is the farm with a rule for upload.test that asks the
// profile "guarded": built-in detectors first, then the ICAP service that
// service starts (in the farm's namespace, before egressd) and names.
func newICAPFarm(t *testing.T, service func(f *farm) (url, failure string, timeout time.Duration)) *farm {
	t.Helper()
	f := newFarmWith(t, "enforce", func(f *farm, c *testenv.Config) {
		url, failure, timeout := service(f)
		c.DLP.ICAP = config.DLPICAP{URL: url, Timeout: timeout, Failure: failure}
		c.DLP.Profiles = map[string]config.DLPProfile{
			"guarded": {Detectors: []string{"github_token", "aws_access_key"}, ICAP: true},
		}
		c.Policy.Rules = append([]testenv.Rule{
			{Name: "upload", Hosts: []string{"upload.test"}, Ports: f.ports(), AllowRanges: []string{"127.0.0.0/24"}, DLP: "guarded"},
		}, c.Policy.Rules...)
	})
	f.dns.Set("upload.test", 60, netip.MustParseAddr(httpIP))
	t.Cleanup(func() { assertNoSecretOutput(t, f) })
	return f
}

// lineOf waits for the access line of the request sent when egressd had
// written before lines, and checks its fields.
func (f *farm) lineOf(t *testing.T, before int, kv map[string]any) map[string]any {
	t.Helper()
	i := 0
	line := f.proc.WaitForLog(t, func(map[string]any) bool { i++; return i == before+1 })
	if !testenv.Fields(kv)(line) {
		t.Fatalf("access line %v, want %v", line, kv)
	}
	return line
}

// curlPost sends body through egressd with curl and returns the status line's
// code, the headers and the response body.
func (f *farm) curlPost(t *testing.T, path, body string) (code string, hdr, out string) {
	t.Helper()
	file := writeTemp(t, []byte(body))
	out, hdr, exit := f.curl(t, f.proxyEnv(), "-X", "POST", "-H", "Content-Type: text/plain", "--data-binary", "@"+file,
		fmt.Sprintf("http://upload.test:%d%s", f.httpPort, path))
	if exit != 0 {
		t.Fatalf("curl exit %d: %s", exit, hdr)
	}
	fields := strings.Fields(firstLine(hdr))
	if len(fields) < 2 {
		t.Fatalf("no status line in %q", hdr)
	}
	return fields[1], hdr, out
}

// TestDLPICAPCICap: egressd asks Debian's c-icap (srv_content_filtering
// blocking a pattern). A body it blocks gets c-icap's own 403 page with
// X-Egress-Denied: dlp, and the origin sees nothing; a clean body is
// forwarded byte for byte; the built-in detectors still answer first.
func TestDLPICAPCICap(t *testing.T) {
	f := newICAPFarm(t, func(f *farm) (string, string, time.Duration) {
		ci := testenv.StartCICAP(t, f.ns, "127.0.0.1", testenv.CICAPConfig{Block: []string{"TOPSECRET-[0-9]+"}})
		return ci.URL("filter"), "closed", 5 * time.Second
	})

	n := len(f.proc.AccessLines())
	code, _, _ := f.curlPost(t, "/clean", "quarterly numbers, nothing secret")
	if seen := f.originSaw("/clean"); code != "200" || len(seen) != 1 || string(seen[0].Body) != "quarterly numbers, nothing secret" ||
		seen[0].Header.Get("Via") != "" {
		t.Fatalf("clean: %s, origin saw %+v", code, seen)
	}
	f.lineOf(t, n, map[string]any{"host": "upload.test", "decision": "allow", "dlp_profile": "guarded", "dlp_icap": "allow"})

	n = len(f.proc.AccessLines())
	code, hdr, page := f.curlPost(t, "/blocked", "export of TOPSECRET-4242 attached")
	if code != "403" || !strings.Contains(hdr, "X-Egress-Denied: dlp\r") || !strings.Contains(page, "BLOCKED") {
		t.Fatalf("blocked: %s\n%s\n%s", code, hdr, page)
	}
	if seen := f.originSaw("/blocked"); len(seen) > 0 {
		t.Fatalf("the origin saw a request c-icap blocked: %+v", seen)
	}
	line := f.lineOf(t, n, map[string]any{"host": "upload.test", "decision": "deny", "reason": "dlp", "dlp_icap": "block"})
	if got := fmt.Sprint(line["dlp"]); got != "[map[detector:icap location:icap]]" {
		t.Fatalf("findings %s", got)
	}

	// The built-in detectors block before the service is asked.
	n = len(f.proc.AccessLines())
	code, _, body := f.curlPost(t, "/token", "token="+dlpGitHub)
	if code != "403" || !strings.Contains(body, "egressd: denied: dlp") {
		t.Fatalf("built-in: %s %q", code, body)
	}
	line = f.lineOf(t, n, map[string]any{"host": "upload.test", "decision": "deny", "reason": "dlp"})
	if _, asked := line["dlp_icap"]; asked || fmt.Sprint(line["dlp"]) != "[map[detector:github_token location:body:6]]" {
		t.Fatalf("built-in block: %v", line)
	}

	// Go's Transport, bodies of 300 KB: the pattern at the very end.
	c := f.proc.HTTPClient(t, f.ca.CertPool())
	big := bytes.Repeat([]byte("lorem ipsum dolor sit amet\n"), 11000)
	for _, tc := range []struct {
		path string
		body []byte
		want int
	}{
		{"/go-clean", big, 200},
		{"/go-blocked", append(bytes.Clone(big), "TOPSECRET-77"...), 403},
	} {
		resp, err := c.Post(fmt.Sprintf("http://upload.test:%d%s", f.httpPort, tc.path), "text/plain", bytes.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		seen := f.originSaw(tc.path)
		if resp.StatusCode != tc.want {
			t.Fatalf("%s: %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
		if tc.want == 200 && (len(seen) != 1 || !bytes.Equal(seen[0].Body, tc.body)) {
			t.Fatalf("%s: the origin did not get the body whole", tc.path)
		}
		if tc.want == 403 && (len(seen) != 0 || resp.Header.Get("X-Egress-Denied") != "dlp") {
			t.Fatalf("%s: origin saw %d requests, X-Egress-Denied %q", tc.path, len(seen), resp.Header.Get("X-Egress-Denied"))
		}
	}

	out, _, _ := f.curl(t, nil, "http://"+f.proc.AdminAddr+"/metrics")
	for _, want := range []string{
		`egressd_dlp_icap_requests_total{result="allow"} 2`,
		`egressd_dlp_icap_requests_total{result="block"} 2`,
		`egressd_dlp_icap_requests_total{result="error"} 0`,
		`egressd_dlp_findings_total{detector="icap",mode="enforce"} 2`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestDLPICAPEcho: c-icap's echo service returns every request unchanged:
// egressd forwards each as the client sent it.
func TestDLPICAPEcho(t *testing.T) {
	f := newICAPFarm(t, func(f *farm) (string, string, time.Duration) {
		ci := testenv.StartCICAP(t, f.ns, "127.0.0.1", testenv.CICAPConfig{})
		return ci.URL("echo"), "closed", 5 * time.Second
	})
	for i, body := range []string{"tiny", strings.Repeat("x", 900), strings.Repeat("0123456789abcdef", 40000)} {
		path := fmt.Sprintf("/echo-%d", i)
		n := len(f.proc.AccessLines())
		code, _, _ := f.curlPost(t, path, body)
		if seen := f.originSaw(path); code != "200" || len(seen) != 1 || string(seen[0].Body) != body {
			t.Fatalf("%d bytes: %s, origin saw %d requests", len(body), code, len(seen))
		}
		f.lineOf(t, n, map[string]any{"decision": "allow", "dlp_icap": "allow"})
	}
}

// icapBehaviour switches what an in-process ICAP service does.
type icapBehaviour struct{ mode atomic.Value }

func (b *icapBehaviour) set(m string) { b.mode.Store(m) }

func (b *icapBehaviour) answer(r *icaptest.Request) icaptest.Answer {
	m, _ := b.mode.Load().(string)
	switch m {
	case "stall":
		return icaptest.Answer{Stall: true}
	case "drop":
		return icaptest.Answer{Drop: true}
	case "garbage":
		return icaptest.Answer{Raw: []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")}
	case "modify":
		nr := r.HTTP.Clone(context.Background())
		nr.URL.Path = "/rewritten"
		nr.Header.Set("X-Redacted", "1")
		return icaptest.Answer{Request: nr, RequestBody: []byte("[redacted]")}
	case "istag":
		return icaptest.Answer{NoContent: true, ISTag: "T2"}
	}
	return icaptest.Answer{NoContent: true}
}

func newTestICAPFarm(t *testing.T, failure string) (*farm, *icaptest.Server, *icapBehaviour) {
	b := &icapBehaviour{}
	var srv *icaptest.Server
	f := newICAPFarm(t, func(f *farm) (string, string, time.Duration) {
		ln, err := f.ns.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv = icaptest.Serve(t, ln, icaptest.Options{Preview: 64, Allow204: true}, b.answer)
		return srv.URL, failure, time.Second
	})
	return f, srv, b
}

// TestDLPICAPFailClosed: a service that stalls, drops the connection or
// answers garbage gives the client 503 dlp_unavailable, and the origin
// sees nothing. A modified request reaches the origin as modified; a new
// ISTag makes egressd ask OPTIONS again.
func TestDLPICAPFailClosed(t *testing.T) {
	f, srv, b := newTestICAPFarm(t, "closed")
	for _, m := range []string{"stall", "drop", "garbage"} {
		b.set(m)
		path := "/fail-" + m
		n := len(f.proc.AccessLines())
		code, hdr, _ := f.curlPost(t, path, "payload for "+m)
		if code != "503" || !strings.Contains(hdr, "X-Egress-Denied: dlp_unavailable") {
			t.Fatalf("%s: %s\n%s", m, code, hdr)
		}
		if seen := f.originSaw(path); len(seen) > 0 {
			t.Fatalf("%s: the origin saw %+v", m, seen)
		}
		f.lineOf(t, n, map[string]any{"decision": "deny", "reason": "dlp_unavailable", "dlp_icap": "error"})
	}
	if !strings.Contains(f.proc.Stderr(), "the ICAP service fails") {
		t.Errorf("no diagnostic about the failing service:\n%s", f.proc.Stderr())
	}

	b.set("modify")
	n := len(f.proc.AccessLines())
	code, _, _ := f.curlPost(t, "/original", "card 4556 7375 8689 9855 inside")
	seen := f.originSaw("/rewritten")
	if code != "200" || len(f.originSaw("/original")) != 0 || len(seen) != 1 || string(seen[0].Body) != "[redacted]" ||
		seen[0].Header.Get("X-Redacted") != "1" || seen[0].Host != fmt.Sprintf("upload.test:%d", f.httpPort) {
		t.Fatalf("modify: %s, origin saw %+v", code, seen)
	}
	f.lineOf(t, n, map[string]any{"decision": "allow", "dlp_icap": "modify"})

	before := srv.OptionsCount()
	b.set("istag")
	f.curlPost(t, "/istag-1", "x")
	b.set("")
	f.curlPost(t, "/istag-2", "x")
	if n := srv.OptionsCount(); n != before+1 {
		t.Fatalf("OPTIONS %d -> %d after the ISTag changed", before, n)
	}
}

// TestDLPICAPFailOpen: with failure: open a failing service does not stop
// the request; the access line and the metric say the service failed.
func TestDLPICAPFailOpen(t *testing.T) {
	f, _, b := newTestICAPFarm(t, "open")
	b.set("stall")
	n := len(f.proc.AccessLines())
	code, _, _ := f.curlPost(t, "/open", "goes through")
	if seen := f.originSaw("/open"); code != "200" || len(seen) != 1 || string(seen[0].Body) != "goes through" {
		t.Fatalf("%s, origin saw %+v", code, seen)
	}
	f.lineOf(t, n, map[string]any{"decision": "allow", "dlp_icap": "error"})
	out, _, _ := f.curl(t, nil, "http://"+f.proc.AdminAddr+"/metrics")
	if !strings.Contains(out, `egressd_dlp_icap_requests_total{result="error"} 1`) {
		t.Fatal("the failure is not counted")
	}
}
