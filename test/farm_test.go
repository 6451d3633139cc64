package test

// The farm's behaviour behind a real load balancer: three egressd
// instances behind HAProxy (deployments/farm/haproxy.cfg.tmpl, TCP mode,
// health checks on /readyz), under continuous load from real clients that
// know HAProxy's address only. Helpers: farm_helpers_test.go.

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// TestFarmDrain: under continuous load, SIGTERM one instance. Its /readyz
// turns 503, HAProxy takes it out of both backends before its listeners
// close (timeouts.drain_delay), what it has in flight completes, it exits
// 0, and not one request of the load fails: the other two carry the
// traffic on. With send-proxy-v2 the same holds, and the instances log the
// client's own address, never HAProxy's.
func TestFarmDrain(t *testing.T) {
	for _, pp := range []bool{false, true} {
		name := "tcp"
		if pp {
			name = "send-proxy-v2"
		}
		t.Run(name, func(t *testing.T) { testFarmDrain(t, pp) })
	}
}

func testFarmDrain(t *testing.T, proxyProtocol bool) {
	f := newLBFarm(t, lbFarmOpts{proxyProtocol: proxyProtocol})
	f.checkClientAddress(t)

	load := f.startLoad(t, loadWorkers)
	f.waitServed(t, 10)
	const victim = 1
	p := f.inst[victim]
	atTerm := f.sessionCounts(t)

	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// How soon HAProxy takes it out is scheduling (checks every
	// farmCheckInter on a busy machine, seen here by polling its stats):
	// it is logged, not bounded. That it happened before the listeners
	// closed is checked by what HAProxy and the instance did: its checks
	// failed on /readyz's 503 (below), and every connection HAProxy tried
	// on it was served (further down): one tried after the listeners
	// closed is refused, which HAProxy counts and the instance never logs.
	tDown := f.waitServerDown(t, victim, 10*time.Second)
	atDown := f.sessionCounts(t)
	for _, b := range farmBackends {
		if ev := f.downEvent(t, b, victim); !strings.Contains(ev, "reason: Layer7 wrong status, code: 503") {
			t.Errorf("HAProxy took %s out of %s for another reason than /readyz's 503: %s", farmServer(victim), b, ev)
		}
	}
	if code := p.Wait(t, farmDrainDelay+farmDrain+10*time.Second); code != 0 {
		t.Errorf("drained instance exit code %d, want 0", code)
	}
	tExit := time.Now()
	linesAtExit := make([]int, len(f.inst))
	for i, q := range f.inst {
		linesAtExit[i] = len(q.AccessLines())
	}

	// The load goes on: every worker gets ten more answers through the
	// two instances left.
	load.waitEachWorker(t, loadWorkers, 10, tExit)
	results := load.Stop()
	atEnd := f.sessionCounts(t)
	f.waitIdle(t)

	if fs := failedResults(results); len(fs) > 0 {
		t.Errorf("%d of %d requests failed during the drain:\n%s", len(fs), len(results), failureList(results, 20))
	}
	// Every connection HAProxy sent the drained instance, before and
	// during the drain, was served: one allowed request each (the clients
	// never reuse a connection). It has exited, so its log is complete.
	if n := accessCount(p, map[string]any{"decision": "allow"}); n != atEnd[victim] {
		t.Errorf("the drained instance logged %d allowed requests, HAProxy sent it %d connections (a connection tried after its listeners closed is refused, counted and never served)",
			n, atEnd[victim])
	}
	if strings.Contains(p.Stderr(), "drain time over") {
		t.Errorf("the drain cut work:\n%s", p.Stderr())
	}
	// HAProxy sent the drained instance nothing once it was out; the
	// others' sessions and access logs kept growing.
	if atEnd[victim] != atDown[victim] {
		t.Errorf("HAProxy sent %s %d sessions after taking it out", farmServer(victim), atEnd[victim]-atDown[victim])
	}
	for i, q := range f.inst {
		if i == victim {
			continue
		}
		if atEnd[i] <= atDown[i] {
			t.Errorf("HAProxy sent %s no session after the drain began (%d then %d)", farmServer(i), atDown[i], atEnd[i])
		}
		// (The access log is flushed every 200ms.)
		waitUntil(t, 10*time.Second, func() bool { return len(q.AccessLines()) > linesAtExit[i] },
			func() string { return farmServer(i) + " logged no request after the drained instance exited" })
	}
	t.Logf("SIGTERM to %s: HAProxy took it out after %v (checks every %v, fall %d); it exited 0 after %v (drain_delay %v); "+
		"HAProxy sent it %d connections between SIGTERM and taking it out; sessions per instance at SIGTERM %v, "+
		"when it was out %v, at the end %v",
		farmServer(victim), tDown.Sub(t0).Round(time.Millisecond), farmCheckInter, farmCheckFall,
		tExit.Sub(t0).Round(time.Millisecond), farmDrainDelay, atDown[victim]-atTerm[victim], atTerm, atDown, atEnd)
	t.Logf("load: %s", loadSummary(results))
	f.checkLoggedClients(t)
}

// checkClientAddress sends one request from a client address of its own
// (opsIP) through each HAProxy frontend with curl: with send-proxy-v2 the
// instance that serves it logs that address, without it HAProxy's (lbIP).
func (f *lbFarm) checkClientAddress(t *testing.T) {
	t.Helper()
	want := lbIP
	if f.opts.proxyProtocol {
		want = opsIP
	}
	reqs := []struct {
		listener string
		args     []string
	}{
		{"http", []string{"-x", "http://" + f.lbHTTP, fmt.Sprintf("http://plain.test:%d/client-address", f.httpPort)}},
		{"connect", []string{"-x", "http://" + f.lbHTTP, fmt.Sprintf("https://allowed.test:%d/client-address", f.tlsPort)}},
		{"socks5", []string{"--socks5-hostname", f.lbSOCKS, fmt.Sprintf("https://allowed.test:%d/client-address", f.tlsPort)}},
	}
	for _, r := range reqs {
		args := append([]string{"-sS", "--fail", "--max-time", "20", "--cacert", f.caFile, "--interface", opsIP}, r.args...)
		if out, errOut, code := f.ns.Curl(t, args...); code != 0 {
			t.Fatalf("curl %v: exit %d\n%s%s", args, code, errOut, out)
		}
		kv := map[string]any{"listener": r.listener, "decision": "allow", "client": want}
		waitUntil(t, 10*time.Second, func() bool {
			for _, p := range f.inst {
				if accessCount(p, kv) > 0 {
					return true
				}
			}
			return false
		}, func() string { return fmt.Sprintf("no instance logged %v:\n%s", kv, f.accessDump()) })
	}
}

// checkLoggedClients checks the client address of every access line: the
// load's 127.0.0.1 (or curl's opsIP) with send-proxy-v2, HAProxy's source
// address lbIP without.
func (f *lbFarm) checkLoggedClients(t *testing.T) {
	t.Helper()
	want := []string{lbIP}
	if f.opts.proxyProtocol {
		want = []string{"127.0.0.1", opsIP}
	}
	for i, p := range f.inst {
		for _, l := range p.AccessLines() {
			if c, _ := l["client"].(string); !slices.Contains(want, c) {
				t.Errorf("%s logged client %q, want one of %v: %v", farmServer(i), c, want, l)
			}
		}
	}
}

func (f *lbFarm) accessDump() string {
	var b strings.Builder
	for i, p := range f.inst {
		fmt.Fprintf(&b, "%s:\n%s\n", farmServer(i), strings.Join(p.Stdout(), "\n"))
	}
	return b.String()
}

// TestFarmKill: under continuous load, SIGKILL one instance. Only requests
// that were on it (in flight, or sent to it before HAProxy's checks took it
// out) fail: few, all ending after the kill and all sent before HAProxy
// took it out, and HAProxy's session log puts each on the killed instance.
// Every request sent after that succeeds. The times from the kill to
// HAProxy's verdict, to the last failure and to the first success after it
// are logged; they are only checked against generous bounds.
func TestFarmKill(t *testing.T) {
	f := newLBFarm(t, lbFarmOpts{})
	load := f.startLoad(t, loadWorkers)
	f.waitServed(t, 10)
	const victim = 1
	p := f.inst[victim]

	tKill := time.Now()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tDown := f.waitServerDown(t, victim, 10*time.Second)
	atDown := f.sessionCounts(t)
	if code := p.Wait(t, 10*time.Second); code != -1 {
		t.Errorf("killed instance exit code %d, want -1 (signal)", code)
	}
	// Every worker gets ten answers sent after HAProxy took the instance
	// out; by then every request sent before has ended.
	load.waitEachWorker(t, loadWorkers, 10, tDown)
	results := load.Stop()
	atEnd := f.sessionCounts(t)
	f.waitIdle(t)

	// A request that reached HAProxy just before it marked the server
	// down may have started a moment after the poll that saw the change:
	// allow a little slack.
	const slack = 500 * time.Millisecond
	// Each worker has one request at a time: one in flight at the kill,
	// a few cut while the process died, then one sent to the dead
	// instance before the checks failed, which HAProxy retries for about
	// 3s (leastconn then counts it and sends new ones elsewhere).
	const maxFailures = 5 * loadWorkers
	// All of them fail within HAProxy's retries of the kill.
	const failWindow = 10 * time.Second
	fs := failedResults(results)
	lbLines := map[int]string{} // HAProxy's session log line of each failed request, by client port
	if len(fs) > maxFailures {
		t.Errorf("%d requests failed after the kill, want at most %d", len(fs), maxFailures)
	}
	for _, r := range fs {
		if r.end.Before(tKill) || r.end.After(tKill.Add(failWindow)) {
			t.Errorf("a request failed %v after the kill, want within [0, %v]: %s", r.end.Sub(tKill), failWindow, r)
		}
		if r.start.After(tDown.Add(slack)) {
			t.Errorf("a request sent %v after HAProxy took %s out failed: %s", r.start.Sub(tDown), farmServer(victim), r)
		}
		if r.port == 0 {
			t.Errorf("a request failed without a connection to HAProxy: %s", r)
			continue
		}
		s, ok := f.sessionFor(t, r)
		if !ok {
			t.Errorf("no HAProxy session log for the failed request: %s", r)
			continue
		}
		lbLines[r.port] = s.Line
		if s.Server != farmServer(victim) {
			t.Errorf("a failed request was on %s, not the killed %s: %s\nHAProxy: %s", s.Server, farmServer(victim), r, s.Line)
		}
	}
	// HAProxy accepted no connection for the killed instance once it was
	// out. (Its session counter still grows: HAProxy retries a refused
	// connection on the same server, and counts each try.)
	for _, s := range f.lb.Sessions() {
		if s.Server == farmServer(victim) && s.Accepted.After(tDown.Add(slack)) {
			t.Errorf("HAProxy sent a connection accepted %v after taking %s out to it: %s", s.Accepted.Sub(tDown), s.Server, s.Line)
		}
	}
	for i := range f.inst {
		if i != victim && atEnd[i] <= atDown[i] {
			t.Errorf("HAProxy sent %s no session after the kill (%d then %d)", farmServer(i), atDown[i], atEnd[i])
		}
	}

	down := tDown.Sub(tKill)
	if down > 5*time.Second {
		t.Errorf("HAProxy took the killed instance out after %v, want well under 5s (checks every %v, fall %d)", down, farmCheckInter, farmCheckFall)
	}
	t.Logf("SIGKILL to %s: HAProxy took it out of both backends after %v (checks every %v, fall %d)",
		farmServer(victim), down.Round(time.Millisecond), farmCheckInter, farmCheckFall)
	if len(fs) == 0 {
		t.Logf("no request failed")
	} else {
		var lastStart, lastEnd time.Time
		for _, r := range fs {
			if r.start.After(lastStart) {
				lastStart = r.start
			}
			if r.end.After(lastEnd) {
				lastEnd = r.end
			}
		}
		var firstOK time.Time
		for _, r := range results {
			if r.err == nil && r.start.After(lastStart) && (firstOK.IsZero() || r.end.Before(firstOK)) {
				firstOK = r.end
			}
		}
		t.Logf("%d requests failed; from the kill: the last failed request was sent after %v and failed after %v; "+
			"the first success sent after it came back after %v",
			len(fs), lastStart.Sub(tKill).Round(time.Millisecond), lastEnd.Sub(tKill).Round(time.Millisecond),
			firstOK.Sub(tKill).Round(time.Millisecond))
		for _, r := range fs {
			t.Logf("  failed: %s (sent %v, failed %v after the kill)\n    HAProxy: %s", r, r.start.Sub(tKill).Round(time.Millisecond),
				r.end.Sub(tKill).Round(time.Millisecond), lbLines[r.port])
		}
	}
	t.Logf("load: %s; HAProxy sessions per instance at the kill's detection %v, at the end %v", loadSummary(results), atDown, atEnd)
}

// TestFarmPolicyRollout: under continuous load, a policy change (new.test,
// denied by every instance, becomes allowed; the load's hosts stay
// allowed) is written to the three instances' config files by atomic
// rename, one instance after the other, each followed by SIGHUP. Not one
// request of the load fails, every instance reports the new config's hash,
// and new.test is then allowed through HAProxy by every instance.
func TestFarmPolicyRollout(t *testing.T) {
	f := newLBFarm(t, lbFarmOpts{})
	c := f.clients(t)
	f.probeEach(t, c, "deny")

	load := f.startLoad(t, loadWorkers)
	f.waitServed(t, 10)
	// One instance after the other, as each one's policy sync timer would
	// pick the change up: the load runs on through a farm where some
	// instances have the new policy and some the old.
	var applied []string
	for i, p := range f.inst {
		t0 := time.Now()
		c := f.config(t, i)
		c.Policy.Rules = append(c.Policy.Rules, testenv.Rule{Name: "rollout", Hosts: []string{"new.test"}, Ports: []int{f.tlsPort},
			AllowRanges: []string{"127.0.0.0/24"}})
		cfg := testenv.YAML(t, c)
		replaceFile(t, p.ConfigPath, cfg)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("egressd_config_info{sha256=%q} 1", sha256Hex(cfg))
		waitUntil(t, 10*time.Second, func() bool { return strings.Contains(f.admin(t, i, "/metrics"), want) },
			func() string {
				return fmt.Sprintf("%s does not report %s:\n%s", farmServer(i), want, p.Stderr())
			})
		applied = append(applied, fmt.Sprintf("%s %v", farmServer(i), time.Since(t0).Round(time.Millisecond)))
		load.waitEachWorker(t, loadWorkers, 5, time.Now())
	}
	tRolled := time.Now()
	f.probeEach(t, c, "allow")

	load.waitEachWorker(t, loadWorkers, 10, tRolled)
	results := load.Stop()
	f.waitIdle(t)
	if fs := failedResults(results); len(fs) > 0 {
		t.Errorf("%d of %d requests failed during the rollout:\n%s", len(fs), len(results), failureList(results, 20))
	}
	for i, p := range f.inst {
		m := f.admin(t, i, "/metrics")
		if n := metricValue(m, `egressd_config_reloads_total{result="success"}`); n < 1 {
			t.Errorf("%s counted %v successful reloads, want at least 1", farmServer(i), n)
		}
		if n := metricValue(m, `egressd_config_reloads_total{result="error"}`); n != 0 {
			t.Errorf("%s counted %v failed reloads:\n%s", farmServer(i), n, p.Stderr())
		}
	}
	t.Logf("rolled out one instance at a time; rename and SIGHUP to the new hash in /metrics: %s", strings.Join(applied, ", "))
	t.Logf("load: %s", loadSummary(results))
}

// probeEach requests new.test through HAProxy's HTTP frontend (CONNECT)
// until each instance has answered one, as HAProxy's session log shows,
// and checks that every probe got decision (allow or deny) and that each
// instance logged it.
func (f *lbFarm) probeEach(t *testing.T, c *farmClients, decision string) {
	t.Helper()
	const maxProbes = 200 // leastconn under load may pass an instance over a few times
	served := make([]int, len(f.inst))
	for n := 0; slices.Contains(served, 0); n++ {
		if n == maxProbes {
			t.Fatalf("after %d probes of new.test not every instance served one: %v", n, served)
		}
		r := f.get(c, loadConnect, "new.test", fmt.Sprintf("/probe/%s/%d", decision, n))
		// Go's transport turns a refused CONNECT into an error that is
		// the status text.
		denied := r.err != nil && strings.Contains(r.err.Error(), "Forbidden")
		if decision == "allow" && r.err != nil || decision == "deny" && !denied {
			t.Errorf("probe of new.test, want %s: %s", decision, r)
		}
		if r.port == 0 {
			t.Fatalf("probe without a connection to HAProxy: %s", r)
		}
		s, ok := f.sessionFor(t, r)
		if !ok {
			t.Fatalf("no HAProxy session log for probe %s", r)
		}
		for i := range f.inst {
			if s.Server == farmServer(i) {
				served[i]++
			}
		}
	}
	kv := map[string]any{"listener": "connect", "host": "new.test", "decision": decision}
	if decision == "allow" {
		kv["rule"] = "rollout"
	} else {
		kv["reason"] = "not_allowed"
	}
	for _, p := range f.inst {
		p.WaitForLog(t, testenv.Fields(kv))
	}
	t.Logf("new.test %s on every instance: probes per instance %v", decision, served)
}
