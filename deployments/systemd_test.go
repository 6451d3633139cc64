package deployments

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// unit is a parsed systemd unit file: section => key => values in order
// (a key may repeat, as SystemCallFilter= does).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, n, line)
			}
			u[section][key] = append(u[section][key], value)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the last value of a key (systemd's rule for single-valued
// keys) and whether the key is present.
func (u unit) get(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// systemdSeconds parses a systemd time span such as "60", "60s", "1min 30s".
func systemdSeconds(t *testing.T, s string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(strings.NewReplacer("min", "m", " ", "").Replace(s))
	if err != nil {
		t.Fatalf("time span %q: %v", s, err)
	}
	return d
}

func TestSystemdEgressdUnitHardening(t *testing.T) {
	u := parseUnit(t, "systemd/egressd.service")

	want := map[string]string{
		"Type":                   "exec",
		"User":                   "egressd",
		"Group":                  "egressd",
		"ExecStart":              "/usr/bin/egressd serve --config /etc/egressd/egressd.yaml",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"Restart":                "on-failure",
		"KillSignal":             "SIGTERM",
		"LimitNOFILE":            "1048576",
		"NoNewPrivileges":        "yes",
		"ProtectSystem":          "strict",
		"ProtectHome":            "yes",
		"PrivateTmp":             "yes",
		"PrivateDevices":         "yes",
		"ProtectKernelTunables":  "yes",
		"ProtectKernelModules":   "yes",
		"ProtectKernelLogs":      "yes",
		"ProtectControlGroups":   "yes",
		"RestrictNamespaces":     "yes",
		"RestrictSUIDSGID":       "yes",
		"LockPersonality":        "yes",
		"MemoryDenyWriteExecute": "yes",
		"CapabilityBoundingSet":  "",
		"AmbientCapabilities":    "",
		// journald must not drop access-log lines (its default limit is
		// 10,000 per 30 s per service); 0 turns the limit off.
		"LogRateLimitIntervalSec": "0",
		"LogRateLimitBurst":       "0",
		// log.access_file's directory, writable under ProtectSystem=strict.
		"LogsDirectory": "egressd",
	}
	for key, value := range want {
		got, ok := u.get("Service", key)
		if !ok {
			t.Errorf("[Service] %s= is missing, want %q", key, value)
			continue
		}
		if got != value {
			t.Errorf("[Service] %s=%q, want %q", key, got, value)
		}
	}
	if _, ok := u.get("Service", "DynamicUser"); ok {
		t.Errorf("DynamicUser= conflicts with the package's dedicated egressd user")
	}

	families, _ := u.get("Service", "RestrictAddressFamilies")
	gotFamilies := strings.Fields(families)
	slices.Sort(gotFamilies)
	if diff := cmp.Diff([]string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}, gotFamilies); diff != "" {
		t.Errorf("RestrictAddressFamilies (-want +got):\n%s", diff)
	}
	if filters := u["Service"]["SystemCallFilter"]; !slices.Contains(filters, "@system-service") {
		t.Errorf("SystemCallFilter=%q, want @system-service among them", filters)
	}
	if got, _ := u.get("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", got)
	}

	// The empty capability set holds only while every listener port of the
	// packaged config is unprivileged.
	example, err := os.ReadFile("egressd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, example, "egressd.example.yaml")
	for name, addr := range map[string]string{"http": cfg.Listen.HTTP, "socks5": cfg.Listen.SOCKS5, "admin": cfg.Listen.Admin} {
		if addr == "" {
			continue
		}
		if p := port(t, addr); p < 1024 {
			t.Errorf("listen.%s port %d < 1024 needs CAP_NET_BIND_SERVICE, which the unit does not grant", name, p)
		}
	}

	// systemd must not kill a drain that is on time.
	stop, _ := u.get("Service", "TimeoutStopSec")
	if got, budget := systemdSeconds(t, stop), stopBudget(cfg); got <= budget {
		t.Errorf("TimeoutStopSec=%s must exceed drain_delay + drain = %s of egressd.example.yaml", stop, budget)
	}
}

func TestSystemdFarmHelperUnits(t *testing.T) {
	sync := parseUnit(t, "systemd/egressd-policy-sync.service")
	timer := parseUnit(t, "systemd/egressd-policy-sync.timer")
	drain := parseUnit(t, "systemd/egressd-asg-drain.service")

	checks := []struct {
		u                   unit
		section, key, value string
	}{
		{sync, "Service", "Type", "oneshot"},
		{sync, "Service", "ExecStart", "/usr/lib/egressd/policy-sync"},
		{sync, "Service", "EnvironmentFile", "/etc/default/egressd-policy-sync"},
		{sync, "Service", "ReadWritePaths", "/etc/egressd"},
		{sync, "Service", "ProtectSystem", "strict"},
		{sync, "Service", "NoNewPrivileges", "yes"},
		{sync, "Unit", "ConditionPathExists", "/etc/default/egressd-policy-sync"},
		{timer, "Install", "WantedBy", "timers.target"},
		{timer, "Unit", "ConditionPathExists", "/etc/default/egressd-policy-sync"},
		{drain, "Service", "ExecStart", "/usr/lib/egressd/asg-drain"},
		{drain, "Service", "Restart", "on-failure"},
		{drain, "Service", "ProtectSystem", "strict"},
		{drain, "Service", "NoNewPrivileges", "yes"},
		{drain, "Service", "CapabilityBoundingSet", ""},
		{drain, "Install", "WantedBy", "multi-user.target"},
	}
	for _, c := range checks {
		if got, ok := c.u.get(c.section, c.key); !ok || got != c.value {
			t.Errorf("[%s] %s=%q (present %v), want %q", c.section, c.key, got, ok, c.value)
		}
	}
	if _, ok := timer.get("Timer", "OnUnitActiveSec"); !ok {
		t.Errorf("the policy sync timer must repeat (OnUnitActiveSec=)")
	}
}

// TestSystemdUnitsPackaged: every unit and every ExecStart program is in the
// package, at the path the units and the farm's user data use.
func TestSystemdUnitsPackaged(t *testing.T) {
	data, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Contents []struct {
			Src  string `yaml:"src"`
			Dst  string `yaml:"dst"`
			Type string `yaml:"type"`
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	dst := map[string]string{}
	for _, c := range cfg.Contents {
		dst[c.Dst] = c.Src
		if c.Src != "" && !strings.Contains(c.Src, "${") {
			if _, err := os.Stat(filepath.Join("..", c.Src)); err != nil {
				t.Errorf("nfpm.yaml: source of %s: %v", c.Dst, err)
			}
		}
	}
	for name, script := range cfg.Scripts {
		if _, err := os.Stat(filepath.Join("..", script)); err != nil {
			t.Errorf("nfpm.yaml: %s script: %v", name, err)
		}
	}
	units, err := filepath.Glob("systemd/*.service")
	if err != nil {
		t.Fatal(err)
	}
	timers, _ := filepath.Glob("systemd/*.timer")
	for _, path := range append(units, timers...) {
		name := filepath.Base(path)
		if got := dst["/lib/systemd/system/"+name]; got != "deployments/"+path {
			t.Errorf("%s is not packaged as /lib/systemd/system/%s (source %q)", path, name, got)
		}
		if exec, ok := parseUnit(t, path).get("Service", "ExecStart"); ok {
			program := strings.Fields(exec)[0]
			if _, ok := dst[program]; !ok {
				t.Errorf("%s runs %s, which the package does not install", name, program)
			}
		}
	}
	var conf string
	for _, c := range cfg.Contents {
		if c.Dst == "/etc/egressd/egressd.yaml" {
			conf = c.Type
		}
	}
	if conf != "config|noreplace" {
		t.Errorf("/etc/egressd/egressd.yaml has type %q, want config|noreplace", conf)
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the units (with
// the programs replaced, since they are not installed here).
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := lookTool(t, "systemd-analyze")
	dir := t.TempDir()
	paths, _ := filepath.Glob("systemd/egressd*.service")
	timers, _ := filepath.Glob("systemd/*.timer")
	var args []string
	for _, p := range append(paths, timers...) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(string(data), "\n") {
			for _, key := range []string{"ExecStart=", "ExecStop=", "ExecReload="} {
				if strings.HasPrefix(l, key) {
					l = key + "/bin/true"
				}
			}
			lines = append(lines, l)
		}
		out := filepath.Join(dir, filepath.Base(p))
		if err := os.WriteFile(out, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, out)
	}
	cmd := exec.Command(sa, append([]string{"verify"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SYSTEMD_LOG_LEVEL=warning"}
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
