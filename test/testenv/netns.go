package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace created for one test. Its loopback is up
// (127.0.0.0/8 and ::1) and carries the extra addresses given to
// [NewNetns]. Nothing else is reachable from inside it. A nil *Netns means
// the host namespace in every method.
type Netns struct {
	// Name is the namespace name as `ip netns` knows it.
	Name string
}

// cmdTimeout bounds every helper command (ip, curl).
const cmdTimeout = 30 * time.Second

// NewNetns creates a namespace named egressd-test-<random>, brings up its
// loopback and adds addrs (prefixes such as "10.0.0.5/32"; a bare address
// gets /32 or /128) to it. The namespace is deleted on cleanup.
func NewNetns(t testing.TB, addrs ...string) *Netns {
	t.Helper()
	ipPath := lookTool(t, "ip")
	var b [4]byte
	rand.Read(b[:])
	n := &Netns{Name: "egressd-test-" + hex.EncodeToString(b[:])}
	runTool(t, ipPath, "netns", "add", n.Name)
	t.Cleanup(func() {
		if out, err := exec.Command(ipPath, "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	runTool(t, ipPath, "-n", n.Name, "link", "set", "lo", "up")
	for _, a := range addrs {
		if !strings.Contains(a, "/") {
			if strings.Contains(a, ":") {
				a += "/128"
			} else {
				a += "/32"
			}
		}
		args := []string{"-n", n.Name, "addr", "add", a, "dev", "lo"}
		if strings.Contains(a, ":") {
			args = []string{"-n", n.Name, "-6", "addr", "add", a, "dev", "lo", "nodad"}
		}
		runTool(t, ipPath, args...)
	}
	return n
}

// lookTool finds a required tool or fails the test: tests never skip
// because a tool is missing (scripts/setup.sh installs them).
func lookTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
			if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
				return filepath.Join(dir, name)
			}
		}
		t.Fatalf("%s not found (run scripts/setup.sh): %v", name, err)
	}
	return p
}

func runTool(t testing.TB, path string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", filepath.Base(path), strings.Join(args, " "), err, out)
	}
}

// Command returns a command that runs name inside the namespace (through
// `ip netns exec`), or directly for a nil *Netns. Its environment is
// minimal: PATH only, so no *_PROXY variable leaks in. The returned command
// keeps ip netns exec's PID: ip execs the program in place.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if n == nil {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		ipPath, err := exec.LookPath("ip")
		if err != nil {
			ipPath = "/usr/sbin/ip"
		}
		cmd = exec.CommandContext(ctx, ipPath, append([]string{"netns", "exec", n.Name, name}, args...)...)
	}
	cmd.Env = minimalEnv()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// minimalEnv is PATH (with the sbin directories) and nothing else.
func minimalEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			path += ":" + d
		}
	}
	return []string{"PATH=" + path}
}

// inNetns runs fn on a fresh OS thread that has joined the namespace. The
// thread is never handed back to the Go scheduler: the goroutine exits
// while still locked, so the runtime destroys the thread. Sockets created
// by fn stay in the namespace for their whole life.
func (n *Netns) inNetns(fn func() error) error {
	if n == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: see above.
		f, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", n.Name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Do runs fn inside the namespace (in the host's for nil), on an OS thread
// that joined it and is discarded afterwards: sockets fn creates stay in
// the namespace, and reads of /proc/sys/net see the namespace's settings.
// Use it for listeners and dialers the other helpers do not build, such
// as a listener with socket options of its own.
func (n *Netns) Do(fn func() error) error { return n.inNetns(fn) }

// Listen is net.Listen inside the namespace (or the host for nil).
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.inNetns(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the namespace (or the host for nil).
func (n *Netns) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.inNetns(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// DialContext dials from inside the namespace (or the host for nil). Use
// IP addresses: names are not resolved inside the namespace. It fits
// http.Transport.DialContext.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.inNetns(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// DialFromContext is DialContext from the local IP from (an address of the
// namespace's loopback), for tests where the client's address matters.
func (n *Netns) DialFromContext(ctx context.Context, network, from, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.inNetns(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// FreeAddr returns "ip:port" with a TCP port that was free on ip a moment
// ago, inside the namespace (or the host for nil). egressd cannot report
// the port it got for ":0", so the tests pick ports this way.
//
// The port is drawn at random below the kernel's ephemeral range, not
// from ":0": the kernel hands ":0" and every outgoing connection's source
// port from that range, so under parallel suites opening thousands of
// connections a just-freed ephemeral port was often taken again before
// egressd bound it ("address already in use"). Below the range only
// another test's explicit bind can collide, and a random draw from
// thousands of ports makes that rare; a collision shows up as a failed
// start, not a wrong result.
//
// An address is never handed out twice in one test process: a config
// whose listen.http and listen.admin collide does not start.
func (n *Netns) FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	lo, hi := belowEphemeral(n)
	for range 1000 {
		port := lo + mrand.IntN(hi-lo+1)
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		handedOutMu.Lock()
		_, dup := handedOut[addr]
		handedOutMu.Unlock()
		if dup {
			continue
		}
		ln, err := n.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		handedOutMu.Lock()
		_, dup = handedOut[addr]
		handedOut[addr] = struct{}{}
		handedOutMu.Unlock()
		if !dup {
			return addr
		}
	}
	t.Fatalf("no free port on %s in %d-%d", ip, lo, hi)
	return ""
}

// belowEphemeral is the port range FreeAddr draws from: from 10000 up to
// just below the namespace's ip_local_port_range (32768-60999 by default,
// so 10000-32767).
func belowEphemeral(n *Netns) (lo, hi int) {
	lo, hi = 10000, 32767
	var b []byte
	n.inNetns(func() (err error) {
		b, err = os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		return err
	})
	if f := strings.Fields(string(b)); len(f) == 2 {
		if first, err := strconv.Atoi(f[0]); err == nil && first-1 > lo+1000 {
			hi = first - 1
		}
	}
	return lo, hi
}

// handedOut is every address FreeAddr returned in this process.
var (
	handedOutMu sync.Mutex
	handedOut   = map[string]struct{}{}
)

// FreeAddr is (*Netns)(nil).FreeAddr: a free TCP address on ip in the host
// namespace.
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	return (*Netns)(nil).FreeAddr(t, ip)
}

// Run runs name with args inside the namespace (or the host for nil),
// bounded by a timeout, and returns its output and exit code (-1 when it
// could not run or was killed).
func (n *Netns) Run(t testing.TB, name string, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := n.Command(ctx, name, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	exit = cmd.ProcessState.ExitCode()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return out.String(), errb.String(), exit
}

// MustRun is Run that fails the test unless name exits 0; it returns
// stdout.
func (n *Netns) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	stdout, stderr, exit := n.Run(t, name, args...)
	if exit != 0 {
		t.Fatalf("%s %s: exit %d: %s%s", name, strings.Join(args, " "), exit, stderr, stdout)
	}
	return stdout
}

// Sysctl sets a network sysctl of the namespace, such as
// "net.ipv4.ip_forward" (only net.* keys are per namespace). A nil *Netns
// fails the test: the host's settings are never touched.
func (n *Netns) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if n == nil || !strings.HasPrefix(key, "net.") {
		t.Fatalf("Sysctl %s: only net.* keys of a namespace of the test's own", key)
	}
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, n.Name, err)
	}
}

// SetResolvConf writes /etc/netns/NAME/resolv.conf, which `ip netns exec`
// bind-mounts over /etc/resolv.conf for the programs it starts (egressd's
// system resolver path reads it). Calling it again rewrites the file in
// place: a bind mount pins the inode, so a program already running sees the
// new contents (a rename would not reach it). The directory is removed on
// cleanup. A nil *Netns fails the test: the host's file is never touched.
func (n *Netns) SetResolvConf(t testing.TB, contents string) {
	t.Helper()
	if n == nil {
		t.Fatal("SetResolvConf needs a namespace of the test's own")
	}
	dir := filepath.Join("/etc/netns", n.Name)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("resolv.conf: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(contents), 0o644); err != nil {
		t.Fatalf("resolv.conf: %v", err)
	}
}

// ServeConns accepts on ln and runs handle on each connection, on a
// goroutine of its own, until the test ends; then it closes ln and waits
// for every handle to return (handle closes its connection).
func ServeConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
}
