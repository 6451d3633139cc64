package proxy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/egressd/egressd/cache"
	"github.com/egressd/egressd/cache/httpcache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/admin"
	"github.com/egressd/egressd/proxy/auth"
	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/proxy/dlp"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/forward"
	"github.com/egressd/egressd/proxy/inspect"
	"github.com/egressd/egressd/proxy/limits"
	"github.com/egressd/egressd/proxy/origdst"
	"github.com/egressd/egressd/proxy/socks"
	"github.com/egressd/egressd/proxy/transparent"
	"github.com/egressd/egressd/proxy/tunnel"
	"github.com/egressd/egressd/proxy/upstream"
)

// Options are what main hands the server besides the config.
type Options struct {
	Diag   *zap.Logger // diagnostics (stderr)
	Access *zap.Logger // access log (stdout); nil when log.access is off
	// Registry receives egressd's metrics. Nil: a fresh registry.
	Registry *prometheus.Registry
	// Version is the binary's version, for egressd_build_info and the
	// status page. Empty: "dev".
	Version string
}

// Server is one egressd instance.
type Server struct {
	diag     *zap.Logger
	reg      *prometheus.Registry
	metrics  *accesslog.Metrics
	access   *accesslog.Logger
	engine   *policy.Engine
	resolver *cache.Resolver
	dialer   *egress.Dialer
	parents  *upstream.Dialer // upstream_proxies
	tunnels  *egress.Registry
	forward  *forward.Handler
	inspect  *inspect.Server // terminates the tunnels of rules with inspect
	socks    *socks.Server
	runner   *tunnel.Runner
	dlp      *dlp.Engine
	limits   *limits.Limiter // client connection limits and counts (HTTP and SOCKS5 listeners)

	auth  *auth.Authenticator // nil: auth.users_file unset
	cache *httpcache.Cache    // nil: cache.http.max_bytes is 0

	// The status page's state (nil stats: listen.admin unset).
	version    string
	started    time.Time
	stats      *admin.Stats
	loaded     atomic.Pointer[loadedConfig]
	lastReload atomic.Pointer[admin.Reload]
	listeners  []admin.Listener // bound addresses, set by Start
	stop       chan struct{}    // closed by Close: stops the stats sampler
	stopOnce   sync.Once

	cfg       atomic.Pointer[config.Config]
	listening atomic.Bool
	draining  atomic.Bool

	// The listeners' accept pipelines, each handing its connections to
	// its front end (nil: listener not configured).
	httpAcc, socksAcc *accept.Server
	transparentAcc    *accept.Server
	adminSrv          *http.Server
	httpLn, socksLn   net.Listener
	transparentLn     net.Listener // listen.transparent (in-line mode)
	adminLn           net.Listener
	wg                sync.WaitGroup
}

// New builds a server from a validated config and its compiled policy.
func New(cfg *config.Config, pol *policy.Policy, raw []byte, o Options) (*Server, error) {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s := &Server{diag: o.Diag, reg: o.Registry, version: cmp.Or(o.Version, "dev"), started: time.Now(), stop: make(chan struct{})}
	s.metrics = accesslog.NewMetrics(o.Registry)
	s.metrics.SetBuild(s.version)
	s.access = accesslog.NewLogger(o.Access, s.metrics)
	s.access.SetTunnelOpen(cfg.Log.TunnelOpen)
	if cfg.Listen.Admin != "" {
		// The status page's recent denials and top hosts are fed by the
		// access log's terminal event, like the metrics.
		s.stats = admin.NewStats(o.Registry)
		s.access.SetObserver(s.stats)
	}
	var err error
	dnsLog := o.Diag.Named("dns")
	s.resolver, err = cache.NewResolver(cache.ResolverConfig{
		Servers:     cfg.DNS.Servers,
		Watch:       true,
		Timeout:     cfg.DNS.Timeout,
		Size:        cfg.DNS.CacheSize,
		MinTTL:      cfg.DNS.MinTTL,
		MaxTTL:      cfg.DNS.MaxTTL,
		NegativeTTL: cfg.DNS.NegativeTTL,
		StaleTTL:    cfg.DNS.StaleTTL,
		Metrics:     s.metrics.ObserveDNS,
		OnResolvConf: func(rc cache.ResolvConf, err error) {
			if err != nil {
				dnsLog.Warn("resolv.conf not usable; the name servers read before stay", zap.Error(err))
				return
			}
			dnsLog.Info("name servers from resolv.conf", zap.Strings("servers", rc.Servers),
				zap.Duration("timeout", rc.Timeout), zap.Int("attempts", rc.Attempts), zap.Bool("rotate", rc.Rotate))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	s.engine = policy.NewEngine(pol, s.resolver)
	// No TCP keep-alive upstream either (see listenTCP): timeouts.idle
	// ends tunnels whose peer vanished.
	s.parents = &upstream.Dialer{Resolver: s.resolver, Observe: s.metrics.ObserveUpstream}
	s.parents.Store(upstreamSet(cfg))
	s.metrics.SetUpstreamProxies(upstreamNames(cfg))
	s.dialer = &egress.Dialer{Timeout: cfg.Timeouts.Connect, KeepAlive: -1, Observe: s.metrics.ObserveDial, Upstream: s.parents}
	s.tunnels = egress.NewRegistry()
	s.cfg.Store(cfg)
	s.setConfig(raw)
	s.metrics.SetRules(ruleNames(cfg))
	s.limits = limits.New(connLimits(cfg), s.metrics)

	s.runner = &tunnel.Runner{
		Registry:  s.tunnels,
		Metrics:   s.metrics,
		Handshake: cfg.Timeouts.Handshake,
		Idle:      cfg.Timeouts.Idle,
		MaxTunnel: cfg.Timeouts.MaxTunnel,
	}
	// Both front ends check credentials against one users file; with no
	// file their Auth hooks stay nil and every client is anonymous.
	var verify func(user, pass string) bool
	var verifyHeader func(header string) (string, bool)
	if cfg.Auth.UsersFile != "" {
		users, err := auth.Load(cfg.Auth.UsersFile)
		if err != nil {
			s.resolver.Close()
			return nil, fmt.Errorf("auth: %w", err)
		}
		s.auth = auth.New(users, cache.NewAuthCache(authCacheSize, cfg.Auth.CacheTTL), cache.NewAuthCache(authCacheSize, cfg.Auth.CacheTTL))
		s.auth.Observe = s.metrics.ObserveAuth
		s.auth.SetCheckLimit(authCheckLimit(cfg), cfg.Timeouts.Handshake)
		verify, verifyHeader = s.auth.Verify, s.auth.VerifyHeader
	}
	rules, err := dlp.Compile(cfg.DLP.Rules())
	if err != nil {
		s.resolver.Close()
		return nil, fmt.Errorf("dlp: %w", err)
	}
	// The CA of inspected tunnels: its key file readable by its owner
	// only, or egressd does not start (the error names the key).
	material, err := inspect.Load(cfg.TLSInspection.Inspect(), s.metrics.InspectLeafIssued)
	if err != nil {
		s.resolver.Close()
		return nil, err
	}
	s.dlp = dlp.NewEngine(rules)
	s.dlp.OnICAPState = func(up bool, err error) {
		if up {
			s.diag.Info("dlp: the ICAP service answers again")
			return
		}
		s.diag.Warn("dlp: the ICAP service fails; dlp.icap.failure decides until it answers again", zap.Error(err))
	}
	s.metrics.SetDLPDetectors(rules.Detectors())
	// A connection past a limit is refused within this, at each step.
	refuse := min(cfg.Timeouts.Handshake, 2*time.Second)
	s.socks = socks.New(socks.Options{
		Decider:       s.engine,
		Dialer:        s.dialer,
		Log:           s.access,
		Runner:        s.runner,
		Diag:          o.Diag.Named("socks5"),
		Handshake:     cfg.Timeouts.Handshake,
		RefuseTimeout: refuse,
		Auth:          verify,
		AuthRequired:  cfg.Auth.Required,
	})
	if hc := cfg.Cache.HTTP; hc.MaxBytes > 0 {
		s.cache = httpcache.New(httpcache.Options{
			MaxBytes:        int64(hc.MaxBytes),
			MaxObjectBytes:  int64(hc.MaxObjectBytes),
			CollapseTimeout: hc.CollapseTimeout,
			Observer:        s.metrics.HTTPCache(),
		})
	}
	s.forward = forward.New(forward.Options{
		Decider:                s.engine,
		Dialer:                 s.dialer,
		Log:                    s.access,
		Diag:                   o.Diag.Named("http"),
		Runner:                 s.runner,
		Handshake:              cfg.Timeouts.Handshake,
		RefuseTimeout:          refuse,
		MaxHeaderBytes:         int(cfg.Limits.MaxHeaderBytes),
		MaxResponseHeaderBytes: int64(cfg.Limits.MaxResponseHeaderBytes),
		Idle:                   cfg.Timeouts.Idle,
		Auth:                   verifyHeader,
		AuthRequired:           cfg.Auth.Required,
		DLP:                    s.dlp,
		Cache:                  s.cache,
		UpstreamTLS:            func(name string) *tls.Config { return s.inspect.UpstreamTLS(name) },
	})
	// Inspected tunnels: their requests take the forwarded chain.
	s.inspect = inspect.New(material, inspect.Options{
		Chain:           http.HandlerFunc(s.forward.ServeInspected),
		Diag:            o.Diag.Named("inspect"),
		Handshake:       cfg.Timeouts.Handshake,
		Idle:            cfg.Timeouts.Idle,
		MaxHeaderBytes:  int(cfg.Limits.MaxHeaderBytes),
		HandshakeResult: s.metrics.InspectHandshake,
	})
	s.runner.Inspector = s.inspect
	return s, nil
}

// authCacheSize bounds each verification cache, successes and failures
// (distinct credentials remembered at once).
const authCacheSize = 10000

// authCheckLimit is auth.max_concurrent_checks, 0 meaning one check per CPU
// Go uses: bcrypt keeps a core busy, so more at once only queue in the
// scheduler and take cores from the tunnels.
func authCheckLimit(cfg *config.Config) int {
	if n := cfg.Auth.MaxConcurrentChecks; n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// acceptOptions are a listener's accept pipeline: the shared limits, and
// PROXY headers from listen.trusted_proxies when listen.proxy_protocol is
// on.
func (s *Server) acceptOptions(cfg *config.Config, name string, socket policy.Listener) accept.Options {
	return accept.Options{
		Listener:      socket,
		Limits:        s.limits,
		ProxyProtocol: cfg.Listen.ProxyProtocol,
		Trusted:       cfg.Listen.TrustedProxies,
		HeaderTimeout: cfg.Timeouts.Handshake,
		Diag:          s.diag.Named(name),
		OnPanic:       s.metrics.CountPanic,
	}
}

func connLimits(cfg *config.Config) limits.Limits {
	return limits.Limits{
		MaxConnections:          cfg.Limits.MaxConnections,
		MaxConnectionsPerClient: cfg.Limits.MaxConnectionsPerClient,
	}
}

// upstreamSet is the config's parent proxies, ready to dial. The config
// was validated: every URL parses.
func upstreamSet(cfg *config.Config) *upstream.Set {
	ps := make([]upstream.Parent, 0, len(cfg.UpstreamProxies))
	for name, u := range cfg.UpstreamProxies {
		p := upstream.Parent{Name: name, Username: u.Username, Password: u.Password(), ConnectTimeout: u.ConnectTimeout}
		for _, raw := range u.URLs {
			if hp, err := config.ParseUpstreamURL(raw); err == nil {
				p.Addrs = append(p.Addrs, hp)
			}
		}
		ps = append(ps, p)
	}
	return upstream.NewSet(ps)
}

func upstreamNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.UpstreamProxies))
	for name := range cfg.UpstreamProxies {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func ruleNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Policy.Rules))
	for _, r := range cfg.Policy.Rules {
		names = append(names, r.Name)
	}
	return names
}

func configHash(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// loadedConfig is the config file in force: its sha256 and when it was
// loaded.
type loadedConfig struct {
	sha string
	at  time.Time
}

// setConfig records the config file raw as the one in force, for the
// metrics and the status page.
func (s *Server) setConfig(raw []byte) {
	sha := configHash(raw)
	s.loaded.Store(&loadedConfig{sha: sha, at: time.Now()})
	s.metrics.SetConfig(sha)
}

// status is what the status page shows of the server.
func (s *Server) status() admin.Status {
	cfg := s.cfg.Load()
	st := admin.Status{Version: s.version, Started: s.started, Listeners: s.listeners}
	if lc := s.loaded.Load(); lc != nil {
		st.ConfigSHA, st.Loaded = lc.sha, lc.at
	}
	if r := s.lastReload.Load(); r != nil {
		st.Reload = *r
	}
	if pol := s.engine.Load(); pol != nil {
		st.Mode = pol.Mode()
	}
	// The config and the policy are swapped together on reload; the
	// config, validated, says what each group and rule is.
	for _, name := range slices.Sorted(maps.Keys(cfg.Policy.Groups)) {
		mode := cfg.Policy.Groups[name].Mode
		if mode == "" {
			mode = cmp.Or(cfg.Policy.Mode, policy.ModeEnforce)
		}
		st.Groups = append(st.Groups, admin.Group{Name: name, Mode: mode, Own: cfg.Policy.Groups[name].Mode != ""})
	}
	for _, r := range cfg.Policy.Rules {
		st.Rules = append(st.Rules, admin.Rule{Name: r.Name, Action: cmp.Or(r.Action, policy.ActionAllow)})
	}
	return st
}

// Engine returns the decision engine (shared by every front end).
func (s *Server) Engine() *policy.Engine { return s.engine }

// Start binds every configured listener and serves in the background.
// A listener that cannot bind is an error and nothing is left running.
func (s *Server) Start() error {
	cfg := s.cfg.Load()
	var err error
	if cfg.Listen.HTTP != "" {
		if s.httpLn, err = listenTCP(cfg.Listen.HTTP); err != nil {
			s.abortStart()
			return fmt.Errorf("listen.http: %w", err)
		}
	}
	if cfg.Listen.SOCKS5 != "" {
		if s.socksLn, err = listenTCP(cfg.Listen.SOCKS5); err != nil {
			s.abortStart()
			return fmt.Errorf("listen.socks5: %w", err)
		}
	}
	if cfg.Listen.Admin != "" {
		if s.adminLn, err = listenTCP(cfg.Listen.Admin); err != nil {
			s.abortStart()
			return fmt.Errorf("listen.admin: %w", err)
		}
	}
	if cfg.Listen.Transparent != "" {
		if s.transparentLn, err = s.listenTransparent(cfg.Listen.Transparent); err != nil {
			s.abortStart()
			return fmt.Errorf("listen.transparent: %w", err)
		}
	}
	// Each proxy listener runs one accept pipeline (limits, PROXY header)
	// that hands its connections to the listener's front end; the admin
	// listener is plain net/http (load balancer health checks carry no
	// PROXY header). Tunnels whose rule inspects them are served by the
	// inspected tunnels' server, which runs before any client comes.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.inspect.Run(); err != nil {
			s.diag.Error("inspected tunnels' server stopped", zap.Error(err))
		}
	}()
	if s.httpLn != nil {
		s.httpAcc = accept.Serve(s.httpLn, s.forward, s.acceptOptions(cfg, "http", policy.ListenerHTTP))
	}
	if s.httpLn != nil || s.transparentLn != nil {
		// net/http serves the HTTP listener's absolute-URI requests and
		// the in-line mode's http_ports connections.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.forward.Run(); err != nil {
				s.diag.Error("http server stopped", zap.Error(err))
			}
		}()
	}
	if s.socksLn != nil {
		s.socksAcc = accept.Serve(s.socksLn, s.socks, s.acceptOptions(cfg, "socks5", policy.ListenerSOCKS5))
	}
	if s.transparentLn != nil {
		var own []netip.AddrPort
		for _, ln := range []net.Listener{s.httpLn, s.socksLn, s.adminLn, s.transparentLn} {
			if ta, ok := ln.(*net.TCPListener); ok {
				own = append(own, ta.Addr().(*net.TCPAddr).AddrPort())
			}
		}
		fe := transparent.New(transparent.Options{
			Decider:   s.engine,
			Policy:    s.engine.Load,
			Dialer:    s.dialer,
			Log:       s.access,
			Runner:    s.runner,
			HTTP:      s.forward,
			Own:       own,
			Handshake: cfg.Timeouts.Handshake,
			Diag:      s.diag.Named("transparent"),
		})
		o := s.acceptOptions(cfg, "transparent", policy.ListenerTransparent)
		// Redirected clients send no PROXY header: the kernel hands their
		// own connections over.
		o.ProxyProtocol, o.Trusted = false, nil
		s.transparentAcc = accept.Serve(s.transparentLn, fe, o)
	}
	for _, l := range []struct {
		name string
		ln   net.Listener
	}{{"http", s.httpLn}, {"socks5", s.socksLn}, {"transparent", s.transparentLn}, {"admin", s.adminLn}} {
		if l.ln != nil {
			s.listeners = append(s.listeners, admin.Listener{Name: l.name, Addr: l.ln.Addr().String()})
		}
	}
	errLog := zap.NewStdLog(s.diag.Named("http-server"))
	if s.adminLn != nil {
		s.adminSrv = &http.Server{
			Handler: admin.Handler(admin.Options{
				Gatherer: s.reg,
				Ready:    s.ready,
				Pprof:    func() bool { return s.cfg.Load().Admin.Pprof },
				UI:       func() bool { return s.cfg.Load().Admin.UI },
				UIHosts:  func() []string { return s.cfg.Load().Admin.UIHosts },
				Stats:    s.stats,
				Decider:  s.engine,
				Status:   s.status,
			}),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          errLog,
		}
		s.serve(s.adminSrv, s.adminLn)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.stats.Run(s.stop)
		}()
	}
	s.dlp.Start()
	s.listening.Store(true)
	s.diag.Info("egressd serving",
		zap.String("http", cfg.Listen.HTTP), zap.String("socks5", cfg.Listen.SOCKS5), zap.String("admin", cfg.Listen.Admin),
		zap.String("transparent", cfg.Listen.Transparent),
		zap.String("mode", s.engine.Load().Mode()))
	return nil
}

// listenTransparent binds listen.transparent. The socket is made
// IP_TRANSPARENT when egressd may (CAP_NET_RAW or CAP_NET_ADMIN), so that
// it serves nftables tproxy as well as redirect; without the capability it
// serves redirect only, which is the shipped rules' default.
func (s *Server) listenTransparent(addr string) (net.Listener, error) {
	ln, err := origdst.Listen(context.Background(), addr, true)
	if errors.Is(err, syscall.EPERM) {
		s.diag.Info("listen.transparent: no CAP_NET_RAW, so the listener serves nftables redirect only (not tproxy)")
		ln, err = origdst.Listen(context.Background(), addr, false)
	}
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// listenTCP listens without TCP keep-alive on accepted conns: Go enables it
// by default, at four setsockopt calls per connection. Dead peers of idle
// tunnels are reaped by timeouts.idle instead.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	// Plain TCP: Go listens with MPTCP by default since 1.24, which puts
	// every accept through the MPTCP layer only to fall back to TCP for
	// the clients and load balancers a proxy farm has.
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.diag.Error("listener stopped", zap.String("addr", ln.Addr().String()), zap.Error(err))
		}
	}()
}

func (s *Server) ready() (bool, string) {
	switch {
	case s.draining.Load():
		return false, "draining"
	case !s.listening.Load():
		return false, "starting"
	case s.engine.Load() == nil:
		return false, "no policy"
	}
	return true, ""
}

// Reload swaps in a new, already validated policy. Established tunnels keep
// the decision they were made with; new requests see the new policy. The
// users file is read again; if it does not load, nothing is swapped: the
// old config keeps serving and the error is returned.
func (s *Server) Reload(cfg *config.Config, pol *policy.Policy, raw []byte) error {
	old := s.cfg.Load()
	if keys := restartOnly(old, cfg); len(keys) > 0 {
		s.diag.Warn("config keys changed that take effect only after a restart (listener addresses are not hot-swappable); the running values stay",
			zap.Strings("keys", keys))
	}
	// The users file and the dlp section are the parts of a reload that
	// can still fail: prepare them before anything is swapped.
	rules, err := dlp.Compile(cfg.DLP.Rules())
	if err != nil {
		s.ReloadFailed()
		return fmt.Errorf("dlp: %w", err)
	}
	// tls_inspection's files are read again: a CA key that became
	// readable by others, or a file that does not load, refuses the
	// reload.
	material, err := inspect.Load(cfg.TLSInspection.Inspect(), s.metrics.InspectLeafIssued)
	if err != nil {
		s.ReloadFailed()
		return err
	}
	if s.auth != nil && cfg.Auth.UsersFile != "" {
		users, err := auth.Load(cfg.Auth.UsersFile)
		if err != nil {
			s.ReloadFailed()
			return fmt.Errorf("auth: %w", err)
		}
		s.auth.SetUsers(users)
		s.auth.SetCheckLimit(authCheckLimit(cfg), s.runner.Handshake)
	}
	// The parents first: a request decided under the new policy must find
	// the parent its rule names.
	s.parents.Store(upstreamSet(cfg))
	s.metrics.SetUpstreamProxies(upstreamNames(cfg))
	s.engine.Store(pol)
	s.inspect.Store(material)
	s.dlp.Store(rules)
	s.metrics.SetDLPDetectors(rules.Detectors())
	s.cfg.Store(cfg)
	s.limits.SetLimits(connLimits(cfg))
	s.runner.SetTimeouts(cfg.Timeouts.Idle, cfg.Timeouts.MaxTunnel)
	s.dialer.SetTimeout(cfg.Timeouts.Connect)
	s.access.SetTunnelOpen(cfg.Log.TunnelOpen)
	s.forward.Reload(cfg.Timeouts.Idle)
	s.setConfig(raw)
	s.metrics.SetRules(ruleNames(cfg))
	s.metrics.Reloads.WithLabelValues("success").Inc()
	s.lastReload.Store(&admin.Reload{Time: time.Now(), Result: "success"})
	return nil
}

// ReloadFailed counts a rejected reload; the old policy keeps serving.
func (s *Server) ReloadFailed() {
	s.metrics.Reloads.WithLabelValues("error").Inc()
	s.lastReload.Store(&admin.Reload{Time: time.Now(), Result: "error"})
}

// Drain stops the instance gracefully: /readyz turns 503 at once; after
// timeouts.drain_delay the listeners close; in-flight requests and tunnels
// get up to timeouts.drain; then everything left is cut. Cancelling ctx cuts
// at once (a second SIGTERM).
func (s *Server) Drain(ctx context.Context) {
	cfg := s.cfg.Load()
	s.draining.Store(true)
	s.metrics.SetDraining(true)
	s.diag.Info("draining", zap.Duration("drain_delay", cfg.Timeouts.DrainDelay),
		zap.Duration("drain", cfg.Timeouts.Drain))
	select {
	case <-time.After(cfg.Timeouts.DrainDelay):
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeouts.Drain)
	defer cancel()
	// Stop accepting; let requests, handshakes and tunnels finish. Every
	// client connection is released by whoever ends it (net/http, a front
	// end, the relay), which is what the accept pipelines wait for;
	// http.Server.Shutdown also closes idle keep-alive connections.
	var wg sync.WaitGroup
	wait := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(dctx)
		}()
	}
	if s.httpAcc != nil || s.transparentAcc != nil {
		wait(s.forward.Shutdown)
	}
	if s.httpAcc != nil {
		wait(s.httpAcc.Shutdown)
	}
	if s.transparentAcc != nil {
		wait(s.transparentAcc.Shutdown)
	}
	if s.socksAcc != nil {
		wait(s.socksAcc.Shutdown)
	}
	// Inspected tunnels idle between requests close now; requests in
	// flight get the drain time, then are cut.
	wait(func(ctx context.Context) error {
		if err := s.inspect.Shutdown(ctx); err != nil {
			s.inspect.Close()
		}
		return nil
	})
	wait(s.tunnels.Wait)
	wg.Wait()
	if n, c := s.tunnels.Len(), s.openConns(); n > 0 || c > 0 {
		s.diag.Warn("drain time over: cutting what is left", zap.Int("tunnels", n), zap.Int("client_connections", c))
	}
	s.Close()
}

// Close cuts everything at once.
func (s *Server) Close() {
	s.draining.Store(true)
	s.metrics.SetDraining(true)
	if s.adminSrv != nil {
		s.adminSrv.Close()
	}
	// net/http first, and the inspected tunnels' server: a connection on
	// its way to either must not wait for an Accept that will not come.
	s.forward.Close()
	s.inspect.Close()
	for _, a := range []*accept.Server{s.httpAcc, s.socksAcc, s.transparentAcc} {
		if a != nil {
			a.Close()
		}
	}
	if s.adminLn != nil {
		s.adminLn.Close()
	}
	s.tunnels.CloseAll()
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
	if s.cache != nil {
		s.cache.Close() // background revalidations are bounded
	}
	s.dlp.Close()
	s.resolver.Close()
}

// openConns is the client connections not yet released.
func (s *Server) openConns() int {
	n := 0
	for _, a := range []*accept.Server{s.httpAcc, s.socksAcc, s.transparentAcc} {
		if a != nil {
			n += a.Open()
		}
	}
	return n
}

// abortStart releases what New set up when Start fails.
func (s *Server) abortStart() {
	for _, ln := range []net.Listener{s.httpLn, s.socksLn, s.transparentLn, s.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	s.forward.Close()
	s.dlp.Close()
	s.resolver.Close()
}

// restartOnly lists the keys that differ between a and b and are read only
// at start: listeners, DNS, timeouts.handshake (wired into the servers),
// max_header_bytes, the access log switch and file. The policy, the connection
// limits, admin.pprof, admin.ui, timeouts.connect, timeouts.idle,
// timeouts.max_tunnel (for new tunnels), timeouts.drain,
// timeouts.drain_delay and log.level (the caller's) reload.
func restartOnly(a, b *config.Config) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(a.Listen.HTTP != b.Listen.HTTP, "listen.http")
	add(a.Listen.SOCKS5 != b.Listen.SOCKS5, "listen.socks5")
	add(a.Listen.Admin != b.Listen.Admin, "listen.admin")
	add(a.Listen.Transparent != b.Listen.Transparent, "listen.transparent")
	add(!sameListen(a.Listen, b.Listen) && a.Listen.HTTP == b.Listen.HTTP && a.Listen.SOCKS5 == b.Listen.SOCKS5 &&
		a.Listen.Admin == b.Listen.Admin, "listen.proxy_protocol/trusted_proxies")
	add(!slices.Equal(a.DNS.Servers, b.DNS.Servers) || a.DNS.Timeout != b.DNS.Timeout || a.DNS.CacheSize != b.DNS.CacheSize ||
		a.DNS.MinTTL != b.DNS.MinTTL || a.DNS.MaxTTL != b.DNS.MaxTTL || a.DNS.NegativeTTL != b.DNS.NegativeTTL ||
		a.DNS.StaleTTL != b.DNS.StaleTTL, "dns")
	add(a.Timeouts.Handshake != b.Timeouts.Handshake, "timeouts.handshake")
	add(a.Limits.MaxHeaderBytes != b.Limits.MaxHeaderBytes, "limits.max_header_bytes")
	add(a.Limits.MaxResponseHeaderBytes != b.Limits.MaxResponseHeaderBytes, "limits.max_response_header_bytes")
	add(a.Log.Access != b.Log.Access, "log.access")
	add(a.Log.AccessFile != b.Log.AccessFile, "log.access_file")
	// The users file's contents reload; turning auth on or off does not.
	add((a.Auth.UsersFile == "") != (b.Auth.UsersFile == ""), "auth.users_file (set or unset)")
	add(a.Auth.Required != b.Auth.Required, "auth.required")
	add(a.Auth.CacheTTL != b.Auth.CacheTTL, "auth.cache_ttl")
	add(a.Cache.HTTP != b.Cache.HTTP, "cache.http")
	return keys
}

func sameListen(a, b config.Listen) bool {
	return a.HTTP == b.HTTP && a.SOCKS5 == b.SOCKS5 && a.Admin == b.Admin && a.Transparent == b.Transparent &&
		a.ProxyProtocol == b.ProxyProtocol && slices.Equal(a.TrustedProxies, b.TrustedProxies)
}
