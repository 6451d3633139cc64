package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/egressd/egressd/cache"
	"github.com/egressd/egressd/policy"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); empty: the embedded default config")
	client := fs.String("client", "", "client IP address the request comes from (group matching by cidrs)")
	user := fs.String("user", "", "authenticated user name (group matching by users)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd check --config FILE [--client IP] [--user NAME] HOST:PORT

Runs the same decision engine as "egressd serve" (including DNS resolution
through dns.servers, or the name servers of /etc/resolv.conf, and the range
checks) for one destination, and prints the
decision, the rule and the reason. Exit status: 0 allow (or report), 1 deny,
2 usage, config or resolution error.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	host, portStr, err := net.SplitHostPort(fs.Arg(0))
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || port == 0 {
		fmt.Fprintf(stderr, "egressd check: %q is not HOST:PORT\n", fs.Arg(0))
		return 2
	}
	var addr netip.Addr
	if *client != "" {
		if addr, err = netip.ParseAddr(*client); err != nil {
			fmt.Fprintf(stderr, "egressd check: --client: %v\n", err)
			return 2
		}
	}
	cfg, pol, _, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "egressd: %v\n", err)
		return 2
	}
	resolver, err := cache.NewResolver(cache.ResolverConfig{
		Servers: cfg.DNS.Servers, // none: /etc/resolv.conf's, read once
		Timeout: time.Duration(cfg.DNS.Timeout),
		Size:    16,
	})
	if err != nil {
		fmt.Fprintf(stderr, "egressd: dns: %v\n", err)
		return 2
	}
	defer resolver.Close()
	engine := policy.NewEngine(pol, resolver)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dec, err := engine.Decide(ctx, policy.Request{
		Listener: policy.ListenerCheck,
		Client:   policy.Client{Addr: addr.Unmap(), User: *user},
		Host:     host,
		Port:     uint16(port),
	})
	fmt.Fprintf(stdout, "decision: %s\nrule: %s\nreason: %s\nhost: %s\n",
		dec.Verdict, orDash(dec.Rule), orDash(string(dec.Reason)), orDash(dec.Host))
	if dec.Group != "" {
		fmt.Fprintf(stdout, "group: %s\n", dec.Group)
	}
	for _, a := range dec.Addrs {
		fmt.Fprintf(stdout, "address: %s\n", a)
	}
	if err != nil {
		fmt.Fprintf(stderr, "egressd check: %v\n", err)
		return 2
	}
	if dec.Verdict.Passes() {
		return 0
	}
	return 1
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
