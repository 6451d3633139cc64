package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Bounds for the egressd process.
const (
	// DefaultReadyTimeout bounds the wait for a started egressd to listen.
	DefaultReadyTimeout = 15 * time.Second
	// DefaultStopTimeout is how long a stopping egressd gets after SIGTERM
	// before SIGKILL. Test configs should set timeouts.drain_delay: 0s so
	// egressd stops at once.
	DefaultStopTimeout = 10 * time.Second
	// DefaultLogTimeout bounds WaitForLog.
	DefaultLogTimeout = 10 * time.Second
	buildTimeout      = 5 * time.Minute
)

// BinaryEnv names an environment variable that, when set, points at a
// prebuilt egressd binary to use instead of building one.
const BinaryEnv = "EGRESSD_BIN"

var build struct {
	once sync.Once
	dir  string // temp dir holding the built binary; removed by Main
	bin  string
	err  error
}

// Binary returns the path of the egressd binary: $EGRESSD_BIN, or one built
// from the module's ./cmd/egressd once per test binary.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			build.bin = p
			return
		}
		build.bin, build.err = buildBinary()
	})
	if build.err != nil {
		t.Fatalf("build egressd: %v", build.err)
	}
	return build.bin
}

func buildBinary() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if root == "." || root == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", errors.New("not inside the egressd module")
	}
	dir, err := os.MkdirTemp("", "egressd-testenv-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	bin := filepath.Join(dir, "egressd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/egressd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/egressd: %w\n%s", err, out)
	}
	return bin, nil
}

// removeBuild deletes the built binary's directory.
func removeBuild() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// Egressd starts egressd processes. The zero value runs `egressd serve` in
// the host namespace.
type Egressd struct {
	// Binary is the program to run. Empty means [Binary]: the egressd
	// built from this module.
	Binary string
	// Netns, when non-nil, runs egressd inside that namespace.
	Netns *Netns
	// Args replaces the default arguments ("serve", "--config", FILE).
	// The string "{config}" in them is replaced by the config file path.
	Args []string
	// Env is added to the minimal environment (PATH only).
	Env []string
	// ReadyTimeout bounds the wait until egressd listens. Zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// NoWait skips the readiness wait (for configs meant to fail).
	NoWait bool
}

// Start runs `egressd serve --config FILE` in the host namespace with
// configYAML as FILE, and returns once it is ready. See [Egressd.Start].
func Start(t testing.TB, configYAML string) *Proc {
	t.Helper()
	return (&Egressd{}).Start(t, configYAML)
}

// Start writes configYAML to a temp file, starts egressd with it and waits
// until it is ready: /readyz on listen.admin answers 200 when admin is set,
// otherwise listen.http and listen.socks5 accept TCP connections. Give every
// listen key explicitly ("" disables), with addresses from FreeAddr: omitted
// keys fall back to egressd's fixed default ports. Without admin, the
// readiness probe is a bare TCP connect-and-close to each listener, which
// egressd may log as an aborted request: prefer configs with admin. Set
// timeouts.drain_delay: 0s so the SIGTERM on cleanup is quick. The process is stopped
// on cleanup (SIGTERM, then SIGKILL after DefaultStopTimeout), and its
// stderr is logged if the test failed.
func (e *Egressd) Start(t testing.TB, configYAML string) *Proc {
	t.Helper()
	bin := e.Binary
	if bin == "" {
		bin = Binary(t)
	}
	cfgPath := filepath.Join(t.TempDir(), "egressd.yaml")
	if err := os.WriteFile(cfgPath, []byte(configYAML), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	args := []string{"serve", "--config", cfgPath}
	if e.Args != nil {
		args = make([]string, len(e.Args))
		for i, a := range e.Args {
			args[i] = strings.ReplaceAll(a, "{config}", cfgPath)
		}
	}
	p := &Proc{ns: e.Netns, ConfigPath: cfgPath, changed: make(chan struct{}), done: make(chan struct{})}
	p.HTTPAddr, p.SOCKSAddr, p.AdminAddr = listenAddrs(configYAML)

	cmd := e.Netns.Command(context.Background(), bin, args...)
	cmd.Env = append(cmd.Env, e.Env...)
	cmd.WaitDelay = 0
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe: %v", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("stderr pipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start egressd: %v", err)
	}
	p.cmd = cmd
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.readStdout(stdout) }()
	go func() { defer readers.Done(); p.readStderr(stderr) }()
	go func() {
		readers.Wait() // pipes must be drained before Wait closes them
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(DefaultStopTimeout)
		if t.Failed() {
			t.Logf("egressd (pid %d) stderr:\n%s", p.PID(), p.Stderr())
		}
	})
	if !e.NoWait {
		p.waitReady(t, e.ReadyTimeout)
	}
	return p
}

// listenAddrs reads listen.http, listen.socks5 and listen.admin.
func listenAddrs(configYAML string) (httpAddr, socksAddr, adminAddr string) {
	var c struct {
		Listen struct {
			HTTP   string `yaml:"http"`
			SOCKS5 string `yaml:"socks5"`
			Admin  string `yaml:"admin"`
		} `yaml:"listen"`
	}
	_ = yaml.Unmarshal([]byte(configYAML), &c) // a broken config is the test's point; egressd reports it
	return c.Listen.HTTP, c.Listen.SOCKS5, c.Listen.Admin
}

// Proc is a running egressd.
type Proc struct {
	// ConfigPath is the config file egressd was started with. Rewrite it
	// and send SIGHUP to test reloads.
	ConfigPath string
	// HTTPAddr, SOCKSAddr and AdminAddr are the listen addresses read from
	// the config ("" when absent or disabled).
	HTTPAddr, SOCKSAddr, AdminAddr string

	ns      *Netns
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new line
	stdout  []string
	access  []map[string]any
	stderr  bytes.Buffer
}

func (p *Proc) readStdout(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		isJSON := json.Unmarshal([]byte(line), &m) == nil && m != nil
		p.mu.Lock()
		p.stdout = append(p.stdout, line)
		if isJSON {
			p.access = append(p.access, m)
		}
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

func (p *Proc) readStderr(r io.Reader) {
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.mu.Lock()
			p.stderr.Write(buf[:n])
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitCode returns the exit code once the process has exited (-1 if it was
// killed by a signal), and false while it runs.
func (p *Proc) ExitCode() (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	default:
		return 0, false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to timeout (zero: DefaultStopTimeout), then
// kills. It returns the exit code (-1 when killed by a signal). Calling it
// again is harmless.
func (p *Proc) Stop(t testing.TB, timeout time.Duration) int {
	t.Helper()
	if timeout == 0 {
		timeout = DefaultStopTimeout
	}
	if killed := p.stop(timeout); killed {
		t.Errorf("egressd (pid %d) did not stop within %v of SIGTERM; killed", p.PID(), timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop terminates the process by PID and reports whether it needed SIGKILL.
func (p *Proc) stop(timeout time.Duration) (killed bool) {
	select {
	case <-p.done:
		return false
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return false
	case <-timer.C:
		p.cmd.Process.Kill()
		<-p.done
		return true
	}
}

// Wait waits up to timeout for the process to exit by itself and returns
// its exit code; it fails the test on timeout.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-timer.C:
		t.Fatalf("egressd (pid %d) still running after %v", p.PID(), timeout)
		return 0
	}
}

// Stdout returns the raw stdout lines so far.
func (p *Proc) Stdout() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

// Stderr returns everything written to stderr so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// AccessLines returns every stdout line that parsed as a JSON object, in
// order: the access log.
func (p *Proc) AccessLines() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.access...)
}

// WaitForLog waits up to DefaultLogTimeout for an access-log line matching
// pred (lines already written count) and returns the first match. It fails
// the test, listing the lines seen, on timeout or if egressd exits first.
func (p *Proc) WaitForLog(t testing.TB, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	timer := time.NewTimer(DefaultLogTimeout)
	defer timer.Stop()
	seen := 0
	for {
		p.mu.Lock()
		lines, changed := p.access, p.changed
		p.mu.Unlock()
		for ; seen < len(lines); seen++ {
			if pred(lines[seen]) {
				return lines[seen]
			}
		}
		select {
		case <-changed:
		case <-p.done:
			p.mu.Lock()
			n := len(p.access)
			p.mu.Unlock()
			if n > seen {
				continue
			}
			t.Fatalf("egressd exited before a matching log line; lines:\n%s\nstderr:\n%s", p.dumpLines(), p.Stderr())
		case <-timer.C:
			t.Fatalf("no matching access-log line within %v; lines:\n%s", DefaultLogTimeout, p.dumpLines())
		}
	}
}

// Field returns a predicate for WaitForLog matching lines whose key equals
// want (compared as fmt's %v, so 443 matches the JSON number 443).
func Field(key string, want any) func(map[string]any) bool {
	return func(m map[string]any) bool {
		v, ok := m[key]
		return ok && fmt.Sprint(v) == fmt.Sprint(want)
	}
}

// Fields returns a predicate matching lines where every key equals its value
// (see [Field]).
func Fields(kv map[string]any) func(map[string]any) bool {
	return func(m map[string]any) bool {
		for k, want := range kv {
			if !Field(k, want)(m) {
				return false
			}
		}
		return true
	}
}

func (p *Proc) dumpLines() string {
	return strings.Join(p.Stdout(), "\n")
}

// waitReady polls until egressd serves, bounded by timeout.
func (p *Proc) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = p.ready(ctx); lastErr == nil {
			return
		}
		select {
		case <-tick.C:
		case <-p.done:
			t.Fatalf("egressd exited (%v) before it was ready; stderr:\n%s", p.waitErr, p.Stderr())
		case <-ctx.Done():
			t.Fatalf("egressd not ready within %v: %v; stderr:\n%s", timeout, lastErr, p.Stderr())
		}
	}
}

func (p *Proc) ready(ctx context.Context) error {
	if p.AdminAddr != "" {
		tr := &http.Transport{DialContext: p.ns.DialContext, DisableKeepAlives: true, Proxy: nil}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.AdminAddr+"/readyz", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	}
	addrs := []string{p.HTTPAddr, p.SOCKSAddr}
	if p.HTTPAddr == "" && p.SOCKSAddr == "" {
		return errors.New("config has no listen address to wait for")
	}
	for _, a := range addrs {
		if a == "" {
			continue
		}
		c, err := p.ns.DialContext(ctx, "tcp", a)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// ProxyURL returns http://HTTPAddr, the HTTP proxy URL.
func (p *Proc) ProxyURL() *url.URL { return &url.URL{Scheme: "http", Host: p.HTTPAddr} }

// SOCKSURL returns socks5h://SOCKSAddr (remote name resolution).
func (p *Proc) SOCKSURL() *url.URL { return &url.URL{Scheme: "socks5h", Host: p.SOCKSAddr} }

// HTTPClient returns a client that uses egressd's HTTP listener as its
// proxy (http.ProxyURL, never the environment), dials from egressd's
// namespace, trusts roots (nil: the system pool) and does not follow
// redirects. Its idle connections are closed on cleanup.
func (p *Proc) HTTPClient(t testing.TB, roots *x509.CertPool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		Proxy:             http.ProxyURL(p.ProxyURL()),
		DialContext:       p.ns.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: false,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Dial opens a TCP connection to addr from egressd's namespace (for raw
// protocol tests against its listeners).
func (p *Proc) Dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
