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
	f := newLBFarm(t, proxyProtocol)
	f.checkClientAddress(t)

	load := f.startLoad(t, loadWorkers)
	f.waitServed(t, 10)
	const victim = 1
	p := f.inst[victim]
	linesAtTerm := len(p.AccessLines())

	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	tDown := f.waitServerDown(t, victim, 10*time.Second)
	atDown := f.sessionCounts(t)
	if d := tDown.Sub(t0); d >= farmDrainDelay {
		t.Errorf("HAProxy took the draining instance out %v after SIGTERM, not before its listeners close (drain_delay %v)", d, farmDrainDelay)
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

	if fs := failures(results); len(fs) > 0 {
		t.Errorf("%d of %d requests failed during the drain:\n%s", len(fs), len(results), failureList(results, 20))
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
		"%d requests finished on it after SIGTERM; HAProxy sessions per instance at the drain %v, at the end %v",
		farmServer(victim), tDown.Sub(t0).Round(time.Millisecond), farmCheckInter, farmCheckFall,
		tExit.Sub(t0).Round(time.Millisecond), farmDrainDelay, linesAtExit[victim]-linesAtTerm, atDown, atEnd)
	t.Logf("load: %s", loadSummary(results))
	f.checkLoggedClients(t)
}

// checkClientAddress sends one request from a client address of its own
// (opsIP) through each HAProxy frontend with curl: with send-proxy-v2 the
// instance that serves it logs that address, without it HAProxy's (lbIP).
func (f *lbFarm) checkClientAddress(t *testing.T) {
	t.Helper()
	want := lbIP
	if f.proxyProtocol {
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
	if f.proxyProtocol {
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
	f := newLBFarm(t, false)
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

	// A request that reached HAProxy just before it marked the server
	// down may have started a moment after the poll that saw the change:
	// allow a little slack.
	const slack = 500 * time.Millisecond
	// Each worker has one request at a time: one in flight at the kill,
	// then a few sent to the dead instance before the checks failed
	// (HAProxy retries each for about 3s).
	const maxFailures = 3 * loadWorkers
	fs := failures(results)
	lbLines := map[int]string{} // HAProxy's session log line of each failed request, by client port
	if len(fs) > maxFailures {
		t.Errorf("%d requests failed after the kill, want at most %d", len(fs), maxFailures)
	}
	for _, r := range fs {
		if r.end.Before(tKill) {
			t.Errorf("a request failed before the kill: %s", r)
		}
		if r.start.After(tDown.Add(slack)) {
			t.Errorf("a request sent %v after HAProxy took %s out failed: %s", r.start.Sub(tDown), farmServer(victim), r)
		}
		if r.port == 0 {
			t.Errorf("a request failed without a connection to HAProxy: %s", r)
			continue
		}
		s, ok := f.lb.sessionFor(t, r.port, r.start)
		if !ok {
			t.Errorf("no HAProxy session log for the failed request: %s", r)
			continue
		}
		lbLines[r.port] = s.line
		if s.server != farmServer(victim) {
			t.Errorf("a failed request was on %s, not the killed %s: %s\nHAProxy: %s", s.server, farmServer(victim), r, s.line)
		}
	}
	// HAProxy accepted no connection for the killed instance once it was
	// out. (Its session counter still grows: HAProxy retries a refused
	// connection on the same server, and counts each try.)
	for _, s := range f.lb.sessions() {
		if s.server == farmServer(victim) && s.accepted.After(tDown.Add(slack)) {
			t.Errorf("HAProxy sent a connection accepted %v after taking %s out to it: %s", s.accepted.Sub(tDown), s.server, s.line)
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
// allowed) is written to all three instances' config files by atomic
// rename and each gets SIGHUP. Not one request of the load fails, every
// instance reports the new config's hash, and new.test is then allowed
// through HAProxy by every instance.
func TestFarmPolicyRollout(t *testing.T) {
	f := newLBFarm(t, false)
	c := f.clients(t)
	f.probeEach(t, c, "deny")

	load := f.startLoad(t, loadWorkers)
	f.waitServed(t, 10)
	t0 := time.Now()
	cfgs := make([]string, len(f.inst))
	for i, p := range f.inst {
		cfgs[i] = f.config(i, true)
		replaceFile(t, p.ConfigPath, cfgs[i])
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	for i := range f.inst {
		want := fmt.Sprintf("egressd_config_info{sha256=%q} 1", sha256Hex(cfgs[i]))
		waitUntil(t, 10*time.Second, func() bool { return strings.Contains(f.admin(t, i, "/metrics"), want) },
			func() string {
				return fmt.Sprintf("%s does not report %s:\n%s", farmServer(i), want, f.inst[i].Stderr())
			})
	}
	tRolled := time.Now()
	f.probeEach(t, c, "allow")

	load.waitEachWorker(t, loadWorkers, 10, tRolled)
	results := load.Stop()
	if fs := failures(results); len(fs) > 0 {
		t.Errorf("%d of %d requests failed during the rollout:\n%s", len(fs), len(results), failureList(results, 20))
	}
	for i := range f.inst {
		m := f.admin(t, i, "/metrics")
		if !strings.Contains(m, `egressd_config_reloads_total{result="success"}`) {
			t.Errorf("%s counted no successful reload", farmServer(i))
		}
		if strings.Contains(m, `egressd_config_reloads_total{result="error"} `) &&
			!strings.Contains(m, `egressd_config_reloads_total{result="error"} 0`) {
			t.Errorf("%s counted a failed reload:\n%s", farmServer(i), f.inst[i].Stderr())
		}
	}
	t.Logf("rollout to %d instances applied within %v of the first rename", len(f.inst), tRolled.Sub(t0).Round(time.Millisecond))
	t.Logf("load: %s", loadSummary(results))
}

// probeEach requests new.test through HAProxy's HTTP frontend (CONNECT)
// until each instance has answered one, as HAProxy's session log shows,
// and checks that every probe got decision (allow or deny) and that each
// instance logged it.
func (f *lbFarm) probeEach(t *testing.T, c *farmClients, decision string) {
	t.Helper()
	const maxProbes = 60
	served := make([]int, len(f.inst))
	for n := 0; slices.Contains(served, 0); n++ {
		if n == maxProbes {
			t.Fatalf("after %d probes of new.test not every instance served one: %v", n, served)
		}
		r := f.get(c, kindConnect, "new.test", fmt.Sprintf("/probe/%s/%d", decision, n))
		if allowed := r.err == nil; allowed != (decision == "allow") {
			t.Errorf("probe of new.test, want %s: %s", decision, r)
		}
		if r.port == 0 {
			t.Fatalf("probe without a connection to HAProxy: %s", r)
		}
		s, ok := f.lb.sessionFor(t, r.port, r.start)
		if !ok {
			t.Fatalf("no HAProxy session log for probe %s", r)
		}
		for i := range f.inst {
			if s.server == farmServer(i) {
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
