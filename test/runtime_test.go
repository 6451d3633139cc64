package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestServeRuntimeGODEBUG: `egressd serve` re-executes itself once, before
// listening, with schedtrace in GODEBUG so that the Go runtime's sysmon
// never deep-sleeps (cmd/egressd/sysmon_linux.go): same PID, same process
// name, an operator's other GODEBUG settings kept, and an operator's own
// schedtrace (schedtrace=0 turns the behaviour off) left as it is.
func TestServeRuntimeGODEBUG(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"unset", nil, "schedtrace=2147483647"},
		{"other settings kept", []string{"GODEBUG=madvdontneed=1"}, "madvdontneed=1,schedtrace=2147483647"},
		{"operator opts out", []string{"GODEBUG=schedtrace=0"}, "schedtrace=0"},
		{"operator's own period", []string{"GODEBUG=gctrace=0,schedtrace=60000"}, "gctrace=0,schedtrace=60000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			admin := testenv.FreeAddr(t, "127.0.0.1")
			cfg := fmt.Sprintf(`
listen:
  http: %q
  socks5: ""
  admin: %q
timeouts:
  drain_delay: 0s
`, testenv.FreeAddr(t, "127.0.0.1"), admin)
			p := (&testenv.Egressd{Env: tc.env}).Start(t, cfg)

			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID()))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range strings.Split(string(environ), "\x00") {
				if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
					got = append(got, v)
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("GODEBUG of the serving process (pid %d) = %q, want exactly [%q]", p.PID(), got, tc.want)
			}
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID()))
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Base(testenv.Binary(t)); strings.TrimSpace(string(comm)) != want[:min(len(want), 15)] {
				t.Errorf("process name %q, want %q (the re-exec must keep it)", strings.TrimSpace(string(comm)), want)
			}
			resp, err := http.Get("http://" + admin + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("/readyz = %d after the re-exec", resp.StatusCode)
			}
		})
	}
}
