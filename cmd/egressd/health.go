package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/proxy/config"
)

func cmdHealth(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file whose listen.admin to ask (default: the embedded default's, 127.0.0.1:9090)")
	addr := fs.String("addr", "", "admin address HOST:PORT to ask instead of the config's listen.admin")
	timeout := fs.Duration("timeout", 3*time.Second, "time bound of the whole check")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd health [--config FILE | --addr HOST:PORT] [--timeout 3s]

Asks a running egressd whether it is ready: GET /readyz on its admin
listener (--addr, else listen.admin of --config, else the embedded default's).
A wildcard listen address (0.0.0.0, ::) is asked on loopback. Exit status: 0
ready (200), 1 not ready (503 while starting or draining) or not reachable,
2 usage error. Made for container health checks (Docker HEALTHCHECK in the
distroless image, which has no shell or curl).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "egressd health: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	target := *addr
	if target == "" {
		var err error
		if target, err = adminAddr(*path); err != nil {
			fmt.Fprintf(stderr, "egressd health: %v\n", err)
			return 2
		}
	}
	url, err := readyzURL(target)
	if err != nil {
		fmt.Fprintf(stderr, "egressd health: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "egressd health: %v\n", err)
		return 2
	}
	// Never through a proxy from the environment: this is egressd itself.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "egressd health: %s: %v\n", url, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "egressd health: %s: %s %s\n", url, resp.Status, trimBody(body))
		return 1
	}
	fmt.Fprintf(stdout, "ready: %s\n", url)
	return 0
}

// readyzURL is /readyz on the admin address; a wildcard host is asked on
// loopback, where a listener on every address also answers.
func readyzURL(admin string) (string, error) {
	host, port, err := net.SplitHostPort(admin)
	if err != nil {
		return "", fmt.Errorf("admin address %q: %w", admin, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}

// adminAddr is listen.admin of the config at path (the embedded default's
// for ""). Only that key is read, so a file that is being edited or that a
// reload rejected still names the listener the running egressd has.
func adminAddr(path string) (string, error) {
	def, _, err := config.Default()
	if err != nil {
		return "", err
	}
	if path == "" {
		return orAdmin(def.Listen.Admin)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var c struct {
		Listen struct {
			Admin *string `yaml:"admin"`
		} `yaml:"listen"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c.Listen.Admin == nil {
		return orAdmin(def.Listen.Admin)
	}
	return orAdmin(*c.Listen.Admin)
}

func orAdmin(a string) (string, error) {
	if a == "" {
		return "", fmt.Errorf("listen.admin is disabled: there is no /readyz to ask (use --addr)")
	}
	return a, nil
}

func trimBody(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
