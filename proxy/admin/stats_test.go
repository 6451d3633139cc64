package admin

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// record returns a finished-looking record (never logged: the nil logger).
func record(v policy.Verdict, reason policy.Reason, host string) *accesslog.Record {
	var l *accesslog.Logger
	r := l.NewRecord(policy.ListenerConnect, netip.MustParseAddr("10.0.1.7"))
	r.Host, r.Port = host, 443
	r.Decision = policy.Decision{Verdict: v, Reason: reason}
	return r
}

// A skewed stream (Zipf, 100,000 distinct hosts) gives the true top 10 in
// order: the sketch's error is far below the gaps between the leaders.
func TestTopKFindsTheLeaders(t *testing.T) {
	t.Parallel()
	tk := NewTopK(10)
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.5, 1, 100_000-1)
	exact := map[string]uint64{}
	for range 500_000 {
		h := fmt.Sprintf("host-%d.example", zipf.Uint64())
		tk.Add(h)
		exact[h]++
	}
	got := tk.Top(10)
	if len(got) != 10 {
		t.Fatalf("Top(10) = %d entries", len(got))
	}
	for i, e := range got {
		want := fmt.Sprintf("host-%d.example", i)
		if e.Name != want {
			t.Errorf("#%d = %s (%d), want %s (%d)", i, e.Name, e.Count, want, exact[want])
		}
		// Count-min never underestimates, and here overestimates by less
		// than 1% of the stream.
		if e.Count < exact[e.Name] || e.Count > exact[e.Name]+5000 {
			t.Errorf("%s: estimate %d, exact %d", e.Name, e.Count, exact[e.Name])
		}
	}
}

// Few hosts are counted exactly and listed however many are asked for.
func TestTopKSmall(t *testing.T) {
	t.Parallel()
	tk := NewTopK(3)
	for i, h := range []string{"a.test", "b.test", "c.test", "d.test"} {
		for range 10 * (i + 1) {
			tk.Add(h)
		}
	}
	want := []Entry{{"d.test", 40}, {"c.test", 30}, {"b.test", 20}}
	if diff := cmp.Diff(want, tk.Top(3)); diff != "" {
		t.Errorf("Top(3) (-want +got):\n%s", diff)
	}
	if got := NewTopK(3).Top(3); len(got) != 0 {
		t.Errorf("empty sketch: %v", got)
	}
}

// Concurrent adders lose no count of a host that is tracked (run with -race).
func TestTopKConcurrent(t *testing.T) {
	t.Parallel()
	tk := NewTopK(5)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20_000 {
				tk.Add("hot.test")
				tk.Add(fmt.Sprintf("cold-%d-%d.test", g, i))
			}
		})
	}
	wg.Wait()
	top := tk.Top(1)
	if len(top) != 1 || top[0].Name != "hot.test" || top[0].Count < 80_000 {
		t.Errorf("Top(1) = %v, want hot.test with at least 80000", top)
	}
}

// A hostile, long host is kept cut to maxText bytes at a rune boundary.
func TestTopKClipsLongNames(t *testing.T) {
	t.Parallel()
	tk := NewTopK(1)
	long := strings.Repeat("é", 200) // 400 bytes
	tk.Add(long)
	got := tk.Top(1)[0].Name
	if !strings.HasSuffix(got, "…") || len(got) > maxText+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("clipped name %q (%d bytes)", got, len(got))
	}
}

// The ring keeps the newest RecentDenials denials and reports, newest
// first, with the record's fields; allowed requests never enter it.
func TestStatsRing(t *testing.T) {
	t.Parallel()
	s := NewStats(nil)
	if got := s.Denials(10); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	for i := range RecentDenials + 20 {
		r := record(policy.Deny, policy.ReasonNotAllowed, fmt.Sprintf("d%d.test", i))
		if i%2 == 1 {
			r = record(policy.Report, policy.ReasonNotAllowed, fmt.Sprintf("d%d.test", i))
		}
		r.User, r.SNI, r.Status = "alice", "sni.test", 403
		r.Decision.Rule, r.Decision.Group = "", "web"
		s.Observe(r)
		s.Observe(record(policy.Allow, "", "ok.test"))
	}
	r := record(policy.Allow, "", "late.test")
	r.Deny(policy.ReasonSNIMismatch) // a denial after the policy allowed
	r.Decision.Rule = "github"
	s.Observe(r)

	got := s.Denials(1000)
	if len(got) != RecentDenials {
		t.Fatalf("%d denials kept, want %d", len(got), RecentDenials)
	}
	first := got[0]
	first.Time = time.Time{}
	want := Denial{Listener: "connect", Client: "10.0.1.7", Host: "late.test", Port: 443, Decision: "deny",
		Rule: "github", Reason: "sni_mismatch"}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("newest (-want +got):\n%s", diff)
	}
	if got[1].Host != fmt.Sprintf("d%d.test", RecentDenials+19) || got[1].Decision != "report" ||
		got[1].User != "alice" || got[1].SNI != "sni.test" || got[1].Group != "web" || got[1].Status != 403 {
		t.Errorf("second newest: %+v", got[1])
	}
	if last := got[len(got)-1]; last.Host != "d21.test" {
		t.Errorf("oldest kept: %s, want d21.test", last.Host)
	}
	for _, d := range got {
		if d.Host == "ok.test" {
			t.Fatal("an allowed request is in the denials")
		}
	}
	if n := len(s.Denials(3)); n != 3 {
		t.Errorf("Denials(3): %d", n)
	}
	if top := s.TopAllowed(); len(top) != 1 || top[0] != (Entry{"ok.test", RecentDenials + 20}) {
		t.Errorf("TopAllowed = %v", top)
	}
	if top := s.TopDenied(); len(top) != TopHosts {
		t.Errorf("TopDenied = %v", top)
	}
}

// Wire text in a ring slot is cut to maxText bytes, marked.
func TestStatsRingClips(t *testing.T) {
	t.Parallel()
	s := NewStats(nil)
	r := record(policy.Deny, policy.ReasonBadRequest, strings.Repeat("h", 1000))
	r.User = strings.Repeat("u", 300)
	s.Observe(r)
	d := s.Denials(1)[0]
	if d.Host != strings.Repeat("h", maxText)+"…" || d.User != strings.Repeat("u", maxText)+"…" {
		t.Errorf("clipped: host %d bytes, user %d bytes", len(d.Host), len(d.User))
	}
}

// Observing allocates nothing, allowed or denied.
func TestStatsObserveAllocatesNothing(t *testing.T) {
	s := NewStats(nil)
	allowed := record(policy.Allow, "", "api.example.com")
	denied := record(policy.Deny, policy.ReasonNotAllowed, "evil.example")
	denied.User = "bob"
	for name, r := range map[string]*accesslog.Record{"allowed": allowed, "denied": denied} {
		s.Observe(r) // the host is a candidate from here on
		if n := testing.AllocsPerRun(1000, func() { s.Observe(r) }); n != 0 {
			t.Errorf("%s: %v allocations per Observe", name, n)
		}
	}
}

// A million distinct hosts, allowed and denied, leave memory where it was:
// the sketches and the ring are fixed-size.
func TestStatsMemoryFlatWithAMillionHosts(t *testing.T) {
	s := NewStats(nil)
	hosts := make([]string, 1000) // reused names: the test's own garbage stays out of the heap figure
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	feed := func(n int) {
		allowed := record(policy.Allow, "", "")
		denied := record(policy.Deny, policy.ReasonNotAllowed, "")
		var b []byte
		for i := range n {
			b = append(strconv.AppendInt(append(b[:0], 'h'), int64(i), 10), ".distinct.example"...)
			h := string(b)
			hosts[i%len(hosts)] = h
			allowed.Host, denied.Host = h, h
			s.Observe(allowed)
			if i%4 == 0 {
				s.Observe(denied)
			}
		}
	}
	feed(10_000) // warm up: candidate sets full, ring full
	before := heap()
	feed(1_000_000)
	after := heap()
	if after > before+256<<10 {
		t.Errorf("heap grew from %d to %d bytes over a million distinct hosts", before, after)
	}
	if n := len(s.Denials(RecentDenials)); n != RecentDenials {
		t.Errorf("ring holds %d", n)
	}
	if n := len(s.TopAllowed()); n != TopHosts {
		t.Errorf("TopAllowed holds %d", n)
	}
	runtime.KeepAlive(hosts)
}

// The recent counts are the growth since the newest sample at least Window
// old; before egressd has run that long, since the first sample.
func TestStatsRequestWindow(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := accesslog.NewMetrics(reg)
	l := accesslog.NewLogger(nil, m)
	s := NewStats(reg)
	l.SetObserver(s)
	finish := func(n int, v policy.Verdict, reason policy.Reason) {
		for range n {
			r := l.NewRecord(policy.ListenerConnect, netip.MustParseAddr("10.0.1.7"))
			r.Host, r.Port = "a.test", 443
			r.Decision = policy.Decision{Verdict: v, Reason: reason}
			r.Finish()
		}
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	deny := RequestKey{"deny", "not_allowed"}
	allow := RequestKey{"allow", ""}

	_, recent, span := s.RequestCounts(t0)
	if span != 0 || len(recent) != 0 {
		t.Errorf("no sample, nothing counted: %v %v", recent, span)
	}
	finish(3, policy.Deny, policy.ReasonNotAllowed) // before the first sample
	s.Sample(t0)
	finish(2, policy.Allow, "")
	total, recent, span := s.RequestCounts(t0.Add(time.Minute))
	if total[deny] != 3 || total[allow] != 2 || recent[deny] != 0 || recent[allow] != 2 || span != time.Minute {
		t.Errorf("after 1m: total %v recent %v span %v", total, recent, span)
	}
	// Samples every SampleEvery for 7 minutes, one denial each.
	now := t0
	for range int(7 * time.Minute / SampleEvery) {
		now = now.Add(SampleEvery)
		finish(1, policy.Deny, policy.ReasonNotAllowed)
		s.Sample(now)
	}
	total, recent, span = s.RequestCounts(now)
	if span != Window {
		t.Errorf("span %v, want %v", span, Window)
	}
	if want := float64(Window / SampleEvery); recent[deny] != want || recent[allow] != 0 {
		t.Errorf("recent %v, want %v denials and no allows", recent, want)
	}
	if total[deny] != 3+42 || total[allow] != 2 {
		t.Errorf("total %v", total)
	}
	if n := len(s.samples); n > int(Window/SampleEvery)+1 {
		t.Errorf("%d samples kept", n)
	}
}

func BenchmarkStatsObserve(b *testing.B) {
	hosts := make([]string, 1000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d.example.com", i%50)
	}
	for _, tc := range []struct {
		name string
		v    policy.Verdict
	}{{"allowed", policy.Allow}, {"denied", policy.Deny}} {
		b.Run(tc.name, func(b *testing.B) {
			s := NewStats(nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := record(tc.v, policy.ReasonNotAllowed, "")
				i := 0
				for pb.Next() {
					r.Host = hosts[i%len(hosts)]
					i++
					s.Observe(r)
				}
			})
		})
	}
}
