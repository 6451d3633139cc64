package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// run runs the built egressd with args and returns its output and exit code.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("egressd %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "egressd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// cliPolicy is a config for the commands that read one (check, validate):
// group web, a rule by name for it, one by address for everyone.
func cliPolicy(t *testing.T) string {
	t.Helper()
	c := testenv.NewConfig(t)
	c.Policy.Mode = "enforce"
	c.Policy.Groups = map[string]testenv.Group{"web": {CIDRs: []string{"10.0.1.0/24"}}}
	c.Policy.Rules = []testenv.Rule{
		{Name: "github", Groups: []string{"web"}, Hosts: []string{"github.com", "*.github.com"}, Ports: []int{443}},
		{Name: "internal-api", CIDRs: []string{"10.20.0.0/16"}, Ports: []int{8443}},
	}
	return testenv.YAML(t, c)
}

// TestCheckCommand: `egressd check` runs the serve engine for one
// destination; IP literals need no DNS, so nothing leaves the machine.
func TestCheckCommand(t *testing.T) {
	cfg := writeConfig(t, cliPolicy(t))
	cases := []struct {
		args           []string
		code           int
		decision, rule string
		reason         string
	}{
		{[]string{"--client", "10.9.9.9", "10.20.1.2:8443"}, 0, "allow", "internal-api", "-"},
		{[]string{"--client", "10.9.9.9", "10.20.1.2:22"}, 1, "deny", "-", "port_not_allowed"},
		{[]string{"--client", "10.9.9.9", "169.254.169.254:80"}, 1, "deny", "-", "not_allowed"},
		{[]string{"--client", "10.9.9.9", "0xa9fea9fe:8443"}, 1, "deny", "-", "not_allowed"},
	}
	for _, tc := range cases {
		out, errOut, code := run(t, append([]string{"check", "--config", cfg}, tc.args...)...)
		if code != tc.code {
			t.Errorf("check %v: exit %d, want %d\n%s%s", tc.args, code, tc.code, out, errOut)
		}
		for _, want := range []string{"decision: " + tc.decision, "rule: " + tc.rule, "reason: " + tc.reason} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("check %v: output lacks %q:\n%s", tc.args, want, out)
			}
		}
	}
	if _, _, code := run(t, "check", "--config", cfg, "not-a-destination"); code != 2 {
		t.Errorf("bad destination: exit %d, want 2", code)
	}
}

// TestCheckNAT64: with an operator's NAT64 prefix opened in allow_ranges,
// the IPv4 address inside an address under it is still range-checked:
// 169.254.169.254 behind 64:ff9b:1:abcd::/96 is private_range, a public
// address is allowed; opening the prefix without declaring it is refused
// with its key and line.
func TestCheckNAT64(t *testing.T) {
	c := testenv.NewConfig(t)
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.NAT64Prefixes = []string{"64:ff9b::/96", "64:ff9b:1:abcd::/96"}
	c.Policy.AllowRanges = []string{"64:ff9b:1:abcd::/96"}
	c.Policy.Rules = []testenv.Rule{{Name: "nat64", CIDRs: []string{"64:ff9b:1:abcd::/96"}, Ports: []int{443}}}
	cfg := writeConfig(t, testenv.YAML(t, c))
	for dest, want := range map[string]string{
		"[64:ff9b:1:abcd::a9fe:a9fe]:443": "reason: private_range\n",
		"[64:ff9b:1:abcd::a00:5]:443":     "reason: private_range\n",
		"[64:ff9b:1:abcd::808:808]:443":   "decision: allow\n",
	} {
		out, errOut, _ := run(t, "check", "--config", cfg, dest)
		if !strings.Contains(out, want) {
			t.Errorf("check %s: want %q in\n%s%s", dest, want, out, errOut)
		}
	}
	undeclared := writeConfig(t, "policy:\n  allow_ranges:\n    - \"64:ff9b:1:abcd::/96\"\n")
	_, errOut, code := run(t, "validate", "--config", undeclared)
	if code != 1 || !strings.Contains(errOut, undeclared+":3: policy.allow_ranges[0]: 64:ff9b:1:abcd::/96: inside the NAT64 local-use prefix") {
		t.Errorf("validate an undeclared local-use NAT64 prefix: exit %d\n%s", code, errOut)
	}
}

// TestValidateCommand: every error at once, each with file, line and key.
func TestValidateCommand(t *testing.T) {
	good := writeConfig(t, cliPolicy(t))
	if out, errOut, code := run(t, "validate", "--config", good); code != 0 {
		t.Fatalf("valid config: exit %d\n%s%s", code, out, errOut)
	}
	bad := writeConfig(t, `policy:
  mode: enforce
  rules:
    - name: a
      hosts: ["a.*.com"]
      ports: [443]
    - name: a
      groups: [nobody]
      hosts: ["*"]
      cidrs: ["10.0.0.0/33"]
      ports: [443]
  unknown_key: 1
`)
	_, errOut, code := run(t, "validate", "--config", bad)
	if code != 1 {
		t.Fatalf("invalid config: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{
		bad + ":5: policy.rules[0].hosts[0]",
		bad + ":7: policy.rules[1].name",
		bad + ":8: policy.rules[1].groups[0]",
		bad + ":9: policy.rules[1].hosts[0]",
		bad + ":10: policy.rules[1].cidrs[0]",
		bad + ":12: policy.unknown_key",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
}

// TestValidateUsersFile: a users file with a non-bcrypt hash is refused by
// validate, as serve would refuse it, naming the file and line.
func TestValidateUsersFile(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:$2y$10$abcdefghijklmnopqrstuuKJq0Qh2s8yV9oQeOQnC4mS0dZ3bWkWa\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testenv.NewConfig(t)
	c.Auth.UsersFile, c.Auth.Required = users, true
	cfg := writeConfig(t, testenv.YAML(t, c))
	_, errOut, code := run(t, "validate", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "auth.users_file") || !strings.Contains(errOut, users+":2") {
		t.Fatalf("validate with a SHA1 user: exit %d\n%s", code, errOut)
	}
}

func TestVersionAndHelp(t *testing.T) {
	if out, _, code := run(t, "version"); code != 0 || !strings.HasPrefix(out, "egressd ") {
		t.Errorf("version: %d %q", code, out)
	}
	for _, sub := range []string{"serve", "check", "validate", "learn", "health"} {
		_, errOut, code := run(t, sub, "--help")
		if code != 0 || !strings.Contains(errOut, "Usage: egressd "+sub) {
			t.Errorf("%s --help: exit %d\n%s", sub, code, errOut)
		}
	}
	if _, _, code := run(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

// TestConfigCommand: `egressd config schema` prints the committed schema;
// `egressd config defaults` prints a config that `egressd validate` accepts.
func TestConfigCommand(t *testing.T) {
	out, errOut, code := run(t, "config", "schema")
	committed, err := os.ReadFile("../docs/egressd.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || out != string(committed) {
		t.Errorf("config schema: exit %d, output equal to docs/egressd.schema.json: %v\n%s", code, out == string(committed), errOut)
	}
	out, errOut, code = run(t, "config", "defaults")
	if code != 0 || !strings.Contains(out, "min_ttl: 5s") {
		t.Fatalf("config defaults: exit %d\n%s%s", code, out, errOut)
	}
	path := writeConfig(t, out)
	if vout, verr, code := run(t, "validate", "--config", path); code != 0 {
		t.Errorf("validate of config defaults: exit %d\n%s%s", code, vout, verr)
	}
	if _, _, code := run(t, "config", "frobnicate"); code != 2 {
		t.Errorf("config frobnicate: exit %d, want 2", code)
	}
}
