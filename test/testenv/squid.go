package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SquidOptions configure a [Squid].
type SquidOptions struct {
	// DNS is the IP of the DNS server Squid resolves through, on port 53
	// (Squid takes no port): start it with [StartDNSServerAt].
	DNS string
	// User and Password, when set, are the Basic credentials Squid
	// requires (basic_ncsa_auth): 407 without them.
	User, Password string
	// Deny lists dstdomain entries Squid refuses with 403.
	Deny []string
}

// Squid is Debian's squid running as a child process of the test, on a
// port of its own with a config of its own (no system service): a real
// parent proxy for egressd's upstream_proxies.
type Squid struct {
	// Addr is Squid's "ip:port".
	Addr string

	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	out  *lockedBuffer
}

// StartSquid starts squid -N inside ns on a free port of ip and waits
// until it accepts connections. It is stopped by PID on cleanup (SIGTERM,
// then SIGKILL), and its cache log is shown if the test failed.
func StartSquid(t testing.TB, ns *Netns, ip string, o SquidOptions) *Squid {
	t.Helper()
	bin := lookTool(t, "squid")
	// Not t.TempDir: its parent directory is the test's own, mode 0700,
	// which Squid's user cannot enter.
	dir, err := os.MkdirTemp("", "egressd-squid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Squid drops to its cache_effective_user (proxy): its files must be
	// that user's.
	uid, gid := -1, -1
	if u, err := user.Lookup("proxy"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	s := &Squid{Addr: ns.FreeAddr(t, ip), dir: dir, done: make(chan struct{}), out: &lockedBuffer{}}
	var conf strings.Builder
	fmt.Fprintf(&conf, `http_port %s
pid_filename none
access_log stdio:%s/access.log
buffered_logs off
cache_log %s/cache.log
coredump_dir %s
cache deny all
pinger_enable off
hosts_file none
dns_nameservers %s
visible_hostname parent.test
shutdown_lifetime 0 seconds
`, s.Addr, dir, dir, dir, o.DNS)
	for _, d := range o.Deny {
		fmt.Fprintf(&conf, "acl denied dstdomain %s\n", d)
	}
	if len(o.Deny) > 0 {
		conf.WriteString("http_access deny denied\n")
	}
	if o.User != "" {
		hash := strings.TrimSpace(ns.MustRun(t, "openssl", "passwd", "-1", "-salt", "egressdt", o.Password))
		if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(o.User+":"+hash+"\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, `auth_param basic program /usr/lib/squid/basic_ncsa_auth %s/passwd
auth_param basic children 1
auth_param basic realm parent
acl authed proxy_auth REQUIRED
http_access allow authed
`, dir)
	} else {
		conf.WriteString("http_access allow all\n")
	}
	conf.WriteString("http_access deny all\n")
	if err := os.WriteFile(filepath.Join(dir, "squid.conf"), []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"access.log", "cache.log"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if uid >= 0 {
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	}
	os.Chmod(dir, 0o755)

	s.cmd = ns.Command(context.Background(), bin, "-N", "-f", filepath.Join(dir, "squid.conf"))
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.WaitDelay = 0
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start squid: %v", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			cache, _ := os.ReadFile(filepath.Join(dir, "cache.log"))
			t.Logf("squid (pid %d) output:\n%s\ncache.log:\n%s", s.cmd.Process.Pid, s.out.String(), cache)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := ns.DialContext(ctx, "tcp", s.Addr); err == nil {
			c.Close()
			return s
		}
		select {
		case <-tick.C:
		case <-s.done:
			cache, _ := os.ReadFile(filepath.Join(dir, "cache.log"))
			t.Fatalf("squid exited before it listened: %s\ncache.log:\n%s", s.out.String(), cache)
		case <-ctx.Done():
			t.Fatalf("squid not listening on %s within 30s: %s", s.Addr, s.out.String())
		}
	}
}

// URL returns "http://ip:port", for upstream_proxies.NAME.urls.
func (s *Squid) URL() string { return "http://" + s.Addr }

// AccessLog returns the lines of Squid's access log so far.
func (s *Squid) AccessLog() []string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "access.log"))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// WaitForLog waits up to 10 s for an access-log line containing every one
// of parts, and returns it. Squid writes a line when a request or tunnel
// ends.
func (s *Squid) WaitForLog(t testing.TB, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, l := range s.AccessLog() {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("squid: no access-log line with %q; lines:\n%s", parts, strings.Join(s.AccessLog(), "\n"))
		}
		<-tick.C
	}
}

func (s *Squid) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
		s.cmd.Process.Kill()
		<-s.done
	}
}

// lockedBuffer is a bytes.Buffer safe for a process's two output streams.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
