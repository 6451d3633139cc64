package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/cache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/rollout"
)

func cmdCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); empty: the embedded default config")
	client := fs.String("client", "", "client IP address the request comes from (group matching by cidrs)")
	user := fs.String("user", "", "authenticated user name (group matching by users)")
	var replay stringList
	fs.Var(&replay, "replay", "access log to replay (plain, gzip or \"-\" for stdin); repeat for the logs of several instances")
	asJSON := fs.Bool("json", false, "with --replay: print the result as JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd check --config FILE [--client IP] [--user NAME] HOST:PORT
       egressd check --config FILE --replay LOG [--replay LOG...] [--json]

Runs the same decision engine as "egressd serve" (including DNS resolution
through dns.servers, or the name servers of /etc/resolv.conf, and the range
checks) for one destination, and prints the
decision, the rule and the reason. Exit status: 0 allow (or report), 1 deny,
2 usage, config or resolution error. When the rule (or policy.default_via)
sends the destination through a parent proxy, it prints "via: NAME" and the
parent's URLs ("parent: URL") in the order egressd tries them, and no
address: egressd does not resolve such a destination, the parent does.

With --replay, it decides the destination (client, user, host, port) of
every line of egressd access logs with FILE and reports the lines whose
decision (allow, report, deny) would change, with counts per rule and
reason and the destinations, as a table or --json: a policy change tested
against real traffic before it ships. A line is decided with the address it
shows the proxy dialed; names without one resolve through dns.servers (when
that fails, the rules and the mode decide, and a name last denied
private_range stays denied). Lines decided before any destination decision
(auth_required, limit, bad_request) are counted, not replayed; what came
after it (SNI, DLP, dial errors) counts as the destination having passed.
Exit status: 0 when no decision would change, 1 when some would, 2 for
usage, config and read errors; so CI can gate a policy repository on it.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if len(replay) > 0 {
		if fs.NArg() != 0 || *client != "" || *user != "" {
			fmt.Fprintln(stderr, "egressd check: --replay takes no HOST:PORT, --client or --user: the log has them")
			return 2
		}
		return checkReplay(*path, replay, *asJSON, stdin, stdout, stderr)
	}
	if *asJSON {
		fmt.Fprintln(stderr, "egressd check: --json goes with --replay")
		return 2
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
	if dec.Via != "" {
		fmt.Fprintf(stdout, "via: %s\n", dec.Via)
		for _, u := range cfg.UpstreamProxies[dec.Via].URLs {
			fmt.Fprintf(stdout, "parent: %s\n", u)
		}
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

// checkReplay runs `egressd check --replay`.
func checkReplay(path string, logs []string, asJSON bool, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, pol, _, err := loadConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "egressd: %v\n", err)
		return 2
	}
	resolver, err := cache.NewResolver(cache.ResolverConfig{
		Servers: cfg.DNS.Servers,
		Timeout: time.Duration(cfg.DNS.Timeout),
		Size:    10000,
	})
	if err != nil {
		fmt.Fprintf(stderr, "egressd: dns: %v\n", err)
		return 2
	}
	name := path
	if name == "" {
		name = "the default config"
	}
	opt := rollout.ReplayOptions{Policy: pol, Resolver: resolver, ConfigName: name}
	if isTerminal(stderr) {
		opt.Progress = progressLine(stderr)
	}
	var sources []rollout.Source
	for _, l := range logs {
		sources = append(sources, rollout.Source{Path: l, Stdin: stdin})
	}
	res, err := rollout.Replay(context.Background(), sources, opt)
	if err != nil {
		fmt.Fprintf(stderr, "egressd check: %v\n", err)
		return 2
	}
	if asJSON {
		err = res.WriteJSON(stdout)
	} else {
		err = res.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "egressd check: %v\n", err)
		return 2
	}
	if res.Changed() {
		return 1
	}
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
