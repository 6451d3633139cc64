package forward

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestMaxResponseHeaderBytes: an origin's response head longer than
// limits.max_response_header_bytes is a 502 with X-Egress-Error, logged
// with that status and never stored; a head within it is relayed. Without
// the bound net/http would read heads up to 10 MiB per request.
func TestMaxResponseHeaderBytes(t *testing.T) {
	// /bighead/ answers about 8 KiB of fields (serveOrigin).
	for _, tc := range []struct {
		name   string
		limit  int64
		status int
	}{
		{"past the limit", 4 << 10, http.StatusBadGateway},
		{"within the limit", 64 << 10, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHitEnvCache(t, nil, 0, 64<<20, func(o *Options) { o.MaxResponseHeaderBytes = tc.limit })
			proxyURL, _ := url.Parse("http://" + e.addr)
			tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			resp, err := client.Get(e.url("/bighead/1"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d\n%s", resp.StatusCode, tc.status, body)
			}
			if e.count("/bighead/1") != 1 {
				t.Errorf("the origin saw %d requests", e.count("/bighead/1"))
			}
			if tc.status == http.StatusOK {
				if string(body) != "sixteen bytes ok" || resp.Header.Get("X-Pad-00") == "" {
					t.Errorf("relayed %q with X-Pad-00 %q", body, resp.Header.Get("X-Pad-00"))
				}
				return
			}
			// As every origin failure before a response head: dial_error.
			if resp.Header.Get("X-Egress-Error") != "dial_error" || strings.Contains(string(body), "sixteen") {
				t.Errorf("answer %v %q", resp.Header, body)
			}
			u, _ := url.Parse(e.url("/bighead/1"))
			if _, ok := e.h.o.Cache.Fresh(http.MethodGet, u, http.Header{}); ok {
				t.Error("a response past the limit was stored")
			}
			l := e.line(0)
			if fmt.Sprint(l["status"]) != "502" || l["path"] != "/bighead/1" || l["reason"] != "dial_error" {
				t.Errorf("access line %v", l)
			}
		})
	}
}
