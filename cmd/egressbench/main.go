package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runMain(args, os.Stdout, os.Stderr)
	case "report":
		err = reportMain(args, os.Stdout)
	case "ports":
		err = portsMain(args, os.Stdout)
	default:
		err = fmt.Errorf("unknown subcommand %q (want run, report or ports)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressbench:", err)
		os.Exit(1)
	}
}

// runConfig is everything the run subcommand is told on its command line.
type runConfig struct {
	Kind, Proxy, Label, JSONOut, Scenarios string
	Run, ProxyPID                          int
	Quick                                  bool

	OriginIP                              string
	BulkAddr, EchoAddr, HTTPAddr, TLSAddr string
	DNSListen, Name                       string
	originIP                              netip.Addr

	Conc, MaxErrors                    int
	BulkBytes                          int64
	BulkTime                           time.Duration
	CopyBuf                            int
	Tunnels, TLSTunnels                int
	TunnelTime, TLSTime                time.Duration
	KARequests, FwdRequests            int
	KATime, FwdTime                    time.Duration
	IdleTunnels                        int
	IdleTime, Settle, Timeout, MaxTime time.Duration
}

// scenario names in the order they run. The idle figure is taken first, on
// a proxy that has not yet grown buffers for bulk transfers.
var allScenarios = []string{
	"idle", "keepalive", "tunnels", "tls_tunnels",
	"bulk_up_1", "bulk_up_8", "bulk_down_1", "bulk_down_8", "forward",
}

// defaultScenarios returns the scenarios that apply to a kind.
func defaultScenarios(kind string) []string {
	switch kind {
	case kindHTTP:
		return []string{"forward"}
	case kindDirect:
		return slices.DeleteFunc(slices.Clone(allScenarios), func(s string) bool { return s == "idle" })
	default:
		return slices.DeleteFunc(slices.Clone(allScenarios), func(s string) bool { return s == "forward" })
	}
}

// parseRunFlags parses the run subcommand's flags. -quick changes the
// defaults of the count and time flags that are not given explicitly.
func parseRunFlags(args []string, stderr io.Writer) (runConfig, error) {
	var c runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Kind, "kind", kindConnect, "client kind: connect | http | socks5 | direct")
	fs.StringVar(&c.Proxy, "proxy", "", "proxy address host:port (loopback); not used with -kind direct")
	fs.IntVar(&c.ProxyPID, "proxy-pid", 0, "PID of the proxy: its CPU, RSS and fds (with descendants) are read from /proc")
	fs.StringVar(&c.Label, "label", "", "name of the proxy under test in the results (default: the kind)")
	fs.IntVar(&c.Run, "run", 1, "repetition number recorded in the results")
	fs.StringVar(&c.JSONOut, "json", "", "append one JSON object per scenario to this file")
	fs.StringVar(&c.Scenarios, "scenarios", "", "comma-separated scenarios (default: all that apply to -kind): "+strings.Join(allScenarios, ","))
	fs.BoolVar(&c.Quick, "quick", false, "smaller counts and shorter bounds (about a quarter of the full run)")

	fs.StringVar(&c.OriginIP, "origin-ip", "127.0.0.1", "loopback IP the origins listen on and the DNS server answers with")
	fs.StringVar(&c.BulkAddr, "bulk-addr", "", "bulk origin listen address (default: a free port on -origin-ip)")
	fs.StringVar(&c.EchoAddr, "echo-addr", "", "echo origin (idle tunnels) listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "", "HTTP origin listen address")
	fs.StringVar(&c.TLSAddr, "tls-addr", "", "HTTPS origin listen address")
	fs.StringVar(&c.DNSListen, "dns-listen", "", "DNS server listen address, UDP and TCP (default: a free port on -origin-ip; printed at start)")
	fs.StringVar(&c.Name, "name", "origin.bench.test", "host name of the HTTPS origin; must be under bench.test")

	fs.IntVar(&c.Conc, "conc", 8, "concurrent workers for tunnels, tls_tunnels, forward and idle set-up")
	fs.IntVar(&c.MaxErrors, "max-errors", 100, "a scenario stops after this many failed operations")
	fs.Int64Var(&c.BulkBytes, "bulk-bytes", 1<<30, "payload bytes per bulk scenario, split over its streams")
	fs.DurationVar(&c.BulkTime, "bulk-time", 20*time.Second, "time bound per bulk scenario")
	fs.IntVar(&c.CopyBuf, "copy-buf", 256<<10, "read buffer per bulk stream, bytes")
	fs.IntVar(&c.Tunnels, "tunnels", 5000, "new tunnels in the tunnels scenario")
	fs.DurationVar(&c.TunnelTime, "tunnel-time", 10*time.Second, "time bound of the tunnels scenario")
	fs.IntVar(&c.TLSTunnels, "tls-tunnels", 3000, "new TLS tunnels by name in the tls_tunnels scenario")
	fs.DurationVar(&c.TLSTime, "tls-time", 10*time.Second, "time bound of the tls_tunnels scenario")
	fs.IntVar(&c.KARequests, "ka-requests", 10000, "requests through one keep-alive tunnel")
	fs.DurationVar(&c.KATime, "ka-time", 6*time.Second, "time bound of the keepalive scenario")
	fs.IntVar(&c.FwdRequests, "fwd-requests", 30000, "absolute-URI requests in the forward scenario")
	fs.DurationVar(&c.FwdTime, "fwd-time", 10*time.Second, "time bound of the forward scenario")
	fs.IntVar(&c.IdleTunnels, "idle-tunnels", 3000, "idle tunnels held in the idle scenario (each costs 2 fds here and about 2+ in the proxy)")
	fs.DurationVar(&c.IdleTime, "idle-time", 60*time.Second, "time bound for opening the idle tunnels")
	fs.DurationVar(&c.Settle, "settle", time.Second, "pause before reading the proxy's footprint in the idle scenario")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "bound on each operation (connect, handshake, request)")
	fs.DurationVar(&c.MaxTime, "max-time", 5*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]string{
			"bulk-bytes": "268435456", "bulk-time": "6s",
			"tunnels": "1500", "tunnel-time": "4s",
			"tls-tunnels": "800", "tls-time": "4s",
			"ka-requests": "3000", "ka-time": "3s",
			"fwd-requests": "8000", "fwd-time": "4s",
		}
		for name, v := range quick {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return c, err
				}
			}
		}
	}
	return c, c.validate()
}

// validate checks the flag combination and fills derived fields.
func (c *runConfig) validate() error {
	var errs []error
	switch c.Kind {
	case kindDirect:
	case kindConnect, kindSOCKS5, kindHTTP:
		if err := loopbackOnly(c.Proxy); err != nil {
			errs = append(errs, fmt.Errorf("-proxy: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("-kind %q: want connect, http, socks5 or direct", c.Kind))
	}
	ip, err := netip.ParseAddr(c.OriginIP)
	if err != nil || !ip.IsLoopback() {
		errs = append(errs, fmt.Errorf("-origin-ip %q: want a loopback IP", c.OriginIP))
	}
	c.originIP = ip
	if !strings.HasSuffix(c.Name+".", "."+benchDomain) {
		errs = append(errs, fmt.Errorf("-name %q: must be under %s", c.Name, benchDomain))
	}
	if c.Label == "" {
		c.Label = c.Kind
	}
	if c.Scenarios != "" {
		for _, s := range strings.Split(c.Scenarios, ",") {
			if !slices.Contains(allScenarios, s) {
				errs = append(errs, fmt.Errorf("-scenarios: unknown scenario %q", s))
			}
		}
	}
	for name, v := range map[string]int64{
		"-conc": int64(c.Conc), "-max-errors": int64(c.MaxErrors), "-bulk-bytes": c.BulkBytes,
		"-copy-buf": int64(c.CopyBuf), "-tunnels": int64(c.Tunnels), "-tls-tunnels": int64(c.TLSTunnels),
		"-ka-requests": int64(c.KARequests), "-fwd-requests": int64(c.FwdRequests), "-idle-tunnels": int64(c.IdleTunnels),
	} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.IdleTunnels > 5000 {
		errs = append(errs, errors.New("-idle-tunnels above 5000 would exceed the machine's 20,000 descriptors with the proxy's share"))
	}
	return errors.Join(errs...)
}

// runMain is the run subcommand.
func runMain(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseRunFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancelT()

	o, err := startOrigins(originConfig{
		IP: cfg.originIP, BulkAddr: cfg.BulkAddr, EchoAddr: cfg.EchoAddr, HTTPAddr: cfg.HTTPAddr,
		TLSAddr: cfg.TLSAddr, DNSAddr: cfg.DNSListen, Name: cfg.Name,
		copyBuf: cfg.CopyBuf, dnsTTL: 300, handshake: cfg.Timeout,
	})
	if err != nil {
		return err
	}
	defer o.Close()
	fmt.Fprintf(stderr, "egressbench: origins bulk=%s echo=%s http=%s tls=%s (%s) dns=%s\n",
		o.Addr("bulk"), o.Addr("echo"), o.Addr("http"), o.Addr("tls"), cfg.Name, o.DNSAddr())

	var jf *os.File
	if cfg.JSONOut != "" {
		if jf, err = os.OpenFile(cfg.JSONOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			return err
		}
		defer jf.Close()
	}
	b := &bench{
		cfg:  cfg,
		o:    o,
		d:    &dialer{kind: cfg.Kind, proxy: cfg.Proxy, timeout: cfg.Timeout},
		zero: make([]byte, 1<<20),
		tls:  &tls.Config{ServerName: cfg.Name, RootCAs: o.CAPool, MinVersion: tls.VersionTLS12},
		out: func(r *Result) error {
			fmt.Fprintln(stdout, r.summary())
			if jf != nil {
				return r.writeJSON(jf)
			}
			return nil
		},
	}
	if err := b.newTargets(); err != nil {
		return err
	}
	scen := defaultScenarios(cfg.Kind)
	if cfg.Scenarios != "" {
		scen = strings.Split(cfg.Scenarios, ",")
	}
	var errs []error
	for _, s := range scen {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: not run: %w", s, context.Cause(ctx)))
			continue
		}
		if err := b.runScenario(ctx, s); err != nil {
			fmt.Fprintf(stderr, "egressbench: %s %s: %v\n", cfg.Label, s, err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runScenario runs one scenario by name.
func (b *bench) runScenario(ctx context.Context, s string) error {
	switch s {
	case "idle":
		return b.runIdle(ctx)
	case "keepalive":
		return b.runKeepAlive(ctx)
	case "tunnels":
		return b.runTunnels(ctx, "tunnels", false, b.cfg.Tunnels, b.cfg.TunnelTime)
	case "tls_tunnels":
		return b.runTunnels(ctx, "tls_tunnels", true, b.cfg.TLSTunnels, b.cfg.TLSTime)
	case "bulk_up_1":
		return b.runBulk(ctx, true, 1)
	case "bulk_up_8":
		return b.runBulk(ctx, true, 8)
	case "bulk_down_1":
		return b.runBulk(ctx, false, 1)
	case "bulk_down_8":
		return b.runBulk(ctx, false, 8)
	case "forward":
		return b.runForward(ctx)
	}
	return fmt.Errorf("unknown scenario %q", s)
}

// portsMain is the ports subcommand: it prints n currently free TCP ports
// on a loopback IP, for scripts that must write proxy configs before the
// origins start. Each port is also checked free for UDP.
func portsMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ports", flag.ContinueOnError)
	n := fs.Int("n", 4, "how many ports")
	ip := fs.String("ip", "127.0.0.1", "loopback IP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > 64 {
		return errors.New("-n must be 1..64")
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []string
	for len(ports) < *n {
		addr := net.JoinHostPort(*ip, "0")
		if err := loopbackOnly(addr); err != nil {
			return err
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		ls = append(ls, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		if pc, err := net.ListenPacket("udp", l.Addr().String()); err == nil {
			pc.Close()
			ports = append(ports, p)
		}
	}
	_, err := fmt.Fprintln(stdout, strings.Join(ports, " "))
	return err
}
