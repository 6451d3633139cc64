package admin

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestOpsAdminEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "egressd_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	srv := httptest.NewServer(Handler(Options{
		Gatherer: reg,
		Ready: func() (bool, string) {
			if ready.Load() {
				return true, ""
			}
			return false, "draining"
		},
	}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()

	cases := []struct {
		name, path string
		ready      bool
		code       int
		body       string
	}{
		{"healthz", "/healthz", false, 200, "ok\n"},
		{"readyz not ready", "/readyz", false, 503, "draining\n"},
		{"readyz ready", "/readyz", true, 200, "ready\n"},
		{"metrics", "/metrics", true, 200, "egressd_test_total 3"},
		{"no pprof", "/debug/pprof/", true, 404, ""},
		{"no pprof cmdline", "/debug/pprof/cmdline", true, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			code, body := get(t, srv, tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s: %d %q, want %d containing %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}

// pprof follows admin.pprof on every request, so a reload switches it.
func TestOpsAdminPprofFollowsConfig(t *testing.T) {
	var on atomic.Bool
	srv := httptest.NewServer(Handler(Options{Pprof: on.Load}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		if code, _ := get(t, srv, p); code != 404 {
			t.Errorf("pprof off: GET %s = %d", p, code)
		}
	}
	on.Store(true)
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		if code, _ := get(t, srv, p); code != 200 {
			t.Errorf("pprof on: GET %s = %d", p, code)
		}
	}
	if code, _ := get(t, srv, "/metrics"); code != 404 {
		t.Errorf("no Gatherer: /metrics = %d, want 404", code)
	}
}
