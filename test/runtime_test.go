package test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestServeRuntimeGODEBUG: `egressd serve` runs with the environment it was
// given, GODEBUG included (no re-exec adds to it: the deployments set the
// runtime knobs, see deployments/), and logs the Go runtime settings in
// force at start in one diagnostics line, "go runtime".
func TestServeRuntimeGODEBUG(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string // GODEBUG in the process and in the line
		gogc string
	}{
		{"unset", nil, "", ""},
		{"the deployments' setting", []string{"GODEBUG=schedtrace=2147483647"}, "schedtrace=2147483647", ""},
		{"other settings", []string{"GODEBUG=madvdontneed=1"}, "madvdontneed=1", ""},
		{"operator's own", []string{"GODEBUG=gctrace=0,schedtrace=60000", "GOGC=200"}, "gctrace=0,schedtrace=60000", "200"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testenv.NewConfig(t)
			c.Listen.HTTP, c.Listen.Admin = testenv.FreeAddr(t, "127.0.0.1"), testenv.FreeAddr(t, "127.0.0.1")
			p := (&testenv.Egressd{Env: tc.env}).StartConfig(t, c)

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
			if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
				t.Errorf("GODEBUG of the serving process (pid %d) = %q, want exactly %q", p.PID(), got, tc.want)
			}
			line := runtimeLine(t, p)
			if line["godebug"] != tc.want {
				t.Errorf("go runtime line: godebug %q, want %q: %v", line["godebug"], tc.want, line)
			}
			if line["gogc"] != tc.gogc {
				t.Errorf("go runtime line: gogc %q, want %q: %v", line["gogc"], tc.gogc, line)
			}
			if n, ok := line["gomaxprocs"].(float64); !ok || n < 1 {
				t.Errorf("go runtime line: gomaxprocs %v: %v", line["gomaxprocs"], line)
			}
		})
	}
}

// runtimeLine returns the "go runtime" diagnostics line egressd wrote to
// stderr before it was ready.
func runtimeLine(t *testing.T, p *testenv.Proc) map[string]any {
	t.Helper()
	for _, l := range strings.Split(p.Stderr(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "go runtime" {
			return m
		}
	}
	t.Fatalf("no \"go runtime\" line on stderr:\n%s", p.Stderr())
	return nil
}
