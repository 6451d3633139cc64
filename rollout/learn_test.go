package rollout

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", name, diff)
	}
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func learnFrom(t *testing.T, log []byte, opt LearnOptions, diff bool) *Learned {
	t.Helper()
	lr, err := Learn([]Source{{Path: "-", Stdin: bytes.NewReader(log)}}, opt, diff)
	if err != nil {
		t.Fatal(err)
	}
	return lr
}

// TestLearnGolden: learn over a realistic generated log (groups by address
// and by user, CDN-style names, GitHub Pages and S3 buckets under private
// public suffixes, .co.uk names, IP literals, IDN, denied and report lines),
// without a config, with one, and in --diff mode.
func TestLearnGolden(t *testing.T) {
	log := genFarmBytes()
	for _, tc := range []struct {
		golden string
		opt    LearnOptions
		diff   bool
	}{
		{"learn-noconfig.golden", LearnOptions{Fold: DefaultFold}, false},
		{"learn-config.golden", LearnOptions{Fold: DefaultFold, Config: []byte(genConfig), ConfigName: "egressd.yaml"}, false},
		{"learn-config-fold0-min5.golden", LearnOptions{Fold: 0, MinCount: 5, Config: []byte(genConfig), ConfigName: "egressd.yaml"}, false},
		{"learn-diff.golden", LearnOptions{Fold: DefaultFold, Config: []byte(genConfig), ConfigName: "egressd.yaml"}, true},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			lr := learnFrom(t, log, tc.opt, tc.diff)
			var out []byte
			if tc.diff {
				out = lr.Diff()
			} else {
				var err error
				if out, err = lr.Proposal(); err != nil {
					t.Fatal(err)
				}
				// What egressd validate would say.
				if _, _, err := config.LoadBytes(out, "proposal.yaml"); err != nil {
					t.Fatalf("the proposal does not validate: %v\n%s", err, out)
				}
			}
			golden(t, tc.golden, out)
		})
	}
}

// logResolver answers a name with the addresses the log shows it dialed,
// the private addresses the denied names stood for, and a public address
// for anything else.
type logResolver map[string][]netip.Addr

func (r logResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return []netip.Addr{netip.MustParseAddr("93.184.215.99")}, nil
}

type logReq struct {
	client        policy.Client
	host          string
	port          uint16
	ip            string
	proposable    bool
	decision, rsn string
	group         string
}

func readLog(t *testing.T, log []byte) []logReq {
	t.Helper()
	var out []logReq
	var l Line
	for _, b := range bytes.Split(bytes.TrimSpace(log), []byte("\n")) {
		if err := l.Parse(b); err != nil {
			t.Fatal(err)
		}
		out = append(out, logReq{client: clientOf(&l), host: string(l.Host), port: uint16(l.Port), ip: string(l.IP),
			proposable: proposable(&l), decision: string(l.Decision), rsn: string(l.Reason), group: string(l.Group)})
	}
	return out
}

// enforced loads a proposal as egressd would, with the policy and every
// group in enforce mode.
func enforced(t *testing.T, proposal []byte, res policy.Resolver) *policy.Engine {
	t.Helper()
	cfg, _, err := config.LoadBytes(proposal, "proposal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Policy.Mode = policy.ModeEnforce
	for name, g := range cfg.Policy.Groups {
		g.Mode = ""
		cfg.Policy.Groups[name] = g
	}
	p, err := policy.Compile(cfg.Policy)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewEngine(p, res)
}

// TestLearnRoundTrip: the proposal, loaded in enforce mode, allows every
// destination of the input log that was not a finding (for the client that
// asked, at the address it dialed), and nothing else the log did not show:
// not another group's destinations, not another port, not a name beside a
// proposed one, not the findings. With --fold 0 the allowed set is exactly
// the log's; with folding, only names under the two proposed wildcards are
// added.
func TestLearnRoundTrip(t *testing.T) {
	log := genFarmBytes()
	reqs := readLog(t, log)
	res := logResolver{
		"metadata.internal.example": {netip.MustParseAddr("169.254.169.254")},
		"169.254.169.254":           {netip.MustParseAddr("169.254.169.254")},
	}
	for _, r := range reqs {
		if r.ip != "" {
			res[r.host] = []netip.Addr{netip.MustParseAddr(r.ip)}
		}
	}
	clients := map[string]policy.Client{
		"web":   {Addr: netip.MustParseAddr(genWeb)},
		"batch": {Addr: netip.MustParseAddr(genBatch)},
		"ops":   {Addr: netip.MustParseAddr(genOps), User: "alice"},
		"":      {Addr: netip.MustParseAddr("10.7.7.7")},
	}
	type dest struct {
		group, host string
		port        uint16
	}
	shown := map[dest]bool{}
	hosts, ports := map[string]bool{}, map[uint16]bool{}
	// A client in no group of the config is a finding, not a rule for any
	// client.
	findingLine := func(r logReq) bool { return !r.proposable || r.group == "" }
	for _, r := range reqs {
		if !findingLine(r) {
			shown[dest{r.group, r.host, r.port}] = true
		}
		hosts[r.host], ports[r.port] = true, true
	}
	// Names the log never showed: beside proposed names, under public
	// suffixes, under a folded wildcard.
	for _, h := range []string{"zz.cdn.shop.example.com", "zz.shop.example.com", "example.com", "zz.github.io", "github.io",
		"zz.co.uk", "co.uk", "zz.amazonaws.com", "other-bucket.s3.amazonaws.com", "zz.cloudfront.net", "zz.debian.org",
		"debian.org", "zz.github.com", "zz.corp.example", "zz.pythonhosted.org"} {
		hosts[h] = true
	}
	for _, tc := range []struct {
		fold     int
		wildcard map[dest]string // group and port of a proposed wildcard -> its suffix
	}{
		{0, nil},
		{DefaultFold, map[dest]string{{"web", "", 443}: ".cdn.shop.example.com", {"batch", "", 80}: ".debian.org"}},
	} {
		t.Run(fmt.Sprintf("fold %d", tc.fold), func(t *testing.T) {
			lr := learnFrom(t, log, LearnOptions{Fold: tc.fold, Config: []byte(genConfig), ConfigName: "egressd.yaml"}, false)
			proposal, err := lr.Proposal()
			if err != nil {
				t.Fatal(err)
			}
			e := enforced(t, proposal, res)
			ctx := context.Background()
			for _, r := range reqs {
				if findingLine(r) {
					continue
				}
				d, err := e.Decide(ctx, policy.Request{Client: r.client, Host: r.host, Port: r.port})
				if err != nil || d.Verdict != policy.Allow {
					t.Errorf("log line %s %s:%d (%s %s) is denied by the proposal: %s %s %v", r.group, r.host, r.port, r.decision, r.rsn, d.Verdict, d.Reason, err)
				}
			}
			for group, c := range clients {
				for h := range hosts {
					for p := range ports {
						want := shown[dest{group, h, p}]
						if suffix, ok := tc.wildcard[dest{group, "", p}]; ok && strings.HasSuffix(h, suffix) {
							want = true
						}
						d, err := e.Decide(ctx, policy.Request{Client: c, Host: h, Port: p})
						if got := err == nil && d.Verdict.Passes(); got != want {
							t.Errorf("group %q %s:%d: allowed=%v (%s %s), want %v", group, h, p, got, d.Reason, d.Rule, want)
						}
					}
				}
			}
		})
	}
}

// foldPatterns learns from names (one report line each, any client, port
// 443) and returns the proposed patterns and the findings text.
func foldPatterns(t *testing.T, fold int, names ...string) ([]string, string) {
	t.Helper()
	var b bytes.Buffer
	aw := newAccessWriter(&b, time.Second)
	for _, n := range names {
		aw.write(genReq{listener: policy.ListenerConnect, client: genWeb, host: n, port: 443, ip: "93.184.215.1",
			verdict: policy.Report, reason: policy.ReasonNotAllowed})
	}
	lr := learnFrom(t, b.Bytes(), LearnOptions{Fold: fold}, false)
	c := lr.collect()
	var out []string
	for _, e := range c.entries {
		out = append(out, e.pattern)
	}
	return out, lr.findingsText(c)
}

// TestFoldPublicSuffix: wildcards only at or below a registrable domain, by
// the Public Suffix List with its private section, never spanning a public
// suffix the log showed below it.
func TestFoldPublicSuffix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fold  int
		names []string
		want  []string
		lost  string // in the findings
	}{
		{"siblings fold", 3, []string{"a.example.com", "b.example.com", "c.example.com"}, []string{"*.example.com"}, ""},
		{"apex stays exact", 3, []string{"a.example.com", "b.example.com", "c.example.com", "example.com"}, []string{"example.com", "*.example.com"}, ""},
		{"two are not enough", 3, []string{"a.example.com", "b.example.com"}, []string{"a.example.com", "b.example.com"}, ""},
		{"fold 2", 2, []string{"a.example.com", "b.example.com"}, []string{"*.example.com"}, ""},
		{"fold 0 never", 0, []string{"a.example.com", "b.example.com", "c.example.com"}, []string{"a.example.com", "b.example.com", "c.example.com"}, ""},
		{"never *.com", 3, []string{"foo.com", "bar.com", "baz.com"}, []string{"bar.com", "baz.com", "foo.com"}, ""},
		{"never *.co.uk", 3, []string{"weather.co.uk", "news.co.uk", "shop.co.uk"}, []string{"news.co.uk", "shop.co.uk", "weather.co.uk"}, ""},
		{"below a registrable .co.uk domain", 3, []string{"a.shop.co.uk", "b.shop.co.uk", "c.shop.co.uk"}, []string{"*.shop.co.uk"}, ""},
		{"never *.github.io (private section)", 3, []string{"alice.github.io", "bob.github.io", "carol.github.io"},
			[]string{"alice.github.io", "bob.github.io", "carol.github.io"}, ""},
		{"inside one github.io site", 3, []string{"a.alice.github.io", "b.alice.github.io", "c.alice.github.io"}, []string{"*.alice.github.io"}, ""},
		{"never *.cloudfront.net", 3, []string{"d1.cloudfront.net", "d2.cloudfront.net", "d3.cloudfront.net"},
			[]string{"d1.cloudfront.net", "d2.cloudfront.net", "d3.cloudfront.net"}, ""},
		{"deepest parent with enough children", 3, []string{"a.cdn.example.com", "b.cdn.example.com", "c.cdn.example.com", "www.example.com"},
			[]string{"*.cdn.example.com", "www.example.com"}, ""},
		{"children are distinct labels, at any depth", 3, []string{"a.example.com", "x.b.example.com", "y.c.example.com"}, []string{"*.example.com"}, ""},
		{"a public suffix below poisons the domain", 3, []string{"bucket.s3.amazonaws.com", "ec2.amazonaws.com", "sts.amazonaws.com", "iam.amazonaws.com"},
			[]string{"ec2.amazonaws.com", "iam.amazonaws.com", "bucket.s3.amazonaws.com", "sts.amazonaws.com"}, ""},
		{"poisoned after folding: never proposed, reported", 3,
			[]string{"ec2.amazonaws.com", "sts.amazonaws.com", "iam.amazonaws.com", "kms.amazonaws.com", "bucket.s3.amazonaws.com"},
			[]string{"ec2.amazonaws.com", "iam.amazonaws.com", "bucket.s3.amazonaws.com", "sts.amazonaws.com"},
			"names under amazonaws.com on port 443, counted before the public suffix s3.amazonaws.com showed below it, are not proposed"},
		{"wildcard PSL rule *.kawasaki.jp", 3, []string{"a.foo.kawasaki.jp", "b.foo.kawasaki.jp", "c.foo.kawasaki.jp"},
			[]string{"a.foo.kawasaki.jp", "b.foo.kawasaki.jp", "c.foo.kawasaki.jp"}, ""},
		{"PSL exception !city.kawasaki.jp", 3, []string{"a.city.kawasaki.jp", "b.city.kawasaki.jp", "c.city.kawasaki.jp"}, []string{"*.city.kawasaki.jp"}, ""},
		{"punycode TLD", 3, []string{"a.example.xn--p1ai", "b.example.xn--p1ai", "c.example.xn--p1ai"}, []string{"*.example.xn--p1ai"}, ""},
		{"a public suffix itself", 3, []string{"github.io", "co.uk"}, []string{"github.io", "co.uk"}, ""},
		{"unknown TLD: the last label is the suffix", 3, []string{"a.corp.internal", "b.corp.internal", "c.corp.internal"}, []string{"*.corp.internal"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, findings := foldPatterns(t, tt.fold, tt.names...)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("patterns (-want +got):\n%s", diff)
			}
			if tt.lost != "" && !strings.Contains(findings, tt.lost) {
				t.Errorf("findings lack %q:\n%s", tt.lost, findings)
			}
			for _, p := range got {
				if strings.HasPrefix(p, "*.") && !foldable(p[2:]) {
					t.Errorf("%s spans a public suffix", p)
				}
			}
		})
	}
}

func TestParseTS(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"2026-11-25T10:00:00Z", "2026-11-25T10:00:00.123456789Z", "2026-11-25T11:30:00.5+01:30",
		"2026-11-25T05:00:00-05:00", "2026-12-31T23:59:59.999999999Z", "2024-02-29T00:00:00Z"} {
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := parseTS([]byte(s)); !ok || got != want.UnixNano() {
			t.Errorf("parseTS(%q) = %v %v, want %v", s, time.Unix(0, got).UTC(), ok, want.UTC())
		}
	}
	for _, s := range []string{"", "yesterday", "2026-02-30T00:00:00Z", "2026-11-25T10:00:00", "2026-11-25T25:00:00Z", "2026-11-25T10:00:00.Z"} {
		if _, ok := parseTS([]byte(s)); ok {
			t.Errorf("parseTS(%q) accepted", s)
		}
	}
}

// TestLearnSince: --since keeps the lines newer than now minus the
// duration; lines without a readable ts are then skipped too.
func TestLearnSince(t *testing.T) {
	var b bytes.Buffer
	aw := newAccessWriter(&b, time.Minute) // 10:01, 10:02, ...
	for _, h := range []string{"old.example.com", "mid.example.org", "new.example.net"} {
		aw.write(genReq{listener: policy.ListenerConnect, client: genWeb, host: h, port: 443, ip: "93.184.215.1",
			verdict: policy.Report, reason: policy.ReasonNotAllowed})
	}
	b.WriteString(`{"ts":"soon","host":"nots.example","port":443,"decision":"allow","reason":""}` + "\n")
	now := func() time.Time { return genStart.Add(3*time.Minute + 30*time.Second) }
	lr := learnFrom(t, b.Bytes(), LearnOptions{Since: 2 * time.Minute, Now: now, Fold: 0}, false)
	var got []string
	for _, e := range lr.collect().entries {
		got = append(got, e.pattern)
	}
	if diff := cmp.Diff([]string{"new.example.net", "mid.example.org"}, got); diff != "" {
		t.Errorf("--since 2m at 10:03:30 (-want +got):\n%s", diff)
	}
	if lr.Counts.Old != 2 || lr.Counts.Access != 2 {
		t.Errorf("counts %+v, want 2 old (one without a readable ts) and 2 used", lr.Counts)
	}
}

// With log.tunnel_open a tunnel writes two lines; learn counts the tunnel
// once, from its close line.
func TestLearnCountsTunnelsOnce(t *testing.T) {
	var b bytes.Buffer
	aw := newAccessWriter(&b, time.Minute)
	aw.log.SetTunnelOpen(true)
	for range 3 {
		rec := aw.log.NewRecord(policy.ListenerConnect, netip.MustParseAddr(genWeb))
		rec.Host, rec.Port = "tunnel.example.com", 443
		rec.Decision = policy.Decision{Verdict: policy.Report, Reason: policy.ReasonNotAllowed, Host: rec.Host, Port: 443}
		rec.Opened()
		rec.Finish()
	}
	if n := strings.Count(b.String(), `"event":"open"`); n != 3 {
		t.Fatalf("%d open lines in the log, want 3:\n%s", n, b.String())
	}
	lr := learnFrom(t, b.Bytes(), LearnOptions{Fold: 0}, false)
	if lr.Counts.Access != 3 || lr.Counts.Other != 3 {
		t.Errorf("counts %+v, want 3 used and the 3 open lines apart", lr.Counts)
	}
	entries := lr.collect().entries
	if len(entries) != 1 || entries[0].pattern != "tunnel.example.com" || len(entries[0].ports) != 1 || entries[0].ports[0].count != 3 {
		t.Errorf("entries %+v, want tunnel.example.com counted 3 times", entries)
	}
}
