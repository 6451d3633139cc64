package testenv

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CICAP is a real c-icap server (Debian's c-icap with
// libc-icap-mod-contentfiltering) started for one test, on a free port of
// a loopback address, with a generated config. Its services:
//
//	echo      srv_echo: returns every request unmodified (204 after a
//	          short preview, else 200 with the request and a Via header)
//	filter    srv_content_filtering: blocks (403 page from the BLOCK
//	          template) any request whose body matches one of Block
type CICAP struct {
	Addr string // ip:port
	Dir  string // config, logs
	cmd  *exec.Cmd
	done chan struct{}
}

// CICAPConfig is what the generated config varies.
type CICAPConfig struct {
	// Block lists PCRE patterns (without slashes) the filter service
	// blocks in request bodies.
	Block []string
	// MaxServers is c-icap's number of server processes (10 threads
	// each); 0: 2.
	MaxServers int
}

// URL returns the icap:// URL of a service ("echo", "filter").
func (c *CICAP) URL(service string) string {
	if service == "filter" {
		service = "srv_cfg_filter"
	}
	return "icap://" + c.Addr + "/" + service
}

// StartCICAP runs c-icap in ns (the host for nil) on ip, until the test
// ends. It waits until the server answers OPTIONS.
func StartCICAP(t testing.TB, ns *Netns, ip string, cfg CICAPConfig) *CICAP {
	t.Helper()
	bin := lookTool(t, "c-icap")
	mods, _ := filepath.Glob("/usr/lib/*/c_icap/srv_content_filtering.so")
	if len(mods) == 0 {
		t.Fatal("c-icap's srv_content_filtering.so not found (run scripts/setup.sh: libc-icap-mod-contentfiltering)")
	}
	modDir := filepath.Dir(mods[0])
	dir := t.TempDir()
	addr := ns.FreeAddr(t, ip)
	servers := cfg.MaxServers
	if servers == 0 {
		servers = 2
	}
	var b strings.Builder
	fmt.Fprintf(&b, `PidFile %[1]s/c-icap.pid
CommandsSocket %[1]s/c-icap.ctl
Timeout 60
MaxKeepAliveRequests 0
KeepAliveTimeout 600
StartServers 1
MaxServers %[3]d
MinSpareThreads 5
MaxSpareThreads 20
ThreadsPerChild 10
MaxRequestsPerChild 0
Port %[2]s
TmpDir %[1]s
MaxMemObject 1048576
DebugLevel 1
Pipelining on
ModulesDir %[4]s
ServicesDir %[4]s
TemplateDir /usr/share/c_icap/templates/
TemplateDefaultLanguage en
LoadMagicFile /etc/c-icap/c-icap.magic
ServerLog %[1]s/server.log
AccessLog %[1]s/access.log
acl all src 0.0.0.0/0.0.0.0
Service echo srv_echo.so
Service srv_cfg_filter srv_content_filtering.so
srv_content_filtering.MaxBodyData 4M
`, dir, addr, servers, modDir)
	for _, p := range cfg.Block {
		fmt.Fprintf(&b, "srv_content_filtering.Match blocked body /%s/ score=10\n", p)
	}
	// The Action form ("srv_content_filtering.Action block ...") fails in
	// c-icap 0.5.10 with "Unknown profile default": a named profile with
	// an access rule works.
	if len(cfg.Block) > 0 {
		b.WriteString("srv_content_filtering.Profile dlp block score{blocked>5}\n" +
			"srv_content_filtering.ProfileOption dlp AnyContentType\nsrv_content_filtering.ProfileAccess dlp all\n")
	}
	conf := filepath.Join(dir, "c-icap.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(context.Background(), bin, "-N", "-f", conf)
	// c-icap forks its servers: a process group of their own, stopped
	// as one.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start c-icap: %v", err)
	}
	c := &CICAP{Addr: addr, Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		out.Close()
		close(c.done)
	}()
	t.Cleanup(c.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.options(ctx, ns)
		if err == nil {
			return c
		}
		select {
		case <-tick.C:
		case <-c.done:
			log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
			slog, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("c-icap exited before it answered: %s\n%s", log, slog)
		case <-ctx.Done():
			t.Fatalf("c-icap on %s did not answer OPTIONS: %v", addr, err)
		}
	}
}

// options asks the echo service for its OPTIONS: the server is up.
func (c *CICAP) options(ctx context.Context, ns *Netns) error {
	conn, err := ns.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "OPTIONS %s ICAP/1.0\r\nHost: %s\r\nEncapsulated: null-body=0\r\n\r\n", c.URL("echo"), c.Addr)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "ICAP/1.0 200") {
		return fmt.Errorf("OPTIONS answered %q", strings.TrimSpace(line))
	}
	return nil
}

// AccessLog returns c-icap's access log so far.
func (c *CICAP) AccessLog() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "access.log"))
	return string(b)
}

// stop ends the process group c-icap leads (SIGTERM, then SIGKILL).
func (c *CICAP) stop() {
	pgid := c.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
}
