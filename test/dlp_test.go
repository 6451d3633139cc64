package test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/proxy/dlp"
	"github.com/egressd/egressd/test/testenv"
)

// Secrets of real formats, made at run time (a GitHub token with its
// checksum, an AWS key id, a card number).
var (
	dlpGitHub = "ghp_" + "Zq3vR8tY1uI0oP9aS7dF6gH5jK4lM2" + dlp.GitHubChecksum("Zq3vR8tY1uI0oP9aS7dF6gH5jK4lM2")
	dlpAWS    = "AKIA" + "Q2W3E4R5T6Y7U2I3"
	dlpCard   = "4556 7375 8689 9855"
)

// newDLPFarm is the farm with two DLP profiles, strict (enforce) and watch
// (report), rules for upload.test and report.test that use them (before the
// farm's own), dlp.oversize and dlp.max_scan_bytes.
func newDLPFarm(t *testing.T, oversize, max string) *farm {
	t.Helper()
	maxScan, err := config.ParseSize(max)
	if err != nil {
		t.Fatal(err)
	}
	f := newFarmWith(t, "enforce", func(f *farm, c *testenv.Config) {
		c.DLP.MaxScanBytes = maxScan
		c.DLP.Oversize = oversize
		c.DLP.Profiles = map[string]config.DLPProfile{
			"strict": {Mode: "enforce",
				Detectors: []string{"aws_access_key", "aws_secret_key", "private_key", "github_token", "gitlab_token", "slack_token", "card_number", "us_ssn"},
				Patterns:  []config.DLPPattern{{Name: "internal_id", Regex: "ACME-[0-9]{8}"}}},
			"watch": {Mode: "report", Detectors: []string{"github_token", "card_number"}},
		}
		c.Policy.Rules = append([]testenv.Rule{
			{Name: "upload", Hosts: []string{"upload.test"}, Ports: f.ports(), AllowRanges: []string{"127.0.0.0/24"}, DLP: "strict"},
			{Name: "watch", Hosts: []string{"report.test"}, Ports: f.ports(), AllowRanges: []string{"127.0.0.0/24"}, DLP: "watch"},
		}, c.Policy.Rules...)
	})
	o, h := netip.MustParseAddr(originIP), netip.MustParseAddr(httpIP)
	f.dns.Set("upload.test", 60, h, o)
	f.dns.Set("report.test", 60, h, o)
	t.Cleanup(func() { assertNoSecretOutput(t, f) })
	return f
}

// assertNoSecretOutput: nothing egressd wrote (access lines, diagnostics)
// repeats a secret, whole or in part.
func assertNoSecretOutput(t *testing.T, f *farm) {
	out := strings.Join(f.proc.Stdout(), "\n") + f.proc.Stderr()
	for _, s := range []string{dlpGitHub, dlpGitHub[4:20], dlpAWS[4:], "4556 7375", "ACME-1234"} {
		if strings.Contains(out, s) {
			t.Errorf("egressd's output contains secret material %q", s)
		}
	}
}

func (f *farm) originSaw(path string) []testenv.Echo {
	var out []testenv.Echo
	for _, e := range append(f.http.Requests(), f.tls.Requests()...) {
		if e.Path == path {
			out = append(out, e)
		}
	}
	return out
}

// TestDLPCurl: a POST carrying a secret is refused 403 dlp and never
// reaches the origin; a clean one passes whole; the access line names the
// detector and where, never the bytes.
func TestDLPCurl(t *testing.T) {
	f := newDLPFarm(t, "block", "1MiB")
	env := f.proxyEnv()
	up := fmt.Sprintf("http://upload.test:%d", f.httpPort)

	cases := []struct {
		name, path string
		args       []string
		detector   string
		location   string
	}{
		{"form body", "/form", []string{"--data", "note=hi&token=" + dlpGitHub}, "github_token", "body:14"},
		{"json body", "/json", []string{"-H", "Content-Type: application/json", "--data", `{"AccessKeyId":"` + dlpAWS + `"}`}, "aws_access_key", "body:16"},
		{"header", "/hdr", []string{"-H", "Authorization: token " + dlpGitHub, "--data", "x=1"}, "github_token", "header:Authorization"},
		{"query", "/q?card=" + strings.ReplaceAll(dlpCard, " ", "%20"), []string{"--data", "x=1"}, "card_number", "url"},
		{"custom pattern", "/custom", []string{"--data-binary", "ref ACME-12345678"}, "internal_id", "body:4"},
		{"gzip body", "/gz", []string{"-H", "Content-Encoding: gzip", "--data-binary", "@-"}, "github_token", "body:0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-X", "POST", up + c.path}, c.args...)
			if c.name == "gzip body" {
				args = []string{"-X", "POST", up + c.path, "-H", "Content-Encoding: gzip",
					"--data-binary", "@" + writeTemp(t, gzipBytes([]byte(dlpGitHub+"\n")))}
			}
			_, hdr, code := f.curl(t, env, args...)
			if code != 0 || !strings.Contains(hdr, " 403 ") || !strings.Contains(hdr, "X-Egress-Denied: dlp") {
				t.Fatalf("curl exit %d, headers:\n%s", code, hdr)
			}
			if seen := f.originSaw(strings.SplitN(c.path, "?", 2)[0]); len(seen) > 0 {
				t.Fatalf("the origin saw the request: %+v", seen)
			}
			want := fmt.Sprintf("[map[detector:%s location:%s]]", c.detector, c.location)
			match := testenv.Fields(map[string]any{"host": "upload.test", "decision": "deny", "reason": "dlp", "rule": "upload", "dlp_profile": "strict"})
			f.proc.WaitForLog(t, func(l map[string]any) bool { return match(l) && fmt.Sprint(l["dlp"]) == want })
		})
	}
	t.Run("clean", func(t *testing.T) {
		body := `{"id":"550e8400-e29b-41d4-a716-446655440000","ts":1733412345678,"phone":"+1-415-555-2671"}`
		out, hdr, code := f.curl(t, env, "-X", "POST", "-H", "Content-Type: application/json", "--data", body, up+"/clean")
		if code != 0 || !strings.Contains(hdr, " 200 ") {
			t.Fatalf("curl exit %d: %s %s", code, hdr, out)
		}
		seen := f.originSaw("/clean")
		if len(seen) != 1 || string(seen[0].Body) != body {
			t.Fatalf("origin saw %+v", seen)
		}
		line := f.waitLog(t, map[string]any{"host": "upload.test", "decision": "allow", "dlp_profile": "strict"})
		if fmt.Sprint(line["dlp"]) != "[]" {
			t.Fatalf("findings on a clean body: %v", line["dlp"])
		}
	})
	t.Run("metrics", func(t *testing.T) {
		out, _, code := f.curl(t, nil, "http://"+f.proc.AdminAddr+"/metrics")
		if code != 0 {
			t.Fatalf("metrics: exit %d", code)
		}
		for _, want := range []string{
			`egressd_dlp_findings_total{detector="github_token",mode="enforce"} 3`,
			`egressd_dlp_findings_total{detector="us_ssn",mode="report"} 0`,
			`egressd_requests_total{decision="deny",listener="http",reason="dlp"} 6`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// TestDLPGoTransportAndReport: Go's http.Transport through egressd; the
// enforce profile blocks, the report profile logs, counts and forwards.
func TestDLPGoTransportAndReport(t *testing.T) {
	f := newDLPFarm(t, "block", "1MiB")
	c := f.proc.HTTPClient(t, f.ca.CertPool())
	post := func(host, path, body string) *http.Response {
		resp, err := c.Post(fmt.Sprintf("http://%s:%d%s", host, f.httpPort, path), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	body := `{"pan":"` + dlpCard + `","token":"` + dlpGitHub + `"}`
	if resp := post("upload.test", "/go-block", body); resp.StatusCode != 403 || resp.Header.Get("X-Egress-Denied") != "dlp" {
		t.Fatalf("enforce: %d %q", resp.StatusCode, resp.Header.Get("X-Egress-Denied"))
	}
	if len(f.originSaw("/go-block")) > 0 {
		t.Fatal("the origin saw the blocked request")
	}
	if resp := post("report.test", "/go-report", body); resp.StatusCode != 200 {
		t.Fatalf("report: %d", resp.StatusCode)
	}
	seen := f.originSaw("/go-report")
	if len(seen) != 1 || string(seen[0].Body) != body {
		t.Fatalf("report mode: origin saw %+v", seen)
	}
	line := f.waitLog(t, map[string]any{"host": "report.test", "decision": "report", "reason": "dlp", "dlp_profile": "watch"})
	if got := fmt.Sprint(line["dlp"]); got != "[map[detector:card_number location:body:8] map[detector:github_token location:body:38]]" {
		t.Fatalf("report findings %s", got)
	}
}

// TestDLPLargeBodyWhole: a clean inspected body of several hundred KiB
// (held, scanned, then written upstream from the held buffer in large
// writes) reaches the origin byte for byte, with a declared length and
// chunked.
func TestDLPLargeBodyWhole(t *testing.T) {
	f := newDLPFarm(t, "block", "1MiB")
	c := f.proc.HTTPClient(t, f.ca.CertPool())
	body := make([]byte, 900_001)
	for i := range body {
		body[i] = "0123456789abcdef ,:{}\"\n"[(i*7+i/1000)%23]
	}
	for _, chunked := range []bool{false, true} {
		path := fmt.Sprintf("/large-%v", chunked)
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = struct{ io.Reader }{r} // no length: Go's client sends it chunked
		}
		resp, err := c.Post(fmt.Sprintf("http://upload.test:%d%s", f.httpPort, path), "application/octet-stream", r)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		seen := f.originSaw(path)
		if resp.StatusCode != 200 || len(seen) != 1 || seen[0].BodyErr != "" || !bytes.Equal(seen[0].Body, body) {
			t.Fatalf("%s: status %d, origin saw %d requests", path, resp.StatusCode, len(seen))
		}
	}
}

// TestDLPStreamCut: past max_scan_bytes with oversize: stream, the body
// is forwarded while it is scanned; at a secret the upload is cut, so the
// origin sees an aborted request without the secret's tail, and the client
// gets 403 dlp.
func TestDLPStreamCut(t *testing.T) {
	f := newDLPFarm(t, "stream", "64KiB")
	c := f.proc.HTTPClient(t, f.ca.CertPool())
	clean := bytes.Repeat([]byte("lorem ipsum dolor sit amet\n"), 8000) // 216 KB
	body := append(append(bytes.Clone(clean), dlpGitHub+"\n"...), clean...)
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://upload.test:%d/stream", f.httpPort), bytes.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Egress-Denied") != "dlp" {
		t.Fatalf("status %d %q, want 403 dlp", resp.StatusCode, resp.Header.Get("X-Egress-Denied"))
	}
	f.waitLog(t, map[string]any{"host": "upload.test", "decision": "deny", "reason": "dlp"})
	for _, e := range f.originSaw("/stream") {
		if e.BodyErr == "" || bytes.Contains(e.Body, []byte(dlpGitHub[20:])) || len(e.Body) >= len(body) {
			t.Fatalf("origin read %d of %d bytes (err %q), tail present: %v", len(e.Body), len(body), e.BodyErr, bytes.Contains(e.Body, []byte(dlpGitHub[20:])))
		}
	}
	// A clean oversize body streams through whole.
	resp, err = c.Post(fmt.Sprintf("http://upload.test:%d/stream-ok", f.httpPort), "text/plain", bytes.NewReader(append(clean, clean...)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if seen := f.originSaw("/stream-ok"); resp.StatusCode != 200 || len(seen) != 1 || len(seen[0].Body) != 2*len(clean) {
		t.Fatalf("clean stream: %d, origin saw %d requests", resp.StatusCode, len(seen))
	}
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func writeTemp(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
