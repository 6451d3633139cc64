package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// readyz returns /readyz's status code (0 when the admin listener does not
// answer).
func (f *opsFarm) readyz() int {
	resp, err := adminGet(f.adminAddr, "/readyz")
	if err != nil {
		return 0
	}
	return resp.StatusCode
}

// listening reports whether addr accepts TCP connections.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestDrain: on SIGTERM /readyz turns 503 at once; the listeners keep
// serving for timeouts.drain_delay, then close; every request and tunnel
// in flight (slow responses on all three front ends, open tunnels) then
// completes, none fails, and egressd exits 0.
func TestDrain(t *testing.T) {
	const drainDelay = 2 * time.Second
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{DrainDelay: drainDelay, Drain: 30 * time.Second, Handshake: 5 * time.Second})

	type result struct {
		name string
		r    curlResult
	}
	const perFront = 6
	results := make(chan result, 3*perFront)
	var wg sync.WaitGroup
	launch := func(name string, args ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- result{name, runCurl(args...)}
		}()
	}
	for i := 0; i < perFront; i++ {
		launch(fmt.Sprintf("https %d", i), "-x", "http://"+f.httpAddr, "--cacert", f.caFile, "--fail",
			fmt.Sprintf("https://slow.test:%d/https-%d", f.ports.slowTLS, i))
		launch(fmt.Sprintf("http %d", i), "-x", "http://"+f.httpAddr, "--fail",
			fmt.Sprintf("http://slow.test:%d/http-%d", f.ports.slowHTTP, i))
		launch(fmt.Sprintf("socks5 %d", i), "--socks5-hostname", f.socksAddr, "--cacert", f.caFile, "--fail",
			fmt.Sprintf("https://slow.test:%d/socks-%d", f.ports.slowTLS, i))
	}
	t.Cleanup(f.slow.Release) // never leave the curls hanging on a failure
	f.slow.waitArrived(t, 3*perFront)

	var tunnels []net.Conn
	target := fmt.Sprintf("raw.test:%d", f.ports.raw)
	for i := 0; i < 6; i++ {
		var c net.Conn
		var err error
		if i%2 == 0 {
			c, err = connectTunnel(f.httpAddr, target)
		} else {
			c, err = socksTunnel(f.socksAddr, target)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echo(c, "before"); err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, c)
	}

	t0 := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool { return f.readyz() == http.StatusServiceUnavailable },
		func() string { return "/readyz did not turn 503" })
	t.Logf("/readyz 503 %v after SIGTERM", time.Since(t0))
	// Within the drain delay the listeners still serve: the load balancer
	// has not seen the 503 yet.
	if time.Since(t0) < drainDelay/2 {
		mustCurl(t, "a new request during drain_delay", f.curlFixed())
	}

	waitUntil(t, 15*time.Second, func() bool { return !listening(f.httpAddr) && !listening(f.socksAddr) },
		func() string { return "listeners still open" })
	if d := time.Since(t0); d < drainDelay {
		t.Fatalf("listeners closed %v after SIGTERM, before timeouts.drain_delay %v", d, drainDelay)
	}
	t.Logf("listeners closed %v after SIGTERM (drain_delay %v)", time.Since(t0), drainDelay)

	// The work in flight completes.
	f.slow.Release()
	wg.Wait()
	close(results)
	failed := 0
	for res := range results {
		if res.r.code != 0 || res.r.stdout != fixedBody {
			failed++
			t.Errorf("%s in flight during the drain: %s", res.name, res.r)
		}
	}
	for i, c := range tunnels {
		if err := echo(c, "after the listeners closed"); err != nil {
			failed++
			t.Errorf("tunnel %d during the drain: %v", i, err)
		}
		c.Close()
	}
	t.Logf("%d requests and %d tunnels in flight at SIGTERM, %d failed", 3*perFront, len(tunnels), failed)

	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after a drain", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(t0))
	if strings.Contains(p.Stderr(), "drain time over") {
		t.Errorf("drain cut work:\n%s", p.Stderr())
	}
	for _, l := range []string{"http", "connect", "socks5"} {
		if n := accessCount(p, map[string]any{"listener": l, "host": "slow.test", "decision": "allow"}); n != perFront {
			t.Errorf("%d access lines for %s to slow.test, want %d", n, l, perFront)
		}
	}
	if n := accessCount(p, map[string]any{"host": "raw.test", "bytes_up": len("before") + len("after the listeners closed")}); n != len(tunnels) {
		t.Errorf("%d complete tunnel lines, want %d", n, len(tunnels))
	}
}

// TestDrainSecondSignal: a second SIGTERM during a drain cuts at once.
func TestDrainSecondSignal(t *testing.T) {
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{DrainDelay: 30 * time.Second, Drain: 30 * time.Second})
	c, err := connectTunnel(f.httpAddr, fmt.Sprintf("raw.test:%d", f.ports.raw))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echo(c, "x"); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	waitUntil(t, 5*time.Second, func() bool { return f.readyz() == http.StatusServiceUnavailable },
		func() string { return "/readyz did not turn 503" })
	t1 := time.Now()
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("exited %v after the second SIGTERM (drain_delay and drain are 30s)", time.Since(t1))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("tunnel still open after egressd exited")
	}
	if !strings.Contains(p.Stderr(), "second signal") {
		t.Errorf("stderr lacks the cut:\n%s", p.Stderr())
	}
}

// policyV2 moves the allowlist: allowed.test out, other.test in.
func policyV2(o opsOpts) opsOpts {
	o.Hosts = []string{"other.test", "stable.test", "fixed.test", "slow.test", "raw.test"}
	return o
}

// checkDenied fails unless a CONNECT to host is refused not_allowed.
func (f *opsFarm) checkDenied(t *testing.T, host string) {
	t.Helper()
	r := f.curlHTTPS(host, "/denied")
	if r.code == 0 || !strings.Contains(r.stderr, "403") || !strings.Contains(r.stderr, "X-Egress-Denied: not_allowed") {
		t.Fatalf("%s should be denied: %s", host, r)
	}
}

// reloadUnderLoad runs traffic (HTTPS over established CONNECT tunnels to
// allowed.test, SOCKS5 tunnels, new connections to stable.test), applies
// the v2 policy with apply, and checks that the new decisions hold, that
// every established tunnel kept working, and that nothing failed.
func reloadUnderLoad(t *testing.T, f *opsFarm, p *testenv.Proc, o opsOpts, apply func(cfg string), trigger string) {
	t.Helper()
	mustCurl(t, "allowed.test under v1", f.curlHTTPS("allowed.test", "/v1"))
	f.checkDenied(t, "other.test")

	var https []*httpsTunnel
	for i := 0; i < 4; i++ {
		h, err := openHTTPSTunnel(f, "allowed.test")
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		https = append(https, h)
	}
	var socks []net.Conn
	for i := 0; i < 2; i++ {
		c, err := socksTunnel(f.socksAddr, fmt.Sprintf("raw.test:%d", f.ports.raw))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, c)
	}

	stop := make(chan struct{})
	counts := make([]atomic.Int64, len(https)+len(socks)+1) // the last one: new connections
	var mu sync.Mutex
	var failures []string
	fail := func(s string) {
		mu.Lock()
		failures = append(failures, s)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	loop := func(i int, step func(n int64) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := step(counts[i].Load()); err != nil {
					fail(fmt.Sprintf("load %d: %v", i, err))
					return
				}
				counts[i].Add(1)
			}
		}()
	}
	for i, h := range https {
		loop(i, func(n int64) error { return h.get(fmt.Sprintf("/t%d/%d", i, n)) })
	}
	for j, c := range socks {
		loop(len(https)+j, func(n int64) error { return echo(c, fmt.Sprintf("s%d-%d;", j, n)) })
	}
	loop(len(counts)-1, func(n int64) error {
		if r := f.curlHTTPS("stable.test", fmt.Sprintf("/new/%d", n)); r.code != 0 {
			return fmt.Errorf("new connection: %s", r)
		}
		return nil
	})
	snapshot := func() []int64 {
		s := make([]int64, len(counts))
		for i := range counts {
			s[i] = counts[i].Load()
		}
		return s
	}
	progressed := func(from []int64, by int64) func() bool {
		return func() bool {
			for i := range counts {
				if counts[i].Load() < from[i]+by {
					return false
				}
			}
			return true
		}
	}
	waitUntil(t, 20*time.Second, progressed(make([]int64, len(counts)), 2),
		func() string {
			// The SOCKS5 tunnels' access lines say how a failed one ended.
			var ls []string
			for _, l := range p.AccessLines() {
				if l["listener"] == "socks5" {
					ls = append(ls, fmt.Sprint(l))
				}
			}
			return fmt.Sprintf("load not running: %v %v\nsocks5 access lines:\n%s", snapshot(), failures, strings.Join(ls, "\n"))
		})

	cfg2 := f.config(policyV2(o))
	apply(cfg2)
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "success"}, 1)
	atReload := snapshot()

	m := f.scrape(t)
	if v := m.value(t, "egressd_config_info", map[string]string{"sha256": sha256Hex(cfg2)}); v != 1 {
		t.Errorf("egressd_config_info for the new config = %v", v)
	}
	if n := len(m.series("egressd_config_info")); n != 1 {
		t.Errorf("egressd_config_info has %d series, want 1", n)
	}
	if v := m.value(t, "egressd_config_reloads_total", map[string]string{"result": "error"}); v != 0 {
		t.Errorf("reload errors: %v", v)
	}
	if !strings.Contains(p.Stderr(), `"trigger":"`+trigger+`"`) {
		t.Errorf("no reload with trigger %q on stderr:\n%s", trigger, p.Stderr())
	}

	// New decisions take effect; established tunnels keep theirs.
	mustCurl(t, "other.test under v2", f.curlHTTPS("other.test", "/v2"))
	f.checkDenied(t, "allowed.test")
	if _, err := openHTTPSTunnel(f, "allowed.test"); err == nil {
		t.Error("a new tunnel to allowed.test opened under v2")
	}
	waitUntil(t, 20*time.Second, progressed(atReload, 3),
		func() string {
			return fmt.Sprintf("load stalled after the reload: %v -> %v, %v", atReload, snapshot(), failures)
		})
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d failures under load:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	t.Logf("load: %v requests/round trips per stream, none failed; %v of them before the reload", snapshot(), atReload)
}

// TestReloadSIGHUP: SIGHUP reloads. The config path is a symlink into a
// directory egressd does not watch, so only the signal can trigger it.
func TestReloadSIGHUP(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{}
	real := filepath.Join(t.TempDir(), "real.yaml")
	writeFile(t, real, f.config(o))
	link := filepath.Join(t.TempDir(), "egressd.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	p := f.startAt(t, link, o)
	reloadUnderLoad(t, f, p, o, func(cfg string) {
		writeFile(t, real, cfg)
		p.Signal(syscall.SIGHUP)
	}, "SIGHUP")
}

// TestReloadFileRename: a new file renamed into place is picked up.
// TestSIGHUPAtFirstConnection: a SIGHUP sent the moment egressd's proxy
// port first accepts a connection reloads; it never finds the signal's
// default action (the end of the process) in place. Ten starts.
func TestSIGHUPAtFirstConnection(t *testing.T) {
	f := newOpsFarm(t)
	path := filepath.Join(t.TempDir(), "egressd.yaml")
	writeFile(t, path, f.config(opsOpts{}))
	for i := range 10 {
		p := (&testenv.Egressd{Args: []string{"serve", "--config", path}, NoWait: true}).Start(t, f.config(opsOpts{}))
		for start := time.Now(); ; {
			if c, err := net.Dial("tcp", f.httpAddr); err == nil {
				c.Close()
				break
			}
			select {
			case <-p.Done():
				t.Fatalf("start %d: egressd exited before it listened:\n%s", i, p.Stderr())
			default:
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("start %d: egressd never listened", i)
			}
		}
		p.Signal(syscall.SIGHUP)
		waitStderr(t, p, "config reloaded")
		if code, exited := p.ExitCode(); exited {
			t.Fatalf("start %d: egressd exited (%d) after the SIGHUP", i, code)
		}
		p.Stop(t, 10*time.Second)
	}
}

func TestReloadFileRename(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{}
	p := f.start(t, o)
	reloadUnderLoad(t, f, p, o, func(cfg string) { replaceFile(t, f.configPath, cfg) }, "file change")
}

// TestReloadConfigMapSymlinkSwap: the layout kubelet gives a mounted
// ConfigMap (FILE -> ..data/FILE, ..data -> ..TIMESTAMP), updated by
// swapping the ..data symlink, is picked up.
func TestReloadConfigMapSymlinkSwap(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{}
	dir := t.TempDir()
	version := func(name, cfg string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "egressd.yaml"), cfg)
	}
	version("..2026_11_25_10_00_00.1", f.config(o))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_11_25_10_00_00.1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/egressd.yaml", filepath.Join(dir, "egressd.yaml")))
	p := f.startAt(t, filepath.Join(dir, "egressd.yaml"), o)
	reloadUnderLoad(t, f, p, o, func(cfg string) {
		version("..2026_11_25_10_05_00.2", cfg)
		must(os.Symlink("..2026_11_25_10_05_00.2", filepath.Join(dir, "..data_tmp")))
		must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
		must(os.RemoveAll(filepath.Join(dir, "..2026_11_25_10_00_00.1")))
	}, "file change")
}

// TestReloadBrokenFile: a broken file is rejected with its key and line on
// stderr and counted; the old policy keeps serving; fixing the file loads.
func TestReloadBrokenFile(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{}
	p := f.start(t, o)
	v1 := f.config(o)
	tunnel, err := openHTTPSTunnel(f, "allowed.test")
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()

	broken := f.config(func() opsOpts { b := policyV2(o); b.BrokenPort = true; return b }())
	line := 0
	for i, l := range strings.Split(broken, "\n") {
		if strings.Contains(l, "99999") {
			line = i + 1
		}
	}
	replaceFile(t, f.configPath, broken)
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "error"}, 1)
	want := fmt.Sprintf("%s:%d: policy.rules[0].ports[5]: 99999", f.configPath, line)
	if !strings.Contains(p.Stderr(), "config reload rejected") || !strings.Contains(p.Stderr(), want) {
		t.Errorf("stderr lacks the rejection with %q:\n%s", want, p.Stderr())
	}
	p.Signal(syscall.SIGHUP)
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "error"}, 2)

	m := f.scrape(t)
	if v := m.value(t, "egressd_config_reloads_total", map[string]string{"result": "success"}); v != 0 {
		t.Errorf("successful reloads: %v", v)
	}
	if v, ok := m.get("egressd_config_info", map[string]string{"sha256": sha256Hex(v1)}); !ok || v != 1 {
		t.Errorf("egressd_config_info no longer names the config in force: %v", m.series("egressd_config_info"))
	}
	mustCurl(t, "allowed.test under the old policy", f.curlHTTPS("allowed.test", "/old"))
	f.checkDenied(t, "other.test")
	if err := tunnel.get("/still-open"); err != nil {
		t.Errorf("established tunnel after a rejected reload: %v", err)
	}

	replaceFile(t, f.configPath, f.config(policyV2(o)))
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "success"}, 1)
	mustCurl(t, "other.test after the fix", f.curlHTTPS("other.test", "/fixed"))
	if err := tunnel.get("/still-open-2"); err != nil {
		t.Errorf("established tunnel after the reload: %v", err)
	}
}

// TestReloadListenerChange: a changed listener address is logged as
// needing a restart; the rest of the config applies; the old listener
// keeps serving.
func TestReloadListenerChange(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{}
	p := f.start(t, o)
	moved := policyV2(o)
	moved.HTTPAddr = testenv.FreeAddr(t, opsProxyIP)
	replaceFile(t, f.configPath, f.config(moved))
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "success"}, 1)
	stderr := p.Stderr()
	if !strings.Contains(stderr, "restart") || !strings.Contains(stderr, `"listen.http"`) {
		t.Errorf("stderr does not say listen.http needs a restart:\n%s", stderr)
	}
	mustCurl(t, "the old listener, new policy", f.curlHTTPS("other.test", "/moved"))
	if listening(moved.HTTPAddr) {
		t.Errorf("egressd listens on the new address %s without a restart", moved.HTTPAddr)
	}
}

// TestReloadTimeoutsAndLogLevel: timeouts.idle (with timeouts.connect and
// timeouts.max_tunnel) and log.level take effect on reload, without a
// "needs a restart" warning. Tunnels opened after the reload get the new
// idle timeout; a tunnel opened before keeps the one it started with.
func TestReloadTimeoutsAndLogLevel(t *testing.T) {
	f := newOpsFarm(t)
	o := opsOpts{} // timeouts.idle 5m, log.level info
	p := f.start(t, o)
	target := fmt.Sprintf("raw.test:%d", f.ports.raw)

	// At info, the complaint about a garbage SOCKS5 handshake is not logged.
	garbageSOCKS := func() {
		t.Helper()
		c, err := net.DialTimeout("tcp", f.socksAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{4, 1})
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
	}
	garbageSOCKS()
	before, err := connectTunnel(f.httpAddr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := echo(before, "a"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.Stderr(), `"level":"debug"`) {
		t.Fatalf("debug lines at log.level info:\n%s", p.Stderr())
	}

	o.Idle, o.MaxTunnel, o.LogLevel = time.Second, time.Hour, "debug"
	replaceFile(t, f.configPath, f.config(o))
	f.waitMetric(t, "egressd_config_reloads_total", map[string]string{"result": "success"}, 1)
	if stderr := p.Stderr(); strings.Contains(stderr, "restart") {
		t.Errorf("a reload of timeouts and log.level was reported as needing a restart:\n%s", stderr)
	}

	after, err := connectTunnel(f.httpAddr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if err := echo(after, "b"); err != nil {
		t.Fatal(err)
	}
	last := time.Now()
	after.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, after); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a tunnel opened after the reload was not closed by the new timeouts.idle 1s")
	}
	if d := time.Since(last); d < time.Second {
		t.Fatalf("the new tunnel closed after %v idle, before timeouts.idle 1s", d)
	}
	// The tunnel from before the reload has now been idle longer than 1s
	// and still carries bytes: it keeps timeouts.idle 5m.
	if err := echo(before, "c"); err != nil {
		t.Fatalf("the tunnel opened before the reload was cut: %v", err)
	}

	garbageSOCKS()
	waitUntil(t, 10*time.Second, func() bool { return strings.Contains(p.Stderr(), `"level":"debug"`) },
		func() string { return "no debug line after log.level was reloaded to debug:\n" + p.Stderr() })
}
