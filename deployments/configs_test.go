package deployments

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/config"
)

// Every egressd config shipped in deployments/ goes through the real loader
// (parse, validate, compile), so none can drift from the schema.

func loadConfig(t *testing.T, data []byte, name string) *config.Config {
	t.Helper()
	c, _, err := config.LoadBytes(data, name)
	if err != nil {
		t.Fatalf("%s does not load: %v", name, err)
	}
	return c
}

// stopBudget is how long egressd may take to exit after SIGTERM.
func stopBudget(c *config.Config) time.Duration {
	return c.Timeouts.DrainDelay + c.Timeouts.Drain
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return n
}

// TestAWSExampleConfigMatchesFarmModule: the config the example uploads to
// S3 agrees with the farm module's defaults (ports, drain timings, PROXY
// protocol, admin reachable by the NLB).
func TestAWSExampleConfigMatchesFarmModule(t *testing.T) {
	path := filepath.Join(exampleDir, "egressd.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := loadConfig(t, data, path)
	farm := loadModules(t)[farmDir]
	def := func(name string) int { return int(asInt(t, farm.defaultOf(t, name))) }

	for _, tt := range []struct {
		listener string
		addr     string
		variable string
	}{
		{"http", c.Listen.HTTP, "http_port"},
		{"socks5", c.Listen.SOCKS5, "socks5_port"},
		{"admin", c.Listen.Admin, "admin_port"},
	} {
		if got, want := port(t, tt.addr), def(tt.variable); got != want {
			t.Errorf("listen.%s port %d, farm module %s default %d", tt.listener, got, tt.variable, want)
		}
		if host, _, _ := net.SplitHostPort(tt.addr); host != "0.0.0.0" && host != "" {
			t.Errorf("listen.%s = %q: the NLB reaches the instance address, listen on 0.0.0.0", tt.listener, tt.addr)
		}
	}
	if got, want := c.Timeouts.Drain, time.Duration(def("drain_seconds"))*time.Second; got != want {
		t.Errorf("timeouts.drain %s, farm module drain_seconds %s", got, want)
	}
	if got, want := c.Timeouts.DrainDelay, time.Duration(def("drain_delay_seconds"))*time.Second; got != want {
		t.Errorf("timeouts.drain_delay %s, farm module drain_delay_seconds %s", got, want)
	}
	if c.Listen.ProxyProtocol != farm.defaultOf(t, "proxy_protocol_v2").True() {
		t.Errorf("listen.proxy_protocol %v disagrees with the farm module's proxy_protocol_v2 default", c.Listen.ProxyProtocol)
	}
	// ship_logs: the CloudWatch agent ships the access log from this file.
	if got, want := c.Log.AccessFile, farmAgentFiles(t)["access"]; farm.defaultOf(t, "ship_logs").True() && got != want {
		t.Errorf("log.access_file %q: the farm's CloudWatch agent ships %q", got, want)
	}
	if c.Policy.Mode != "report" {
		t.Errorf("policy.mode %q: the example starts a rollout in report mode", c.Policy.Mode)
	}
	// admin_cidrs admits the whole VPC to the admin port by default: the
	// status page (clients' addresses and user names) ships off.
	if c.Admin.UI || c.Admin.Pprof {
		t.Errorf("admin.ui %v, admin.pprof %v: the example serves them to the whole VPC; ship them off", c.Admin.UI, c.Admin.Pprof)
	}
}

// farmConfig composes a local farm instance's config the way scripts/farm.sh
// does: a listen section, then deployments/farm/egressd.farm.yaml.
func farmConfig(t *testing.T, proxyProtocol bool) []byte {
	t.Helper()
	fragment, err := os.ReadFile("farm/egressd.farm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("listen:\n  http: \"127.0.0.1:13138\"\n  socks5: \"127.0.0.1:13139\"\n  admin: \"127.0.0.1:13140\"\n")
	b.WriteString("  proxy_protocol: " + strconv.FormatBool(proxyProtocol) + "\n")
	if proxyProtocol {
		b.WriteString("  trusted_proxies: [\"127.0.0.1/32\"]\n")
	}
	b.Write(fragment)
	return []byte(b.String())
}

func TestLocalFarmConfig(t *testing.T) {
	for _, pp := range []bool{false, true} {
		c := loadConfig(t, farmConfig(t, pp), "farm/egressd.farm.yaml")
		if c.Listen.ProxyProtocol != pp {
			t.Errorf("proxy_protocol = %v, want %v", c.Listen.ProxyProtocol, pp)
		}
		// HAProxy (haproxy.cfg.tmpl) needs inter 500ms x fall 2 to see /readyz 503.
		if c.Timeouts.DrainDelay < time.Second {
			t.Errorf("timeouts.drain_delay %s is shorter than HAProxy's 1 s to mark an instance down", c.Timeouts.DrainDelay)
		}
	}
}
