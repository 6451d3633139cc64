package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePassword(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "corp.pass")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

const upstreamRules = `policy:
  default_via: ""
  rules:
    - name: partners
      hosts: ["*.partner.example"]
      ports: [443, 80]
      via: corp
`

func TestParseUpstream(t *testing.T) {
	t.Parallel()
	pw := writePassword(t, "s3cret\n", 0o600)
	in := fmt.Sprintf(`upstream_proxies:
  corp:
    urls: ["http://10.1.2.3:8080", "http://proxy.corp.example"]
    username: egress
    password_file: %s
  lab:
    urls: ["http://[fd00::8]:3128"]
    connect_timeout: 250ms
`, pw) + upstreamRules
	c, err := Parse([]byte(in), "egressd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	corp, lab := c.UpstreamProxies["corp"], c.UpstreamProxies["lab"]
	if corp.Password() != "s3cret" || corp.Username != "egress" || corp.ConnectTimeout != DefaultUpstreamConnectTimeout {
		t.Errorf("corp = %+v, password %q", corp, corp.Password())
	}
	if lab.Password() != "" || lab.ConnectTimeout != 250*time.Millisecond {
		t.Errorf("lab = %+v", lab)
	}
	for _, u := range []string{"http://10.1.2.3:8080", "http://proxy.corp.example", "http://[fd00::8]:3128"} {
		if _, err := ParseUpstreamURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Errorf("the marshalled config holds the password:\n%s", out)
	}
	back, err := Parse(out, "marshalled.yaml")
	if err != nil {
		t.Fatalf("marshalled config does not parse: %v\n%s", err, out)
	}
	if back.UpstreamProxies["corp"].Password() != "s3cret" {
		t.Errorf("round trip lost the password file")
	}
}

func TestParseUpstreamErrors(t *testing.T) {
	t.Parallel()
	open := writePassword(t, "s3cret\n", 0o644)
	group := writePassword(t, "s3cret\n", 0o640)
	empty := writePassword(t, "\n", 0o600)
	twoLines := writePassword(t, "s3cret\nmore\n", 0o400)
	ok := writePassword(t, "s3cret", 0o400)
	tests := []struct {
		name, yaml, want string
	}{
		{"world-readable password file", fmt.Sprintf("upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: egress\n    password_file: %s\n", open),
			fmt.Sprintf(`egressd.yaml:5: upstream_proxies.corp.password_file: %s: readable by group or others (mode 0644)`, open)},
		{"group-readable password file", fmt.Sprintf("upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: egress\n    password_file: %s\n", group),
			fmt.Sprintf(`egressd.yaml:5: upstream_proxies.corp.password_file: %s: readable by group or others (mode 0640)`, group)},
		{"missing password file", "upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: egress\n    password_file: /nonexistent/corp.pass\n",
			`egressd.yaml:5: upstream_proxies.corp.password_file: /nonexistent/corp.pass: no such file or directory`},
		{"empty password file", fmt.Sprintf("upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: egress\n    password_file: %s\n", empty),
			fmt.Sprintf(`egressd.yaml:5: upstream_proxies.corp.password_file: %s: empty`, empty)},
		{"two-line password file", fmt.Sprintf("upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: egress\n    password_file: %s\n", twoLines),
			fmt.Sprintf(`egressd.yaml:5: upstream_proxies.corp.password_file: %s: more than one line`, twoLines)},
		{"username without password", "upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: egress\n",
			`egressd.yaml:4: upstream_proxies.corp.username: needs password_file`},
		{"password without username", fmt.Sprintf("upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    password_file: %s\n", ok),
			`egressd.yaml:4: upstream_proxies.corp.password_file: needs username`},
		{"colon in username", fmt.Sprintf("upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    username: \"a:b\"\n    password_file: %s\n", ok),
			`egressd.yaml:4: upstream_proxies.corp.username: must not contain ':'`},
		{"no urls", "upstream_proxies:\n  corp:\n    username: \"\"\n",
			`egressd.yaml:3: upstream_proxies.corp.urls: required`},
		{"https url", "upstream_proxies:\n  corp:\n    urls:\n      - \"https://10.1.2.3:8080\"\n",
			`egressd.yaml:4: upstream_proxies.corp.urls[0]: "https://10.1.2.3:8080": want http://host:port`},
		{"url with credentials is redacted", "upstream_proxies:\n  corp:\n    urls: [\"http://egress:hunter2@10.1.2.3:8080\"]\n",
			`egressd.yaml:3: upstream_proxies.corp.urls[0]: "http://egress:xxxxx@10.1.2.3:8080": credentials do not go in the URL`},
		{"url with path", "upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080/proxy\"]\n",
			`egressd.yaml:3: upstream_proxies.corp.urls[0]: "http://10.1.2.3:8080/proxy": want http://host:port, with no path`},
		{"url bad port", "upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:0\"]\n",
			`egressd.yaml:3: upstream_proxies.corp.urls[0]: "http://10.1.2.3:0": port must be 1..65535`},
		{"bad name", "upstream_proxies:\n  \"corp proxy\":\n    urls: [\"http://10.1.2.3:8080\"]\n",
			`egressd.yaml:3: upstream_proxies.corp proxy: "corp proxy": a name is`},
		{"zero connect timeout", "upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\n    connect_timeout: 0s\n",
			`egressd.yaml:4: upstream_proxies.corp.connect_timeout: must be greater than zero`},
		{"unknown key", "upstream_proxies:\n  corp:\n    url: \"http://10.1.2.3:8080\"\n",
			`egressd.yaml:3: upstream_proxies.corp.url: unknown key`},
		{"via of no parent", "policy:\n  rules:\n    - name: a\n      hosts: [a.example]\n      ports: [443]\n      via: corp\n",
			`egressd.yaml:6: policy.rules[0].via: "corp": no such parent in upstream_proxies`},
		{"default_via of no parent", "policy:\n  default_via: corp\n",
			`egressd.yaml:2: policy.default_via: "corp": no such parent in upstream_proxies`},
		{"via on a deny rule", "upstream_proxies:\n  corp:\n    urls: [\"http://10.1.2.3:8080\"]\npolicy:\n  rules:\n    - name: a\n      action: deny\n      hosts: [a.example]\n      via: corp\n",
			`egressd.yaml:9: policy.rules[0].via: a deny rule sends nothing anywhere`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), "egressd.yaml")
			if err == nil {
				t.Fatal("Parse succeeded, want error")
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows a password: %v", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, tt.want) {
					return
				}
			}
			t.Errorf("no error line starts with\n  %s\ngot:\n  %s", tt.want, strings.ReplaceAll(err.Error(), "\n", "\n  "))
		})
	}
}
