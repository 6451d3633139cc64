package testenv

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds for HAProxy.
const (
	// HAProxyReadyTimeout bounds the wait until HAProxy accepts on every
	// bind address.
	HAProxyReadyTimeout = 10 * time.Second
	// HAProxyStopTimeout is how long HAProxy gets after SIGTERM before
	// SIGKILL.
	HAProxyStopTimeout = 10 * time.Second
)

// HAProxy is a real HAProxy (the Debian package, never its system service)
// run in the foreground by a test, with its output (session logs and
// server state changes) kept line by line with the time each line arrived.
type HAProxy struct {
	ns      *Netns
	config  string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	out     lineLog
}

// StartHAProxy writes config to a file, runs `haproxy -db -f FILE` inside
// ns (nil: the host namespace) with TZ=UTC, and returns once HAProxy
// accepts TCP connections on every "bind" address of config. On cleanup it
// is stopped by PID (SIGTERM, then SIGKILL after HAProxyStopTimeout), and
// its events are logged if the test failed. HAProxy is installed by
// scripts/setup.sh.
func StartHAProxy(t testing.TB, ns *Netns, config string) *HAProxy {
	t.Helper()
	bin := haproxyBinary(t)
	binds := haproxyBinds(config)
	if len(binds) == 0 {
		t.Fatalf("haproxy config has no bind address to wait for:\n%s", config)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &HAProxy{ns: ns, config: config, done: make(chan struct{})}
	h.cmd = ns.Command(context.Background(), bin, "-db", "-f", path)
	h.cmd.Env = append(h.cmd.Env, "TZ=UTC") // its session log's dates, see Sessions
	h.cmd.Stdout = &h.out
	h.cmd.Stderr = &h.out
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	go func() {
		h.waitErr = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(HAProxyStopTimeout)
		defer timer.Stop()
		select {
		case <-h.done:
		case <-timer.C:
			h.cmd.Process.Kill()
			<-h.done
		}
		if t.Failed() {
			t.Logf("haproxy (pid %d) events:\n%s", h.PID(), h.Events())
		}
	})
	h.waitListening(t, binds)
	return h
}

func haproxyBinary(t testing.TB) string {
	t.Helper()
	if bin, err := exec.LookPath("haproxy"); err == nil {
		return bin
	}
	const debian = "/usr/sbin/haproxy" // outside a minimal PATH
	if _, err := os.Stat(debian); err != nil {
		t.Fatalf("haproxy not found (run scripts/setup.sh): %v", err)
	}
	return debian
}

// haproxyBinds returns the TCP addresses of config's "bind" lines.
func haproxyBinds(config string) []string {
	var out []string
	for _, line := range strings.Split(config, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "bind" {
			continue
		}
		if _, _, err := net.SplitHostPort(f[1]); err == nil {
			out = append(out, f[1])
		}
	}
	return out
}

func (h *HAProxy) waitListening(t testing.TB, binds []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), HAProxyReadyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, addr := range binds {
		for {
			c, err := h.ns.DialContext(ctx, "tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-tick.C:
			case <-h.done:
				t.Fatalf("haproxy exited (%v):\n%s\nconfig:\n%s", h.waitErr, h.Events(), h.config)
			case <-ctx.Done():
				t.Fatalf("haproxy not listening on %s within %v: %v", addr, HAProxyReadyTimeout, err)
			}
		}
	}
}

// PID returns HAProxy's process ID.
func (h *HAProxy) PID() int { return h.cmd.Process.Pid }

// lineLog collects written bytes as lines stamped with their arrival time.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []stampedLine
}

type stampedLine struct {
	at   time.Time
	text string
}

func (l *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, stampedLine{at: now, text: string(l.partial[:i])})
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *lineLog) snapshot() []stampedLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]stampedLine(nil), l.lines...)
}

// HAProxySession is one session log line (option tcplog, logged to stdout
// with "log stdout format raw").
type HAProxySession struct {
	Accepted   time.Time // when HAProxy accepted the client connection (%t)
	ClientPort int
	Backend    string
	Server     string // "<NOSRV>" when none was picked
	Line       string
}

// Sessions parses the session log lines so far. The tcplog format is
// "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq";
// a session's line comes when it ends.
func (h *HAProxy) Sessions() []HAProxySession {
	var out []HAProxySession
	for _, l := range h.out.snapshot() {
		f := strings.Fields(l.text)
		if len(f) < 9 || !strings.HasPrefix(f[1], "[") {
			continue
		}
		_, port, err := net.SplitHostPort(f[0])
		if err != nil {
			continue
		}
		p, _ := strconv.Atoi(port)
		backend, server, ok := strings.Cut(f[3], "/")
		if !ok {
			continue
		}
		// The accept date is in HAProxy's local time: UTC.
		accepted, err := time.ParseInLocation("[02/Jan/2006:15:04:05.000]", f[1], time.UTC)
		if err != nil {
			continue
		}
		out = append(out, HAProxySession{Accepted: accepted, ClientPort: p, Backend: backend, Server: server, Line: l.text})
	}
	return out
}

// Events returns HAProxy's output without the session log lines: start-up
// messages and server state changes, each with its arrival time.
func (h *HAProxy) Events() string {
	sess := map[string]bool{}
	for _, s := range h.Sessions() {
		sess[s.Line] = true
	}
	var b strings.Builder
	n := 0
	for _, l := range h.out.snapshot() {
		if sess[l.text] {
			n++
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", l.at.Format("15:04:05.000"), l.text)
	}
	fmt.Fprintf(&b, "(%d session log lines)", n)
	return b.String()
}

// HAProxyStat is one server's row of HAProxy's stats CSV.
type HAProxyStat struct {
	Backend, Server string
	Status          string // UP, DOWN, "UP 1/2", ...
	Sessions        int    // stot: sessions ever sent to the server
	Check           string // last check's status (L7OK, L7STS, L4CON, ...)
}

// Stats reads the servers' rows of the stats page that a "stats enable"
// frontend serves at statsAddr ("stats uri /").
func (h *HAProxy) Stats(t testing.TB, statsAddr string) []HAProxyStat {
	t.Helper()
	tr := &http.Transport{DialContext: h.ns.DialContext, Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + statsAddr + "/;csv;norefresh")
	if err != nil {
		t.Fatalf("HAProxy stats: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("HAProxy stats: %s, %v", resp.Status, err)
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(body), "# "))).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("HAProxy stats CSV: %v\n%s", err, body)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, name := range []string{"pxname", "svname", "status", "stot", "check_status"} {
		if _, ok := col[name]; !ok {
			t.Fatalf("HAProxy stats CSV has no column %q: %v", name, rows[0])
		}
	}
	var out []HAProxyStat
	for _, r := range rows[1:] {
		if len(r) < len(rows[0]) || r[col["svname"]] == "FRONTEND" || r[col["svname"]] == "BACKEND" {
			continue
		}
		n, _ := strconv.Atoi(r[col["stot"]])
		out = append(out, HAProxyStat{Backend: r[col["pxname"]], Server: r[col["svname"]], Status: r[col["status"]],
			Sessions: n, Check: r[col["check_status"]]})
	}
	return out
}
