package deployments

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// renderHAProxy renders farm/haproxy.cfg.tmpl as scripts/farm.sh does (and
// as the farm tests will): every ${NAME} must have a value.
func renderHAProxy(t *testing.T, values map[string]string) string {
	t.Helper()
	tmpl, err := os.ReadFile("farm/haproxy.cfg.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	out := os.Expand(string(tmpl), func(name string) string {
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		t.Fatalf("haproxy.cfg.tmpl: no value for %q", missing)
	}
	return out
}

func TestHAProxyTemplate(t *testing.T) {
	for _, sendProxy := range []string{"", " send-proxy-v2"} {
		dir := t.TempDir()
		servers := func(offset int) string {
			var b strings.Builder
			for i, base := range []int{23138, 23148, 23158} {
				fmt.Fprintf(&b, "    server egressd%d 127.0.0.1:%d check port %d%s\n", i+1, base+offset, base+2, sendProxy)
			}
			return b.String()
		}
		cfg := renderHAProxy(t, map[string]string{
			"HTTP_BIND":      "127.0.0.1:23128",
			"SOCKS5_BIND":    "127.0.0.1:23129",
			"STATS_BIND":     "127.0.0.1:23130",
			"STATS_SOCKET":   filepath.Join(dir, "haproxy.sock"),
			"HTTP_SERVERS":   servers(0),
			"SOCKS5_SERVERS": servers(1),
		})

		var lines []string // without comments
		for _, l := range strings.Split(cfg, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "#") {
				lines = append(lines, l)
			}
		}
		directives := strings.Join(lines, "\n")
		for _, want := range []string{"mode tcp", "option httpchk", "http-check send meth GET uri /readyz", "http-check expect status 200"} {
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.TrimSpace(l) == want }) {
				t.Errorf("rendered config lacks %q", want)
			}
		}
		if strings.Contains(directives, "shutdown-sessions") {
			t.Errorf("a server marked down must keep its tunnels (no on-marked-down shutdown-sessions)")
		}
		if strings.Contains(directives, "check-send-proxy") {
			t.Errorf("health checks go to the admin port, which takes no PROXY header")
		}

		path := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(lookTool(t, "haproxy"), "-c", "-q", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c (send-proxy %q): %v\n%s", sendProxy, err, out)
		}
	}
}
