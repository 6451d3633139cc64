package test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/testenv"
)

// runIn runs the built egressd with args and stdin, like run.
func runIn(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdin = bytes.NewReader(stdin)
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

// accessLine renders one access line as egressd writes it.
func accessLine(ts, client, group, host string, port int, ip, decision, rule, reason string) string {
	return fmt.Sprintf(`{"ts":%q,"listener":"connect","client":%q,"user":"","group":%q,"host":%q,"port":%d,"sni":"","ip":%q,"decision":%q,"rule":%q,"reason":%q,"status":200,"bytes_up":1,"bytes_down":1,"duration_ms":1}`,
		ts, client, group, host, port, ip, decision, rule, reason) + "\n"
}

const cliRolloutConfig = `policy:
  mode: report
  groups:
    web: { cidrs: ["10.0.1.0/24"] }
    batch: { cidrs: ["10.0.2.0/24"] }
  rules:
    - name: no-paste
      action: deny
      hosts: ["paste.example"]
`

// TestLearnCommand: learn reads plain, gzip and stdin logs of several
// instances alike, prints a config validate accepts, says what it needs.
func TestLearnCommand(t *testing.T) {
	dir := t.TempDir()
	a := accessLine("2026-11-25T10:00:00Z", "10.0.1.7", "web", "a.cdn.example.com", 443, "93.184.215.1", "report", "", "not_allowed") +
		accessLine("2026-11-25T10:00:01Z", "10.0.1.7", "web", "b.cdn.example.com", 443, "93.184.215.1", "report", "", "not_allowed")
	b := accessLine("2026-11-25T10:00:02Z", "10.0.1.8", "web", "c.cdn.example.com", 443, "93.184.215.1", "report", "", "not_allowed") +
		accessLine("2026-11-25T10:00:03Z", "10.0.2.9", "batch", "pypi.org", 443, "151.101.0.223", "report", "", "not_allowed") +
		accessLine("2026-11-25T10:00:04Z", "10.0.2.9", "batch", "paste.example", 443, "", "deny", "no-paste", "denied_by_rule")
	plain := filepath.Join(dir, "a.log")
	if err := os.WriteFile(plain, []byte(a), 0o600); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(b))
	zw.Close()
	gzPath := filepath.Join(dir, "b.log.1") // no .gz suffix: found by its magic bytes
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, cliRolloutConfig)
	out, errOut, code := runIn(t, gz.Bytes(), "learn", "--config", cfg, plain, "-")
	if code != 0 {
		t.Fatalf("learn: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{`- name: no-paste`, `groups: [web]`, `- "*.cdn.example.com" # folds 3 names`, `groups: [batch]`, `- pypi.org # 1 request`,
		`#   group batch: deny denied_by_rule (rule no-paste): paste.example:443`} {
		if !strings.Contains(out, want) {
			t.Errorf("proposal lacks %q:\n%s", want, out)
		}
	}
	if errOut != "" {
		t.Errorf("stderr is not a terminal, yet: %q", errOut)
	}
	out2, _, _ := runIn(t, nil, "learn", "--config", cfg, plain, gzPath)
	if out2 != out {
		t.Errorf("a gzip file and the same bytes on stdin give different proposals")
	}
	proposal := writeConfig(t, out)
	if o, e, code := run(t, "validate", "--config", proposal); code != 0 {
		t.Errorf("validate the proposal: exit %d\n%s%s", code, o, e)
	}
	if _, e, code := run(t, "learn", "--diff", plain); code != 2 || !strings.Contains(e, "--diff needs --config") {
		t.Errorf("--diff without --config: exit %d %s", code, e)
	}
	if _, e, code := run(t, "learn", filepath.Join(dir, "missing.log")); code != 2 || !strings.Contains(e, "missing.log") {
		t.Errorf("missing log: exit %d %s", code, e)
	}
	if _, _, code := run(t, "learn"); code != 2 {
		t.Errorf("no log: exit %d, want 2", code)
	}
	diff, e, code := run(t, "learn", "--diff", "--config", cfg, plain, gzPath)
	if code != 0 || !strings.Contains(diff, "Would add (not allowed by "+cfg+" today): 2") || !strings.Contains(diff, "*.cdn.example.com:443") {
		t.Errorf("--diff: exit %d\n%s%s", code, diff, e)
	}
}

// TestReplayExitCodes: check --replay exits 0 when no decision changes, 1
// when one does, 2 on errors; --json reads back.
func TestReplayExitCodes(t *testing.T) {
	log := accessLine("2026-11-25T10:00:00Z", "10.0.1.7", "web", "93.184.216.34", 443, "93.184.216.34", "report", "", "not_allowed") +
		accessLine("2026-11-25T10:00:01Z", "10.0.2.9", "batch", "paste.example", 443, "", "deny", "no-paste", "denied_by_rule") +
		`{"ts":"2026-11-25T10:00:02Z","listener":"http","client":"10.0.2.9","user":"","group":"","host":"x.example","port":80,"decision":"deny","rule":"","reason":"auth_required","status":407}` + "\n"
	logPath := writeConfig(t, log)
	same := writeConfig(t, cliRolloutConfig)
	if out, e, code := run(t, "check", "--config", same, "--replay", logPath); code != 0 || !strings.Contains(out, "No decision would change.") {
		t.Errorf("replay against the log's config: exit %d\n%s%s", code, out, e)
	}
	enforced := writeConfig(t, strings.Replace(cliRolloutConfig, `web: { cidrs: ["10.0.1.0/24"] }`, `web: { cidrs: ["10.0.1.0/24"], mode: enforce }`, 1))
	out, e, code := run(t, "check", "--config", enforced, "--replay", logPath, "--json")
	if code != 1 {
		t.Fatalf("replay with web enforced: exit %d, want 1\n%s%s", code, out, e)
	}
	var res struct {
		Replayed     int64            `json:"replayed"`
		NotReplayed  map[string]int64 `json:"not_replayed"`
		ChangedLines int64            `json:"changed_lines"`
		Destinations []struct {
			Group, Host, From, To, Reason string
			Port                          int
		} `json:"destinations"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if res.Replayed != 2 || res.NotReplayed["auth_required"] != 1 || res.ChangedLines != 1 || len(res.Destinations) != 1 {
		t.Fatalf("--json: %+v", res)
	}
	if d := res.Destinations[0]; d.Group != "web" || d.Host != "93.184.216.34" || d.Port != 443 || d.From != "report" || d.To != "deny" || d.Reason != "not_allowed" {
		t.Errorf("changed destination: %+v", d)
	}
	for _, args := range [][]string{
		{"check", "--config", same, "--replay", filepath.Join(t.TempDir(), "missing.log")},
		{"check", "--config", same, "--replay", logPath, "example.com:443"},
		{"check", "--config", same, "--json", "example.com:443"},
		{"check", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "--replay", logPath},
	} {
		if _, _, code := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// setGroupMode sets policy.groups.NAME.mode in a config file's text.
func setGroupMode(t *testing.T, cfg, group, mode string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatal(err)
	}
	find := func(m *yaml.Node, key string) *yaml.Node {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				return m.Content[i+1]
			}
		}
		t.Fatalf("no key %q", key)
		return nil
	}
	g := find(find(find(doc.Content[0], "policy"), "groups"), group)
	set := false
	for i := 0; i+1 < len(g.Content); i += 2 {
		if g.Content[i].Value == "mode" {
			g.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Value: mode}
			set = true
		}
	}
	if !set {
		g.Content = append(g.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "mode"}, &yaml.Node{Kind: yaml.ScalarNode, Value: mode})
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestRolloutEndToEnd is the rollout, with the real binary and real
// clients: report mode under traffic, learn from the access log it wrote,
// run the proposal (still reporting), enforce one group, replay: no change
// for the other group, and the enforced group denied only what it never
// did before.
func TestRolloutEndToEnd(t *testing.T) {
	e := newRolloutEnv(t)
	dir := t.TempDir()
	// Phase 1: report mode, no allow rule, a global deny list.
	cfg1 := testenv.YAML(t, e.config(t, func(e *rolloutEnv, p *policy.Config) {
		p.Mode = "report"
		p.DenyRanges = []string{"default"}
		p.AllowRanges = []string{"127.0.0.2/32", "127.0.0.3/32"}
		p.TLSPorts = []int{e.tlsPort}
		p.Groups = map[string]policy.Group{
			"web":   {CIDRs: []string{webClientIP + "/32"}},
			"batch": {CIDRs: []string{batchClientIP + "/32"}},
		}
		p.Rules = []policy.Rule{{Name: "no-paste", Action: "deny", Hosts: []string{"paste.test", "*.paste.test"}}}
	}))
	traffic := []struct{ from, kind, name string }{
		{webClientIP, "connect", "allowed.test"},
		{webClientIP, "connect", "news.test"},
		{webClientIP, "http", "news.test"},
		{webClientIP, "connect", "cdn1.assets.test"},
		{webClientIP, "socks5", "cdn2.assets.test"},
		{webClientIP, "connect", "cdn3.assets.test"},
		{webClientIP, "connect", originIP}, // an IP literal
		{batchClientIP, "socks5", "batch.test"},
		{batchClientIP, "connect", "allowed.test"},
		{batchClientIP, "http", "api.news.test"},
		{batchClientIP, "connect", "paste.test"}, // denied by the rule: a finding
	}
	drive := func(p *testenv.Proc, reqs []struct{ from, kind, name string }) {
		t.Helper()
		for _, r := range reqs {
			e.fetch(t, p, r.from, r.kind, r.name)
			p.WaitForLog(t, testenv.Fields(map[string]any{"listener": r.kind, "client": r.from, "host": r.name}))
		}
	}
	writeLog := func(p *testenv.Proc, name string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.Join(p.Stdout(), "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p1 := (&testenv.Egressd{Netns: e.ns}).Start(t, cfg1)
	drive(p1, traffic)
	p1.Stop(t, 0)
	log1 := writeLog(p1, "phase1.log")
	cfg1Path := filepath.Join(dir, "phase1.yaml")
	os.WriteFile(cfg1Path, []byte(cfg1), 0o600)

	// Phase 2: learn from that log.
	proposal, errOut, code := run(t, "learn", "--config", cfg1Path, log1)
	if code != 0 {
		t.Fatalf("learn: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{`"*.assets.test"`, "- name: learned-web-", "- name: learned-batch-", `- "127.0.0.2/32"`,
		"deny denied_by_rule (rule no-paste): paste.test"} {
		if !strings.Contains(proposal, want) {
			t.Errorf("proposal lacks %q:\n%s", want, proposal)
		}
	}
	proposalPath := filepath.Join(dir, "proposal.yaml")
	os.WriteFile(proposalPath, []byte(proposal), 0o600)
	if out, e, code := run(t, "validate", "--config", proposalPath); code != 0 {
		t.Fatalf("validate the proposal: %d\n%s%s", code, out, e)
	}
	// Against the traffic it was learned from, the proposal turns every
	// report into an allow: exit 1, and not one line is denied.
	out, _, code := run(t, "check", "--config", proposalPath, "--replay", log1, "--json")
	var learned struct {
		ChangedLines int64 `json:"changed_lines"`
		Changes      []struct{ From, To string }
	}
	if err := json.Unmarshal([]byte(out), &learned); err != nil || code != 1 || learned.ChangedLines != 10 {
		t.Errorf("replay of phase 1 against the proposal: exit %d, %v\n%s", code, err, out)
	}
	for _, c := range learned.Changes {
		if c.From != "report" || c.To != "allow" {
			t.Errorf("replay of phase 1 against the proposal: a change %s -> %s", c.From, c.To)
		}
	}

	// Phase 3: the farm runs the proposal, still in report mode; the same
	// traffic plus a destination new to each group.
	p2 := (&testenv.Egressd{Netns: e.ns}).Start(t, proposal)
	phase3 := append(traffic, struct{ from, kind, name string }{webClientIP, "connect", "new.test"},
		struct{ from, kind, name string }{batchClientIP, "connect", "new.test"},
		struct{ from, kind, name string }{webClientIP, "connect", "cdn4.assets.test"})
	drive(p2, phase3)
	p2.WaitForLog(t, testenv.Fields(map[string]any{"client": webClientIP, "host": "allowed.test", "decision": "allow", "group": "web"}))
	p2.WaitForLog(t, testenv.Fields(map[string]any{"client": webClientIP, "host": "cdn4.assets.test", "decision": "allow"}))
	p2.WaitForLog(t, testenv.Fields(map[string]any{"client": webClientIP, "host": "new.test", "decision": "report"}))
	log2 := writeLog(p2, "phase3.log")
	if out, e, code := run(t, "check", "--config", proposalPath, "--replay", log2); code != 0 {
		t.Errorf("replay of phase 3 against the config it ran: exit %d\n%s%s", code, out, e)
	}

	// Phase 4: enforce group web; replay shows only web's new destination.
	enforced := setGroupMode(t, proposal, "web", "enforce")
	enforcedPath := filepath.Join(dir, "enforced.yaml")
	os.WriteFile(enforcedPath, []byte(enforced), 0o600)
	out, e2, code := run(t, "check", "--config", enforcedPath, "--replay", log2, "--json")
	if code != 1 {
		t.Fatalf("replay with web enforced: exit %d\n%s%s", code, out, e2)
	}
	var res struct {
		Destinations []struct{ Group, Host, From, To, Reason string } `json:"destinations"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Destinations) != 1 {
		t.Fatalf("changes: %+v", res.Destinations)
	}
	if d := res.Destinations[0]; d.Group != "web" || d.Host != "new.test" || d.From != "report" || d.To != "deny" || d.Reason != "not_allowed" {
		t.Errorf("the one change: %+v", d)
	}

	// Phase 5: the farm takes the enforced config (a file change reloads it).
	if err := os.WriteFile(p2.ConfigPath, []byte(enforced), 0o600); err != nil {
		t.Fatal(err)
	}
	waitStderr(t, p2, "config reloaded")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil { // until the reload shows in a decision
		e.fetch(t, p2, webClientIP, "connect", "new.test")
		if n := len(accessMatches(p2, map[string]any{"client": webClientIP, "host": "new.test", "decision": "deny"})); n > 0 {
			break
		}
	}
	p2.WaitForLog(t, testenv.Fields(map[string]any{"client": webClientIP, "host": "new.test", "decision": "deny", "reason": "not_allowed", "group": "web"}))
	for _, r := range []struct {
		from, kind, name string
		decision         string
	}{
		{webClientIP, "connect", "cdn1.assets.test", "allow"},
		{webClientIP, "socks5", "allowed.test", "allow"},
		{batchClientIP, "connect", "new.test", "report"},
		{batchClientIP, "socks5", "batch.test", "allow"},
	} {
		code, status := e.fetch(t, p2, r.from, r.kind, r.name)
		if code != 0 || status != "200" {
			t.Errorf("%s %s from %s after enforcing web: curl %d %s", r.kind, r.name, r.from, code, status)
		}
	}
}

// accessMatches returns the access lines so far whose keys equal kv.
func accessMatches(p *testenv.Proc, kv map[string]any) []map[string]any {
	var out []map[string]any
	match := testenv.Fields(kv)
	for _, l := range p.AccessLines() {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}
