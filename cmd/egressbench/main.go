package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
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
	case "pki":
		err = pkiMain(args, os.Stdout)
	case "parent":
		err = parentMain(args, os.Stderr)
	case "floor":
		err = floorMain(args, os.Stdout, os.Stderr)
	default:
		err = fmt.Errorf("unknown subcommand %q (want run, report, ports, pki, parent or floor)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressbench:", err)
		os.Exit(1)
	}
}

// runConfig is everything the run subcommand is told on its command line.
type runConfig struct {
	Kind, Proxy, Label, JSONOut, Scenarios string
	CPUProfile, ProxyAuth                  string
	auth                                   proxyAuth
	Run, ProxyPID                          int
	Quick                                  bool

	OriginIP                              string
	BulkAddr, EchoAddr, HTTPAddr, TLSAddr string
	DNSListen, Name                       string
	PKI                                   string // directory written by the pki subcommand ("": a fresh origin CA)
	originIP                              netip.Addr

	Conc, MaxErrors                    int
	BulkBytes                          int64
	BulkTime                           time.Duration
	CopyBuf                            int
	Tunnels, TLSTunnels                int
	TunnelTime, TLSTime                time.Duration
	KARequests, FwdRequests            int
	KATime, FwdTime                    time.Duration
	CacheRequests, CacheConc           int
	CacheTime                          time.Duration
	PostRequests1K, PostRequests1M     int
	PostTime                           time.Duration
	HeldUploads                        int
	PacedTunnelRate, PacedFwdRate      float64
	PacedTLSRate                       float64
	PacedTime                          time.Duration
	PacedConc                          int
	IdleTunnels                        int
	IdleTime, Settle, Timeout, MaxTime time.Duration
	InspSessions, InspRequests         int
	InspTime                           time.Duration
	InspBulkBytes                      int64
}

// scenario names in the order they run. The idle figure is taken first, on
// a proxy that has not yet grown buffers for bulk transfers.
var allScenarios = []string{
	"idle", "keepalive", "tunnels", "tunnels_paced", "tls_tunnels", "tls_tunnels_paced",
	"bulk_up_1", "bulk_up_8", "bulk_down_1", "bulk_down_8", "forward", "forward_paced",
	"cache_hit_1k", "cache_hit_1m", "cache_miss_1k", "cache_miss_1m",
	"dlp_held", "post_1k", "post_1m",
	"inspect_sessions", "inspect_requests", "inspect_bulk",
}

// inspectScenarios are the scenarios of the inspect kind.
var inspectScenarios = []string{"inspect_sessions", "inspect_requests", "inspect_bulk"}

// cacheScenarios are the scenarios of the cache kind.
var cacheScenarios = []string{"cache_hit_1k", "cache_hit_1m", "cache_miss_1k", "cache_miss_1m"}

// postScenarios are the forwarded POSTs the DLP tables compare (the
// uninspected proxy against the same one inspecting); named with -scenarios.
var postScenarios = []string{"dlp_held", "post_1k", "post_1m"}

// defaultScenarios returns the scenarios that apply to a kind.
func defaultScenarios(kind string) []string {
	switch kind {
	case kindHTTP:
		return []string{"forward", "forward_paced"}
	case kindCache:
		return slices.Clone(cacheScenarios)
	case kindInspect:
		return slices.Clone(inspectScenarios)
	case kindDirect:
		return slices.DeleteFunc(slices.Clone(allScenarios), func(s string) bool {
			return s == "idle" || slices.Contains(cacheScenarios, s) || slices.Contains(postScenarios, s) || slices.Contains(inspectScenarios, s)
		})
	default:
		return slices.DeleteFunc(slices.Clone(allScenarios), func(s string) bool {
			return s == "forward" || s == "forward_paced" || slices.Contains(cacheScenarios, s) || slices.Contains(postScenarios, s) || slices.Contains(inspectScenarios, s)
		})
	}
}

// parseRunFlags parses the run subcommand's flags. -quick changes the
// defaults of the count and time flags that are not given explicitly.
func parseRunFlags(args []string, stderr io.Writer) (runConfig, error) {
	var c runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Kind, "kind", kindConnect, "client kind: connect | http | socks5 | direct | cache (absolute-URI HTTP to a proxy with its HTTP cache on) | inspect (CONNECT to a proxy that terminates TLS with the -pki inspection CA)")
	fs.StringVar(&c.Proxy, "proxy", "", "proxy address host:port (loopback); not used with -kind direct")
	fs.StringVar(&c.ProxyAuth, "proxy-auth", "", "USER:PASSWORD to present to the proxy: Basic on CONNECT and forwarded requests, RFC 1929 username/password on SOCKS5 (default: none)")
	fs.IntVar(&c.ProxyPID, "proxy-pid", 0, "PID of the proxy: its CPU, RSS and fds (with descendants) are read from /proc")
	fs.StringVar(&c.Label, "label", "", "name of the proxy under test in the results (default: the kind)")
	fs.IntVar(&c.Run, "run", 1, "repetition number recorded in the results")
	fs.StringVar(&c.JSONOut, "json", "", "append one JSON object per scenario to this file")
	fs.StringVar(&c.Scenarios, "scenarios", "", "comma-separated scenarios (default: all that apply to -kind): "+strings.Join(allScenarios, ","))
	fs.BoolVar(&c.Quick, "quick", false, "smaller counts and shorter bounds (a quarter to a third of the full run; the idle count stays)")

	fs.StringVar(&c.OriginIP, "origin-ip", "127.0.0.1", "loopback IP the origins listen on and the DNS server answers with")
	fs.StringVar(&c.BulkAddr, "bulk-addr", "", "bulk origin listen address (default: a free port on -origin-ip)")
	fs.StringVar(&c.EchoAddr, "echo-addr", "", "echo origin (idle tunnels) listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "", "HTTP origin listen address")
	fs.StringVar(&c.TLSAddr, "tls-addr", "", "HTTPS origin listen address")
	fs.StringVar(&c.DNSListen, "dns-listen", "", "DNS server listen address, UDP and TCP (default: a free port on -origin-ip; printed at start)")
	fs.StringVar(&c.Name, "name", "origin.bench.test", "host name of the HTTPS origin; must be under bench.test")
	fs.StringVar(&c.PKI, "pki", "", "directory written by `egressbench pki`: the origin CA signs the HTTPS origin's certificate (so proxies can trust it across runs), and -kind inspect clients trust its inspection root (default: a fresh origin CA; no inspect kind)")

	fs.IntVar(&c.Conc, "conc", 8, "concurrent workers for tunnels, tls_tunnels, forward and idle set-up")
	fs.IntVar(&c.MaxErrors, "max-errors", 100, "a scenario stops after this many failed operations")
	fs.Int64Var(&c.BulkBytes, "bulk-bytes", 2<<30, "payload bytes per bulk scenario, split over its streams")
	fs.DurationVar(&c.BulkTime, "bulk-time", 15*time.Second, "time bound per bulk scenario")
	fs.IntVar(&c.CopyBuf, "copy-buf", 256<<10, "read buffer per bulk stream when splice cannot be used, bytes")
	fs.IntVar(&c.Tunnels, "tunnels", 10000, "new tunnels in the tunnels scenario")
	fs.DurationVar(&c.TunnelTime, "tunnel-time", 10*time.Second, "time bound of the tunnels scenario")
	fs.IntVar(&c.TLSTunnels, "tls-tunnels", 3000, "new TLS tunnels by name in the tls_tunnels scenario")
	fs.DurationVar(&c.TLSTime, "tls-time", 10*time.Second, "time bound of the tls_tunnels scenario")
	fs.IntVar(&c.KARequests, "ka-requests", 20000, "requests through one keep-alive tunnel")
	fs.DurationVar(&c.KATime, "ka-time", 8*time.Second, "time bound of the keepalive scenario")
	fs.IntVar(&c.FwdRequests, "fwd-requests", 50000, "absolute-URI requests in the forward scenario")
	fs.DurationVar(&c.FwdTime, "fwd-time", 10*time.Second, "time bound of the forward scenario")
	fs.IntVar(&c.CacheRequests, "cache-requests", 200000, "requests in each cache scenario (bounded by -cache-time)")
	fs.DurationVar(&c.CacheTime, "cache-time", 5*time.Second, "time bound of each cache scenario")
	fs.IntVar(&c.CacheConc, "cache-conc", 32, "keep-alive clients in the cache scenarios")
	fs.IntVar(&c.PostRequests1K, "post-requests-1k", 30000, "POSTs of a 1 KiB body in the post_1k scenario")
	fs.IntVar(&c.PostRequests1M, "post-requests-1m", 3000, "POSTs of a 1 MiB body in the post_1m scenario")
	fs.DurationVar(&c.PostTime, "post-time", 8*time.Second, "time bound of each post scenario")
	fs.IntVar(&c.HeldUploads, "held-uploads", 100, "1 MiB uploads held in flight (all but their last byte sent) in the dlp_held scenario")
	fs.Float64Var(&c.PacedTunnelRate, "paced-tunnels-rate", 2000, "new tunnels per second in the tunnels_paced scenario (open loop, below every proxy's capacity)")
	fs.Float64Var(&c.PacedTLSRate, "paced-tls-rate", 400, "new TLS tunnels per second in the tls_tunnels_paced scenario (below the load tool's own TLS capacity)")
	fs.Float64Var(&c.PacedFwdRate, "paced-fwd-rate", 5000, "requests per second in the forward_paced scenario")
	fs.DurationVar(&c.PacedTime, "paced-time", 5*time.Second, "length of each paced scenario")
	fs.IntVar(&c.PacedConc, "paced-conc", 32, "workers in the paced scenarios (enough that the rate never waits for a free one)")
	fs.IntVar(&c.IdleTunnels, "idle-tunnels", 3000, "idle tunnels held in the idle scenario (each costs 2 fds here and about 2+ in the proxy)")
	fs.DurationVar(&c.IdleTime, "idle-time", 60*time.Second, "time bound for opening the idle tunnels")
	fs.DurationVar(&c.Settle, "settle", time.Second, "pause before reading the proxy's footprint in the idle scenario")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "bound on each operation (connect, handshake, request)")
	fs.DurationVar(&c.MaxTime, "max-time", 5*time.Minute, "bound on the whole run")
	fs.IntVar(&c.InspSessions, "inspect-sessions", 3000, "new inspected TLS sessions (CONNECT, handshake with the proxy, one request) in inspect_sessions")
	fs.IntVar(&c.InspRequests, "inspect-requests", 50000, "requests over keep-alive inspected sessions in inspect_requests")
	fs.DurationVar(&c.InspTime, "inspect-time", 10*time.Second, "time bound of each inspect scenario")
	fs.Int64Var(&c.InspBulkBytes, "inspect-bulk-bytes", 2<<30, "response bytes downloaded through one inspected session in inspect_bulk")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load tool's own CPU profile to this file")
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
			"bulk-bytes": "536870912", "bulk-time": "5s",
			"tunnels": "3000", "tunnel-time": "4s",
			"tls-tunnels": "1000", "tls-time": "4s",
			"ka-requests": "5000", "ka-time": "3s",
			"fwd-requests": "15000", "fwd-time": "4s",
			"cache-time":       "2s",
			"post-requests-1k": "10000", "post-requests-1m": "1000", "post-time": "4s",
			"held-uploads":     "50",
			"inspect-sessions": "1000", "inspect-requests": "15000", "inspect-time": "4s",
			"inspect-bulk-bytes": "536870912",
			"paced-time":         "2s",
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
		if c.ProxyAuth != "" {
			errs = append(errs, errors.New("-proxy-auth: there is no proxy with -kind direct"))
		}
	case kindConnect, kindSOCKS5, kindHTTP, kindCache, kindInspect:
		if c.Kind == kindInspect && c.PKI == "" {
			errs = append(errs, errors.New("-kind inspect needs -pki (the inspection CA its clients trust)"))
		}
		if err := loopbackOnly(c.Proxy); err != nil {
			errs = append(errs, fmt.Errorf("-proxy: %w", err))
		}
		auth, err := parseProxyAuth(c.ProxyAuth)
		if err != nil {
			errs = append(errs, fmt.Errorf("-proxy-auth: %w", err))
		}
		c.auth = auth
	default:
		errs = append(errs, fmt.Errorf("-kind %q: want connect, http, socks5, cache, inspect or direct", c.Kind))
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
		"-post-requests-1k": int64(c.PostRequests1K), "-post-requests-1m": int64(c.PostRequests1M), "-held-uploads": int64(c.HeldUploads),
		"-inspect-sessions": int64(c.InspSessions), "-inspect-requests": int64(c.InspRequests), "-inspect-bulk-bytes": c.InspBulkBytes,
	} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.HeldUploads > 1000 {
		errs = append(errs, errors.New("-held-uploads above 1000 would hold more than a GiB in the proxy"))
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
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancelT()

	var pki *benchPKI
	if cfg.PKI != "" {
		if pki, err = loadPKI(cfg.PKI); err != nil {
			return err
		}
	}
	o, err := startOrigins(originConfig{
		IP: cfg.originIP, BulkAddr: cfg.BulkAddr, EchoAddr: cfg.EchoAddr, HTTPAddr: cfg.HTTPAddr,
		TLSAddr: cfg.TLSAddr, DNSAddr: cfg.DNSListen, Name: cfg.Name,
		copyBuf: cfg.CopyBuf, dnsTTL: 300, handshake: cfg.Timeout, pki: pki,
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
		d:    &dialer{kind: tunnelKind(cfg.Kind), proxy: cfg.Proxy, timeout: cfg.Timeout, nd: net.Dialer{Timeout: cfg.Timeout}},
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
	if pki != nil {
		// Inspected sessions: the proxy's leaves are trusted through the
		// inspection root, as clients of a proxy that inspects are set up.
		b.inspectTLS = &tls.Config{ServerName: cfg.Name, RootCAs: pki.inspectRoots, MinVersion: tls.VersionTLS12}
	}
	for range 8 {
		b.bufs = append(b.bufs, make([]byte, cfg.CopyBuf))
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
		return b.runTunnels(ctx, "tunnels", nil, b.cfg.Tunnels, b.cfg.TunnelTime, b.cfg.Conc, 0)
	case "tunnels_paced":
		return b.runTunnels(ctx, "tunnels_paced", nil, paced(b.cfg.PacedTunnelRate, b.cfg.PacedTime), b.cfg.PacedTime+pacedSlack, b.cfg.PacedConc, b.cfg.PacedTunnelRate)
	case "tls_tunnels":
		return b.runTunnels(ctx, "tls_tunnels", b.tls, b.cfg.TLSTunnels, b.cfg.TLSTime, b.cfg.Conc, 0)
	case "tls_tunnels_paced":
		return b.runTunnels(ctx, "tls_tunnels_paced", b.tls, paced(b.cfg.PacedTLSRate, b.cfg.PacedTime), b.cfg.PacedTime+pacedSlack, b.cfg.PacedConc, b.cfg.PacedTLSRate)
	case "inspect_sessions":
		return b.runTunnels(ctx, s, b.inspectTLS, b.cfg.InspSessions, b.cfg.InspTime, b.cfg.Conc, 0)
	case "inspect_requests":
		return b.runInspectRequests(ctx)
	case "inspect_bulk":
		return b.runInspectBulk(ctx)
	case "bulk_up_1":
		return b.runBulk(ctx, true, 1)
	case "bulk_up_8":
		return b.runBulk(ctx, true, 8)
	case "bulk_down_1":
		return b.runBulk(ctx, false, 1)
	case "bulk_down_8":
		return b.runBulk(ctx, false, 8)
	case "forward":
		return b.runForward(ctx, "forward", b.cfg.FwdRequests, b.cfg.FwdTime, b.cfg.Conc, 0)
	case "forward_paced":
		return b.runForward(ctx, "forward_paced", paced(b.cfg.PacedFwdRate, b.cfg.PacedTime), b.cfg.PacedTime+pacedSlack, b.cfg.PacedConc, b.cfg.PacedFwdRate)
	case "cache_hit_1k":
		return b.runCache(ctx, s, cacheSmall, true)
	case "cache_hit_1m":
		return b.runCache(ctx, s, cacheLarge, true)
	case "cache_miss_1k":
		return b.runCache(ctx, s, cacheSmall, false)
	case "cache_miss_1m":
		return b.runCache(ctx, s, cacheLarge, false)
	case "post_1k":
		return b.runPost(ctx, "post_1k", 1<<10, b.cfg.PostRequests1K)
	case "post_1m":
		return b.runPost(ctx, "post_1m", 1<<20, b.cfg.PostRequests1M)
	case "dlp_held":
		return b.runHeld(ctx, 1<<20)
	}
	return fmt.Errorf("unknown scenario %q", s)
}

// pacedSlack is how far past its nominal length a paced scenario may run
// before its time bound stops it (a proxy that falls behind the rate).
const pacedSlack = 5 * time.Second

// paced is the operation count of a paced scenario: rate for d.
func paced(rate float64, d time.Duration) int {
	return max(1, int(rate*d.Seconds()))
}

// portsMain is the ports subcommand: it prints n currently free ports
// (TCP and UDP) on a loopback IP, for scripts that must write proxy configs
// before the origins start. The ports lie outside the kernel's ephemeral
// range: the benchmark opens tens of thousands of client connections, and one
// of them could otherwise take a proxy's port as its source port while that
// proxy is restarting between runs.
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
	if err := loopbackOnly(net.JoinHostPort(*ip, "0")); err != nil {
		return err
	}
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if lo2, hi2, err := parsePortRange(b); err == nil {
			lo, hi = lo2, hi2
		}
	}
	ports, err := freePorts(*ip, *n, outsideRange(lo, hi))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, strings.Trim(fmt.Sprint(ports), "[]"))
	return err
}

// parsePortRange parses /proc/sys/net/ipv4/ip_local_port_range.
func parsePortRange(b []byte) (lo, hi int, err error) {
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("port range %q: want two numbers", b)
	}
	if lo, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, err
	}
	if hi, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, err
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("port range %q: out of bounds", b)
	}
	return lo, hi, nil
}

// outsideRange returns the candidate ports for freePorts: 10000 up to the
// ephemeral range, and above it, whichever is larger.
func outsideRange(lo, hi int) [2]int {
	below := [2]int{10000, lo - 1}
	above := [2]int{hi + 1, 65535}
	if below[1]-below[0] >= above[1]-above[0] {
		return below
	}
	return above
}

// freePorts picks n distinct ports in r that are free on ip for both TCP and
// UDP (the DNS server takes both), trying at most 2,000 candidates.
func freePorts(ip string, n int, r [2]int) ([]int, error) {
	if r[1]-r[0] < n {
		return nil, fmt.Errorf("no room for %d ports in %d-%d", n, r[0], r[1])
	}
	var ports []int
	for try := 0; len(ports) < n && try < 2000; try++ {
		p := r[0] + rand.IntN(r[1]-r[0]+1)
		if slices.Contains(ports, p) {
			continue
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		pc.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found only %d free ports in %d-%d", len(ports), r[0], r[1])
	}
	return ports, nil
}
