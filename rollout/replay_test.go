package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/config"
)

// nxResolver resolves nothing: a replay must not need today's DNS for the
// lines that show the address they dialed.
type nxResolver struct{ asked []string }

func (r *nxResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	r.asked = append(r.asked, host)
	return nil, errors.New("no such host")
}

func replay(t *testing.T, cfgYAML string, log []byte, res policy.Resolver) *ReplayResult {
	t.Helper()
	_, pol, err := config.LoadBytes([]byte(cfgYAML), "egressd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Replay(context.Background(), []Source{{Path: "-", Stdin: bytes.NewReader(log)}},
		ReplayOptions{Policy: pol, Resolver: res, ConfigName: "egressd.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReplayUnchanged: the log replayed against the config it was written
// under changes nothing, without DNS (denied names keep their verdicts).
func TestReplayUnchanged(t *testing.T) {
	res := &nxResolver{}
	r := replay(t, genConfig, genFarmBytes(), res)
	if r.Changed() || r.Replayed != r.Lines {
		var b strings.Builder
		r.WriteTable(&b)
		t.Fatalf("replay against the log's own config:\n%s", b.String())
	}
	var b strings.Builder
	r.WriteTable(&b)
	if !strings.Contains(b.String(), "No decision would change.") {
		t.Errorf("table:\n%s", b.String())
	}
}

// changedConfig is genConfig with a policy change: npm denied for every
// group, batch enforced, the ops rule gone.
var changedConfig = strings.NewReplacer(
	`    batch: { cidrs: ["10.0.2.0/24"] }`, `    batch: { cidrs: ["10.0.2.0/24"], mode: enforce }`,
	`    - name: github`, "    - name: no-npm\n      action: deny\n      hosts: [registry.npmjs.org]\n    - name: github",
	"    - name: internal-git\n      groups: [ops]\n", "    - name: internal-git\n      groups: [web]\n",
).Replace(genConfig)

// TestReplayGolden: a policy change replayed against the generated log, as a
// table and as JSON.
func TestReplayGolden(t *testing.T) {
	if changedConfig == genConfig {
		t.Fatal("the replacements did not apply")
	}
	r := replay(t, changedConfig, genFarmBytes(), &nxResolver{})
	if !r.Changed() {
		t.Fatal("no change found")
	}
	var table, js bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	golden(t, "replay-table.golden", table.Bytes())
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "replay.golden.json", js.Bytes())
	var back ReplayResult
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.ChangedLines != r.ChangedLines {
		t.Errorf("JSON does not read back: %v", err)
	}
}

// TestReplayOldOutcome: what a line says the destination decision was.
func TestReplayOldOutcome(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		want policy.Verdict
		rsn  string
		ok   bool
	}{
		{`{"decision":"allow","rule":"r","reason":""}`, policy.Allow, "", true},
		{`{"decision":"report","rule":"","reason":"not_allowed"}`, policy.Report, "not_allowed", true},
		{`{"decision":"deny","rule":"","reason":"port_not_allowed"}`, policy.Deny, "port_not_allowed", true},
		{`{"decision":"deny","rule":"no-paste","reason":"denied_by_rule"}`, policy.Deny, "denied_by_rule", true},
		{`{"decision":"deny","rule":"r","reason":"private_range"}`, policy.Deny, "private_range", true},
		{`{"decision":"deny","rule":"r","reason":"sni_mismatch"}`, policy.Allow, "sni_mismatch", true},
		{`{"decision":"report","rule":"","reason":"sni_missing"}`, policy.Report, "sni_missing", true},
		{`{"decision":"deny","rule":"","reason":"dns_error"}`, policy.Report, "dns_error", true},
		{`{"decision":"deny","rule":"r","reason":"tls_hello_invalid"}`, policy.Allow, "tls_hello_invalid", true},
		{`{"decision":"report","rule":"","reason":"ech_refused"}`, policy.Report, "ech_refused", true},
		{`{"decision":"deny","rule":"r","reason":"dlp_unavailable"}`, policy.Allow, "dlp_unavailable", true},
		{`{"decision":"deny","rule":"r","reason":"dial_error"}`, policy.Allow, "dial_error", true},
		{`{"decision":"allow","rule":"r","reason":"timeout"}`, policy.Allow, "timeout", true},
		{`{"decision":"deny","rule":"","reason":"auth_required"}`, 0, "", false},
		{`{"decision":"deny","rule":"","reason":"limit"}`, 0, "", false},
		{`{"decision":"deny","rule":"","reason":"bad_request"}`, 0, "", false},
	} {
		var l Line
		if err := l.Parse([]byte(tc.line)); err != nil {
			t.Fatal(err)
		}
		o, ok := oldOutcome(&l)
		if ok != tc.ok || ok && (o.verdict != tc.want || o.reason != tc.rsn) {
			t.Errorf("%s: %v %q %v, want %v %q %v", tc.line, o.verdict, o.reason, ok, tc.want, tc.rsn, tc.ok)
		}
	}
}
