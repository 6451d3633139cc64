package config

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/inspect"
)

func TestDefault(t *testing.T) {
	t.Parallel()
	c, p, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.Policy.Mode = policy.ModeReport
	if diff := cmp.Diff(&want, c, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("Default() mismatch (-want +got):\n%s", diff)
	}
	if p.Mode() != policy.ModeReport || !p.RequireSNI() || !p.IsTLSPort(443) {
		t.Errorf("policy: mode %s", p.Mode())
	}
	// Every public destination is reported; private ranges stay denied.
	res := staticResolver{"public.example": netip.MustParseAddr("93.184.216.34"), "meta.example": netip.MustParseAddr("169.254.169.254")}
	e := policy.NewEngine(p, res)
	for host, want := range map[string]policy.Verdict{
		"public.example":  policy.Report,
		"meta.example":    policy.Deny,
		"127.0.0.1":       policy.Deny,
		"0xa9fea9fe":      policy.Deny,
		"[::1]":           policy.Deny,
		"93.184.216.34":   policy.Report,
		"[2606:4700::11]": policy.Report,
	} {
		d, err := e.Decide(context.Background(), policy.Request{Host: host, Port: 443})
		if err != nil || d.Verdict != want {
			t.Errorf("default policy %s: %v %s, %v; want %v", host, d.Verdict, d.Reason, err, want)
		}
	}
}

type staticResolver map[string]netip.Addr

func (s staticResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	a, ok := s[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	return []netip.Addr{a}, nil
}

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	c, p, err := Load(filepath.Join("..", "..", "deployments", "egressd.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode() != policy.ModeEnforce || len(c.Policy.Rules) < 3 || c.Listen.HTTP == "" {
		t.Errorf("unexpected example: %+v", c)
	}
	d, err := policy.NewEngine(p, staticResolver{"git.corp.example": netip.MustParseAddr("10.50.0.7")}).
		Decide(context.Background(), policy.Request{Host: "git.corp.example", Port: 443})
	if err != nil || d.Verdict != policy.Allow || d.Rule != "internal-git" {
		t.Errorf("example internal-git: %+v %v", d, err)
	}
}

func TestParseDefaultsForOmittedKeys(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "# nothing\n", "listen:\n", "policy:\n  rules:\n"} {
		c, err := Parse([]byte(in), "t.yaml")
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		want := defaults()
		if diff := cmp.Diff(&want, c, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%q: (-want +got):\n%s", in, diff)
		}
	}
}

func TestParseValues(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
listen:
  http: ":0"
  transparent: "0.0.0.0:3130"
  socks5: ""
  admin: "[::1]:9090"
  proxy_protocol: true
  trusted_proxies: ["10.0.0.0/8", "192.0.2.7"]
dns:
  servers: ["10.0.0.2:53", "[2001:db8::53]:53"]
  timeout: 500ms
  negative_ttl: 0
limits:
  max_header_bytes: 10KB
  max_response_header_bytes: 1MiB
  max_connections: 0
timeouts:
  idle: 1h30m
  max_tunnel: 0s
policy:
  mode: report
  deny_ranges: [default, 8.8.4.4]
  allow_ranges: ["127.0.0.1"]
  require_sni: false
  tls_ports: [443, 8443]
  http_ports: [80, 8080]
  ech: deny
  nat64_prefixes: ["64:ff9b:1:abcd::/96", "2001:db8:64::/48"]
  groups:
    web: {cidrs: ["10.0.1.0/24"], users: [bob, 1234]}
  rules:
    - name: r1
      groups: [web]
      hosts: ["Example.COM.", "*.example.com"]
      ports: [443]
log:
  level: debug
  access: false
cache:
  http:
    max_bytes: 512MiB
    max_object_bytes: 16MiB
    collapse_timeout: 3s
admin:
  ui: false
  ui_hosts: ["EgressD.Internal.", "status.example.com", "bücher.example"]
`), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.Listen = Listen{HTTP: ":0", SOCKS5: "", Admin: "[::1]:9090", Transparent: "0.0.0.0:3130", ProxyProtocol: true,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}}
	want.DNS.Servers = []string{"10.0.0.2:53", "[2001:db8::53]:53"}
	want.DNS.Timeout = 500 * time.Millisecond
	want.DNS.NegativeTTL = 0
	want.Limits.MaxHeaderBytes = 10000
	want.Limits.MaxResponseHeaderBytes = 1 << 20
	want.Limits.MaxConnections = 0
	want.Timeouts.Idle = 90 * time.Minute
	want.Policy = policy.Config{
		Mode: "report", DenyRanges: []string{"default", "8.8.4.4"}, AllowRanges: []string{"127.0.0.1"},
		RequireSNI: false, TLSPorts: []int{443, 8443}, HTTPPorts: []int{80, 8080},
		ECH: "deny", NAT64Prefixes: []string{"64:ff9b:1:abcd::/96", "2001:db8:64::/48"},
		Groups: map[string]policy.Group{"web": {CIDRs: []string{"10.0.1.0/24"}, Users: []string{"bob", "1234"}}},
		Rules:  []policy.Rule{{Name: "r1", Groups: []string{"web"}, Hosts: []string{"Example.COM.", "*.example.com"}, Ports: []int{443}}},
	}
	want.Log = Log{Level: "debug", Access: false}
	want.Cache.HTTP = HTTPCache{MaxBytes: 512 << 20, MaxObjectBytes: 16 << 20, CollapseTimeout: 3 * time.Second}
	want.Admin.UI = false
	want.Admin.UIHosts = []string{"egressd.internal", "status.example.com", "xn--bcher-kva.example"}
	if diff := cmp.Diff(&want, c, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want string // exact "FILE:LINE: path: message" prefix of one error
	}{
		{"unknown top key", "listne:\n  http: x\n", `egressd.yaml:1: listne: unknown key`},
		{"unknown nested key", "listen:\n  htp: \":1\"\n", `egressd.yaml:2: listen.htp: unknown key`},
		{"unknown rule key", "policy:\n  rules:\n    - name: a\n      host: [a.com]\n      ports: [1]\n", `egressd.yaml:4: policy.rules[0].host: unknown key`},
		{"duplicate key", "log:\n  level: info\n  level: debug\n", `egressd.yaml:3: log.level: duplicate key`},
		{"syntax error", "listen:\n  http: [\n", `egressd.yaml:`},
		{"not a mapping", "listen: [a]\n", `egressd.yaml:1: listen: expected a mapping, got a list`},
		{"not a list", "policy:\n  tls_ports: 443\n", `egressd.yaml:2: policy.tls_ports: expected a list, got "443"`},
		{"bad bool", "admin:\n  pprof: yes\n", `egressd.yaml:2: admin.pprof: expected true or false, got "yes"`},
		{"ui host wildcard", "admin:\n  ui_hosts:\n    - egressd.internal\n    - \"*.egressd.internal\"\n", `egressd.yaml:4: admin.ui_hosts[1]: "*.egressd.internal": want a host name without port or wildcard`},
		{"ui host port", "admin:\n  ui_hosts: [\"egressd.internal:9090\"]\n", `egressd.yaml:2: admin.ui_hosts[0]: "egressd.internal:9090": want a host name without port or wildcard`},
		{"ui host ip", "admin:\n  ui_hosts: [\"10.0.0.5\"]\n", `egressd.yaml:2: admin.ui_hosts[0]: "10.0.0.5": an IP address; IP addresses are always accepted, list names only`},
		{"ui host bracketed ip", "admin:\n  ui_hosts: [\"[::1]\"]\n", `egressd.yaml:2: admin.ui_hosts[0]: "[::1]": an IP address`},
		{"bad int", "dns:\n  cache_size: lots\n", `egressd.yaml:2: dns.cache_size: expected an integer, got "lots"`},
		{"bad mode", "policy:\n  mode: audit\n", `egressd.yaml:2: policy.mode: "audit": must be enforce or report`},
		{"bad cidr", "policy:\n  deny_ranges:\n    - default\n    - 10.0.0.0/33\n", `egressd.yaml:4: policy.deny_ranges[1]: "10.0.0.0/33": not a CIDR or IP address`},
		{"bad group cidr", "policy:\n  groups:\n    web:\n      cidrs: [\"10.0.1.0/24\", nope]\n", `egressd.yaml:4: policy.groups.web.cidrs[1]: "nope": not a CIDR`},
		{"star alone", "policy:\n  rules:\n    - name: a\n      hosts: [\"*\"]\n      ports: [443]\n", `egressd.yaml:4: policy.rules[0].hosts[0]: "*": a lone "*" is not allowed`},
		{"inner wildcard", "policy:\n  rules:\n    - name: a\n      ports: [443]\n    - name: b\n      ports: [443]\n      hosts: [a.com]\n    - name: c\n      ports: [443]\n      hosts:\n        - \"a.*.com\"\n",
			`egressd.yaml:11: policy.rules[2].hosts[0]: "a.*.com": wildcard only allowed as the leftmost label`},
		{"empty label", "policy:\n  rules:\n    - name: a\n      hosts: [\"a..com\"]\n      ports: [443]\n", `egressd.yaml:4: policy.rules[0].hosts[0]: "a..com": invalid host: empty label`},
		{"missing group", "policy:\n  rules:\n    - name: a\n      groups: [web]\n      hosts: [a.com]\n      ports: [443]\n", `egressd.yaml:4: policy.rules[0].groups[0]: "web": no such group`},
		{"duplicate rule name", "policy:\n  rules:\n    - name: a\n      hosts: [a.com]\n      ports: [443]\n    - name: a\n      hosts: [b.com]\n      ports: [443]\n", `egressd.yaml:6: policy.rules[1].name: "a": duplicate rule name (also rules[0])`},
		{"missing rule name", "policy:\n  rules:\n    - hosts: [a.com]\n      ports: [443]\n", `egressd.yaml:3: policy.rules[0].name: required`},
		{"missing ports", "policy:\n  rules:\n    - name: a\n      hosts: [a.com]\n", `egressd.yaml:3: policy.rules[0].ports: required`},
		{"bad port", "policy:\n  rules:\n    - name: a\n      hosts: [a.com]\n      ports: [443, 65536]\n", `egressd.yaml:5: policy.rules[0].ports[1]: 65536: port must be 1..65535`},
		{"port not a number", "policy:\n  rules:\n    - name: a\n      hosts: [a.com]\n      ports: [https]\n", `egressd.yaml:5: policy.rules[0].ports[0]: expected an integer, got "https"`},
		{"bad group mode", "policy:\n  groups:\n    web:\n      cidrs: [\"10.0.1.0/24\"]\n      mode: audit\n", `egressd.yaml:5: policy.groups.web.mode: "audit": must be enforce or report`},
		{"bad rule action", "policy:\n  rules:\n    - name: a\n      action: block\n      hosts: [a.com]\n      ports: [443]\n", `egressd.yaml:4: policy.rules[0].action: "block": must be allow or deny`},
		{"deny rule allow_ranges", "policy:\n  rules:\n    - name: a\n      action: deny\n      hosts: [a.com]\n      allow_ranges: [\"10.1.0.0/16\"]\n", `egressd.yaml:6: policy.rules[0].allow_ranges: a deny rule allows nothing`},
		{"bad tls port", "policy:\n  tls_ports: [0]\n", `egressd.yaml:2: policy.tls_ports[0]: 0: port must be 1..65535`},
		{"bad http port", "policy:\n  http_ports: [80, 65536]\n", `egressd.yaml:2: policy.http_ports[1]: 65536: port must be 1..65535`},
		{"http port also tls", "policy:\n  tls_ports: [443]\n  http_ports: [80, 443]\n", `egressd.yaml:3: policy.http_ports[1]: 443: also in tls_ports`},
		{"transparent same address", "listen:\n  transparent: \"127.0.0.1:3128\"\n", `egressd.yaml:2: listen.transparent: "127.0.0.1:3128": same address as listen.http`},
		{"bad transparent", "listen:\n  transparent: 3130\n", `egressd.yaml:2: listen.transparent: "3130": want host:port`},
		{"bad size", "limits:\n  max_header_bytes: 64KiBs\n", `egressd.yaml:2: limits.max_header_bytes: "64KiBs": want bytes or a number with a unit`},
		{"negative size", "limits:\n  max_header_bytes: -1\n", `egressd.yaml:2: limits.max_header_bytes: "-1": want bytes`},
		{"zero response header size", "limits:\n  max_response_header_bytes: 0\n", `egressd.yaml:2: limits.max_response_header_bytes: must be greater than zero`},
		{"bad duration", "timeouts:\n  idle: 5\n", `egressd.yaml:2: timeouts.idle: "5": want a Go duration`},
		{"bad duration unit", "timeouts:\n  idle: 5 minutes\n", `egressd.yaml:2: timeouts.idle: "5 minutes": want a Go duration`},
		{"negative duration", "timeouts:\n  drain: -1s\n", `egressd.yaml:2: timeouts.drain: must not be negative`},
		{"zero connect timeout", "timeouts:\n  connect: 0s\n", `egressd.yaml:2: timeouts.connect: must be greater than zero`},
		{"bad listen", "listen:\n  http: localhost\n", `egressd.yaml:2: listen.http: "localhost": want host:port`},
		{"bad listen port", "listen:\n  socks5: \"127.0.0.1:99999\"\n", `egressd.yaml:2: listen.socks5: "127.0.0.1:99999": port must be a number 0..65535`},
		{"bad listen host", "listen:\n  admin: \"a..b:80\"\n", `egressd.yaml:2: listen.admin: "a..b:80": host must be an IP address or a name`},
		{"same listen address", "listen:\n  http: \"127.0.0.1:1080\"\n", `egressd.yaml:2: listen.http: "127.0.0.1:1080": same address as listen.socks5`},
		{"bad trusted proxy", "listen:\n  trusted_proxies: [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n", `egressd.yaml:2: listen.trusted_proxies[1]: "10.0.0.1/8": host bits set`},
		{"proxy protocol without trusted", "listen:\n  proxy_protocol: true\n", `egressd.yaml:2: listen.proxy_protocol: needs listen.trusted_proxies`},
		{"bad dns server", "dns:\n  servers: [\"10.0.0.2\"]\n", `egressd.yaml:2: dns.servers[0]: "10.0.0.2": want IP:port`},
		{"min ttl above max ttl", "dns:\n  max_ttl: 1m\n  min_ttl: 2m\n", `egressd.yaml:3: dns.min_ttl: 2m0s is more than dns.max_ttl (1m0s)`},
		{"negative stale ttl", "dns:\n  stale_ttl: -1s\n", `egressd.yaml:2: dns.stale_ttl: must not be negative`},
		{"bad log level", "log:\n  level: verbose\n", `egressd.yaml:2: log.level: "verbose": must be debug, info, warn or error`},
		{"tunnel open without access log", "log:\n  access: false\n  tunnel_open: true\n", `egressd.yaml:3: log.tunnel_open: is true but log.access is false: nothing would be written`},
		{"negative auth check cap", "auth:\n  max_concurrent_checks: -1\n", `egressd.yaml:2: auth.max_concurrent_checks: must not be negative`},
		{"negative cache size", "cache:\n  http:\n    max_bytes: -1\n", `egressd.yaml:3: cache.http.max_bytes: "-1": want bytes`},
		{"zero object bound", "cache:\n  http:\n    max_object_bytes: 0\n", `egressd.yaml:3: cache.http.max_object_bytes: must be greater than zero`},
		{"zero collapse timeout", "cache:\n  http:\n    collapse_timeout: 0s\n", `egressd.yaml:3: cache.http.collapse_timeout: must be greater than zero`},
		{"unknown cache key", "cache:\n  http:\n    max_entries: 10\n", `egressd.yaml:3: cache.http.max_entries: unknown key`},
		{"auth required without file", "auth:\n  required: true\n", `egressd.yaml:2: auth.required: needs auth.users_file`},
		{"bad ech", "policy:\n  ech: strip\n", `egressd.yaml:2: policy.ech: "strip": must be allow or deny`},
		{"nat64 prefix length", "policy:\n  nat64_prefixes:\n    - 64:ff9b::/96\n    - 2001:db8:64::/80\n", `egressd.yaml:4: policy.nat64_prefixes[1]: "2001:db8:64::/80": a NAT64 prefix is /32, /40, /48, /56, /64 or /96 (RFC 6052)`},
		{"nat64 prefix ipv4", "policy:\n  nat64_prefixes: [\"10.0.0.0/8\"]\n", `egressd.yaml:2: policy.nat64_prefixes[0]: "10.0.0.0/8": a NAT64 prefix is IPv6`},
		{"nat64 prefix not a prefix", "policy:\n  nat64_prefixes: [nat64]\n", `egressd.yaml:2: policy.nat64_prefixes[0]: "nat64": not a CIDR or IP address`},
		{"local-use nat64 opened undeclared", "policy:\n  allow_ranges:\n    - \"64:ff9b:1:abcd::/96\"\n", `egressd.yaml:3: policy.allow_ranges[0]: 64:ff9b:1:abcd::/96: inside the NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215): list your NAT64 prefix in policy.nat64_prefixes`},
		{"allow tie", "policy:\n  allow_ranges: [\"10.0.0.0/8\"]\n", `egressd.yaml:2: policy.allow_ranges[0]: 10.0.0.0/8: equals a deny range`},
		{"two documents", "log:\n  level: info\n---\nlog:\n  level: debug\n", `egressd.yaml:3: more than one YAML document`},
		{"merge key", "base: &b {http: \":1\"}\nlisten:\n  <<: *b\n", `egressd.yaml:1: base: unknown key`},
		{"inspect without a CA", "policy:\n  rules:\n    - name: up\n      hosts: [up.example.com]\n      ports: [443]\n      inspect: true\n", `egressd.yaml:6: policy.rules[0].inspect: needs tls_inspection.ca_cert and ca_key`},
		{"ca cert without key", "tls_inspection:\n  ca_cert: /x.pem\n", `egressd.yaml:2: tls_inspection.ca_key: required with tls_inspection.ca_cert`},
		{"ca key without cert", "tls_inspection:\n  ca_key: /x.key\n", `egressd.yaml:2: tls_inspection.ca_cert: required with tls_inspection.ca_key`},
		{"upstream roots alone", "tls_inspection:\n  upstream_ca_file: /r.pem\n", `egressd.yaml:2: tls_inspection.upstream_ca_file: has no effect without`},
		{"bad bypass", "tls_inspection:\n  bypass:\n    - ok.example\n    - a.*.example\n", `egressd.yaml:4: tls_inspection.bypass[1]: "a.*.example": wildcard only allowed as the leftmost label`},
		{"methods without inspect", "policy:\n  rules:\n    - name: up\n      hosts: [up.example.com]\n      ports: [443]\n      methods: [GET]\n", `egressd.yaml:3: policy.rules[0].inspect: methods, paths and request_headers_add need inspect: true`},
		{"bad path", "tls_inspection:\n  ca_cert: /x.pem\n  ca_key: /x.key\npolicy:\n  rules:\n    - name: up\n      hosts: [up.example.com]\n      ports: [443]\n      inspect: true\n      paths: [\"/a/../b\"]\n", `egressd.yaml:10: policy.rules[0].paths[0]: "/a/../b": not a canonical path`},
		{"bad placeholder", "tls_inspection:\n  ca_cert: /x.pem\n  ca_key: /x.key\npolicy:\n  rules:\n    - name: up\n      hosts: [up.example.com]\n      ports: [443]\n      inspect: true\n      request_headers_add:\n        X-Group: \"{grup}\"\n", `egressd.yaml:11: policy.rules[0].request_headers_add.X-Group: {grup}: unknown placeholder`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), "egressd.yaml")
			if err == nil {
				t.Fatal("Parse succeeded, want error")
			}
			found := false
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, tt.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no error line starts with\n  %s\ngot:\n  %s", tt.want, strings.ReplaceAll(err.Error(), "\n", "\n  "))
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

func TestParseAllErrorsAtOnce(t *testing.T) {
	t.Parallel()
	in := `listen:
  htp: ":1"
  http: nope
dns:
  timeout: 5
policy:
  mode: audit
  groups:
    web: {cidrs: ["10.0.1.0/33"]}
  rules:
    - name: a
      groups: [nope]
      hosts: ["*", "a.*.com", "a..com", "ok.com"]
      ports: [0, 443, x]
    - name: a
      hosts: [b.com]
      ports: [443]
log:
  level: loud
`
	_, err := Parse([]byte(in), "egressd.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		`egressd.yaml:2: listen.htp: unknown key`,
		`egressd.yaml:3: listen.http: "nope": want host:port, e.g. "127.0.0.1:3128" or ":3128"`,
		`egressd.yaml:5: dns.timeout: "5": want a Go duration such as "5s" or "2m"`,
		`egressd.yaml:7: policy.mode: "audit": must be enforce or report`,
		`egressd.yaml:9: policy.groups.web.cidrs[0]: "10.0.1.0/33": not a CIDR or IP address`,
		`egressd.yaml:12: policy.rules[0].groups[0]: "nope": no such group`,
		`egressd.yaml:13: policy.rules[0].hosts[0]: "*": a lone "*" is not allowed: list the hosts, or use mode report`,
		`egressd.yaml:13: policy.rules[0].hosts[1]: "a.*.com": wildcard only allowed as the leftmost label`,
		`egressd.yaml:13: policy.rules[0].hosts[2]: "a..com": invalid host: empty label`,
		`egressd.yaml:14: policy.rules[0].ports[2]: expected an integer, got "x"`,
		`egressd.yaml:14: policy.rules[0].ports[0]: 0: port must be 1..65535`,
		`egressd.yaml:15: policy.rules[1].name: "a": duplicate rule name (also rules[0])`,
		`egressd.yaml:19: log.level: "loud": must be debug, info, warn or error`,
	}
	if diff := cmp.Diff(want, strings.Split(err.Error(), "\n")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "egressd.yaml")
	if err := os.WriteFile(path, []byte("policy:\n  rules:\n    - name: a\n      hosts: [\"a.*.com\"]\n      ports: [443]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":4: policy.rules[0].hosts[0]: ") {
		t.Errorf("Load error %v", err)
	}
	if _, _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Size{
		"0": 0, "1024": 1024, "64KiB": 64 << 10, "256MiB": 256 << 20, "1GiB": 1 << 30, "2TiB": 2 << 40,
		"10KB": 10000, "3MB": 3e6, "1GB": 1e9, "7B": 7, "10 KiB": 10 << 10,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "+1", "1.5KiB", "1kib", "1 K", "99999999999TiB", "0x10"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, got)
		}
	}
	for s, want := range map[Size]string{0: "0", 1000: "1000", 1024: "1KiB", 64 << 10: "64KiB", 3 << 30: "3GiB", 1<<20 + 1: "1048577"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	c, _, err := Load(filepath.Join("..", "..", "deployments", "egressd.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(out, "marshaled.yaml")
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	if diff := cmp.Diff(c, c2, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("round trip (-first +second):\n%s", diff)
	}
}

func TestTLSInspectionConfig(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`tls_inspection:
  ca_cert: /etc/egressd/inspect-ca.pem
  ca_key: /etc/egressd/inspect-ca.key
  bypass: ["pinned.example.com"]
policy:
  rules:
    - name: uploads
      hosts: ["upload.example.com"]
      ports: [443]
      inspect: true
      methods: [GET, POST]
      paths: ["/api/v2/*", "/upload"]
      request_headers_add: {"X-Egress-Client-Group": "{group}"}
`), "egressd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := inspect.Config{CACert: "/etc/egressd/inspect-ca.pem", CAKey: "/etc/egressd/inspect-ca.key", Bypass: []string{"pinned.example.com"}}
	if diff := cmp.Diff(want, c.TLSInspection.Inspect()); diff != "" {
		t.Fatal(diff)
	}
	r := c.Policy.Rules[0]
	if !r.Inspect || len(r.Methods) != 2 || len(r.Paths) != 2 || r.RequestHeadersAdd["X-Egress-Client-Group"] != "{group}" {
		t.Fatalf("rule %+v", r)
	}
}
