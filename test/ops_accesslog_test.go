package test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAccessFileReopen: with log.access_file, egressd writes the access log
// to the file, not stdout. Renamed by hand and then by the packaged
// logrotate config (real logrotate), each time followed by SIGUSR1, the
// file is reopened: the lines before the rotation are in the renamed file,
// the later ones in a new file at the path, and requests that ran during
// the rotations lost no line.
func TestAccessFileReopen(t *testing.T) {
	f := newOpsFarm(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	p := f.start(t, opsOpts{AccessFile: path})

	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: f.httpAddr})}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	get := func() error {
		resp, err := client.Get(fmt.Sprintf("http://fixed.test:%d/", f.ports.fixed))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET: %s", resp.Status)
		}
		return nil
	}
	run := func(n int) error {
		for range n {
			if err := get(); err != nil {
				return err
			}
		}
		return nil
	}
	// burst runs n requests while the test rotates the file.
	burst := func(n int) <-chan error {
		errc := make(chan error, 1)
		go func() { errc <- run(n) }()
		return errc
	}
	reopened := func(n int) {
		t.Helper()
		waitUntil(t, 10*time.Second, func() bool { return strings.Count(p.Stderr(), `"msg":"access log reopened"`) >= n },
			func() string { return "no access log reopened line; stderr:\n" + p.Stderr() })
	}

	// 1. By hand: rename, SIGUSR1, while requests run.
	if err := run(100); err != nil {
		t.Fatal(err)
	}
	during := burst(100)
	if err := os.Rename(path, path+".manual"); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	reopened(1)
	if err := <-during; err != nil {
		t.Fatal(err)
	}

	// 2. The packaged logrotate config, run by logrotate, with its path and
	// its systemctl command pointed at this egressd.
	during = burst(100)
	// The config has notifempty: rotate once the buffer reached the file.
	waitUntil(t, 10*time.Second, func() bool { st, err := os.Stat(path); return err == nil && st.Size() > 0 },
		func() string { return "nothing written to the reopened file" })
	conf := packagedLogrotate(t, path, p.PID())
	out, err := exec.Command("logrotate", "--force", "--state", filepath.Join(t.TempDir(), "state"), conf).CombinedOutput()
	if err != nil {
		t.Fatalf("logrotate: %v\n%s", err, out)
	}
	reopened(2)
	if err := <-during; err != nil {
		t.Fatal(err)
	}
	if err := run(50); err != nil {
		t.Fatal(err)
	}
	const total = 350

	// Every line is written once egressd has stopped (the buffer flushed).
	p.Stop(t, 0)
	if n := len(p.Stdout()); n != 0 {
		t.Errorf("%d lines on stdout with log.access_file set: %q", n, p.Stdout()[0])
	}
	count := func(name string) int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range bytes.Fields(b) {
			if !bytes.Contains(l, []byte(`"host":"fixed.test"`)) {
				t.Fatalf("%s: unexpected line %q", name, l)
			}
		}
		return bytes.Count(b, []byte("\n"))
	}
	manual, rotated, current := count("access.log.manual"), count("access.log.1"), count("access.log")
	if manual < 100 || current < 50 {
		t.Errorf("lines: %d in the hand-renamed file (want >= 100), %d in the new file (want >= 50)", manual, current)
	}
	if sum := manual + rotated + current; sum != total {
		t.Errorf("%d + %d + %d = %d lines for %d requests", manual, rotated, current, sum, total)
	}
}

// packagedLogrotate writes deployments/logrotate/egressd with the access
// log at path and SIGUSR1 sent to pid instead of through systemctl.
func packagedLogrotate(t *testing.T, path string, pid int) string {
	t.Helper()
	b, err := os.ReadFile("../deployments/logrotate/egressd")
	if err != nil {
		t.Fatal(err)
	}
	const (
		shippedPath = "/var/log/egressd/access.log {"
		shippedKill = "systemctl kill --kill-whom=main --signal=SIGUSR1 egressd.service 2>/dev/null || true"
	)
	s := string(b)
	if !strings.Contains(s, shippedPath) || !strings.Contains(s, shippedKill) {
		t.Fatalf("deployments/logrotate/egressd no longer has %q and %q", shippedPath, shippedKill)
	}
	s = strings.Replace(s, shippedPath, path+" {", 1)
	s = strings.Replace(s, shippedKill, fmt.Sprintf("kill -USR1 %d", pid), 1)
	conf := filepath.Join(t.TempDir(), "egressd")
	if err := os.WriteFile(conf, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}
