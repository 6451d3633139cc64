package test

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// TestHealthCommand: `egressd health` asks a running egressd's /readyz (the
// address from --config's listen.admin, or --addr) and exits 0 while it is
// ready, 1 while it drains (egressd_draining is 1 then) and 1 once it is
// gone; a config without an admin listener is a usage error.
func TestHealthCommand(t *testing.T) {
	f := newOpsFarm(t)
	p := f.start(t, opsOpts{Drain: 30 * time.Second})

	if out, errOut, code := run(t, "health", "--config", f.configPath); code != 0 || !strings.Contains(out, "/readyz") {
		t.Fatalf("ready, by --config: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := run(t, "health", "--addr", f.adminAddr); code != 0 {
		t.Fatalf("ready, by --addr: exit %d\n%s", code, errOut)
	}
	if v := f.scrape(t).value(t, "egressd_draining", map[string]string{}); v != 0 {
		t.Errorf("egressd_draining = %v while serving", v)
	}

	// A tunnel holds the drain open (timeouts.drain 30s).
	c, err := connectTunnel(f.httpAddr, fmt.Sprintf("raw.test:%d", f.ports.raw))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echo(c, "hold"); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool { return f.readyz() == http.StatusServiceUnavailable },
		func() string { return "/readyz did not turn 503" })
	if _, errOut, code := run(t, "health", "--config", f.configPath); code != 1 || !strings.Contains(errOut, "503") {
		t.Errorf("draining: exit %d, want 1 naming the 503\n%s", code, errOut)
	}
	if v := f.scrape(t).value(t, "egressd_draining", map[string]string{}); v != 1 {
		t.Errorf("egressd_draining = %v while draining, want 1", v)
	}

	c.Close()
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, errOut, code := run(t, "health", "--addr", f.adminAddr, "--timeout", "2s"); code != 1 || !strings.Contains(errOut, "refused") {
		t.Errorf("down: exit %d, want 1 (connection refused)\n%s", code, errOut)
	}

	noAdmin := writeConfig(t, testenv.YAML(t, testenv.NewConfig(t))) // no listener at all
	if _, errOut, code := run(t, "health", "--config", noAdmin); code != 2 || !strings.Contains(errOut, "listen.admin is disabled") {
		t.Errorf("no admin listener: exit %d, want 2\n%s", code, errOut)
	}
}
