package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/egressd/egressd/cache"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/admin"
	"github.com/egressd/egressd/proxy/config"
	"github.com/egressd/egressd/proxy/egress"
	"github.com/egressd/egressd/proxy/forward"
	"github.com/egressd/egressd/proxy/socks"
	"github.com/egressd/egressd/proxy/tunnel"
)

// Options are what main hands the server besides the config.
type Options struct {
	Diag   *zap.Logger // diagnostics (stderr)
	Access *zap.Logger // access log (stdout); nil when log.access is off
	// Registry receives egressd's metrics. Nil: a fresh registry.
	Registry *prometheus.Registry
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
	tunnels  *egress.Registry
	forward  *forward.Handler
	socks    *socks.Server
	runner   *tunnel.Runner

	cfg       atomic.Pointer[config.Config]
	listening atomic.Bool
	draining  atomic.Bool

	httpSrv  *http.Server
	adminSrv *http.Server
	httpLn   net.Listener
	socksLn  net.Listener
	adminLn  net.Listener
	wg       sync.WaitGroup
}

// New builds a server from a validated config and its compiled policy.
func New(cfg *config.Config, pol *policy.Policy, raw []byte, o Options) (*Server, error) {
	if o.Diag == nil {
		o.Diag = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s := &Server{diag: o.Diag, reg: o.Registry}
	s.metrics = accesslog.NewMetrics(o.Registry)
	s.access = accesslog.NewLogger(o.Access, s.metrics)
	var err error
	s.resolver, err = cache.NewResolver(cache.ResolverConfig{
		Servers:     cfg.DNS.Servers,
		Timeout:     cfg.DNS.Timeout,
		Size:        cfg.DNS.CacheSize,
		MaxTTL:      cfg.DNS.MaxTTL,
		NegativeTTL: cfg.DNS.NegativeTTL,
		Metrics:     s.metrics.ObserveDNS,
	})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	s.engine = policy.NewEngine(pol, s.resolver)
	s.dialer = &egress.Dialer{Timeout: cfg.Timeouts.Connect}
	s.tunnels = egress.NewRegistry()
	s.cfg.Store(cfg)
	s.metrics.SetConfig(configHash(raw))

	s.runner = &tunnel.Runner{
		Registry:  s.tunnels,
		Metrics:   s.metrics,
		Handshake: cfg.Timeouts.Handshake,
		Idle:      cfg.Timeouts.Idle,
		MaxTunnel: cfg.Timeouts.MaxTunnel,
	}
	s.socks = socks.New(socks.Options{
		Decider:   s.engine,
		Dialer:    s.dialer,
		Log:       s.access,
		Runner:    s.runner,
		Diag:      o.Diag.Named("socks5"),
		Handshake: cfg.Timeouts.Handshake,
	})
	s.forward = forward.New(forward.Options{
		Decider:   s.engine,
		Dialer:    s.dialer,
		Log:       s.access,
		Diag:      o.Diag.Named("http"),
		Runner:    s.runner,
		Handshake: cfg.Timeouts.Handshake,
	})
	return s, nil
}

func configHash(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// Engine returns the decision engine (shared by every front end).
func (s *Server) Engine() *policy.Engine { return s.engine }

// Start binds every configured listener and serves in the background.
// A listener that cannot bind is an error and nothing is left running.
func (s *Server) Start() error {
	cfg := s.cfg.Load()
	var err error
	if cfg.Listen.HTTP != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			s.closeListeners()
			return fmt.Errorf("listen.http: %w", err)
		}
	}
	if cfg.Listen.SOCKS5 != "" {
		if s.socksLn, err = net.Listen("tcp", cfg.Listen.SOCKS5); err != nil {
			s.closeListeners()
			return fmt.Errorf("listen.socks5: %w", err)
		}
	}
	if cfg.Listen.Admin != "" {
		if s.adminLn, err = net.Listen("tcp", cfg.Listen.Admin); err != nil {
			s.closeListeners()
			return fmt.Errorf("listen.admin: %w", err)
		}
	}
	errLog := zap.NewStdLog(s.diag.Named("http-server"))
	if s.httpLn != nil {
		s.httpSrv = &http.Server{
			Handler:           s.forward,
			ReadHeaderTimeout: cfg.Timeouts.Handshake,
			IdleTimeout:       cfg.Timeouts.Idle,
			MaxHeaderBytes:    int(cfg.Limits.MaxHeaderBytes),
			ErrorLog:          errLog,
		}
		s.serve(s.httpSrv, s.httpLn)
	}
	if s.socksLn != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.socks.Serve(s.socksLn); err != nil {
				s.diag.Error("socks5 listener stopped", zap.Error(err))
			}
		}()
	}
	if s.adminLn != nil {
		s.adminSrv = &http.Server{
			Handler: admin.Handler(admin.Options{
				Gatherer: s.reg,
				Ready:    s.ready,
				Pprof:    cfg.Admin.Pprof,
			}),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          errLog,
		}
		s.serve(s.adminSrv, s.adminLn)
	}
	s.listening.Store(true)
	s.diag.Info("egressd serving",
		zap.String("http", cfg.Listen.HTTP), zap.String("socks5", cfg.Listen.SOCKS5), zap.String("admin", cfg.Listen.Admin),
		zap.String("mode", s.engine.Load().Mode()))
	return nil
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
// the decision they were made with; new requests see the new policy.
func (s *Server) Reload(cfg *config.Config, pol *policy.Policy, raw []byte) {
	old := s.cfg.Load()
	if !sameListen(old.Listen, cfg.Listen) {
		s.diag.Warn("listener addresses changed in the config; they take effect only after a restart")
	}
	s.engine.Store(pol)
	s.cfg.Store(cfg)
	s.forward.CloseIdleConnections()
	s.metrics.SetConfig(configHash(raw))
	s.metrics.Reloads.WithLabelValues("success").Inc()
}

// ReloadFailed counts a rejected reload; the old policy keeps serving.
func (s *Server) ReloadFailed() { s.metrics.Reloads.WithLabelValues("error").Inc() }

// Drain stops the instance gracefully: /readyz turns 503 at once; after
// timeouts.drain_delay the listeners close; in-flight requests and tunnels
// get up to timeouts.drain; then everything left is cut. Cancelling ctx cuts
// at once (a second SIGTERM).
func (s *Server) Drain(ctx context.Context) {
	cfg := s.cfg.Load()
	s.draining.Store(true)
	s.diag.Info("draining", zap.Duration("drain_delay", cfg.Timeouts.DrainDelay),
		zap.Duration("drain", cfg.Timeouts.Drain))
	select {
	case <-time.After(cfg.Timeouts.DrainDelay):
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeouts.Drain)
	defer cancel()
	var wg sync.WaitGroup
	if s.httpSrv != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.httpSrv.Shutdown(dctx); err != nil {
				s.httpSrv.Close()
			}
		}()
	}
	if s.socksLn != nil {
		s.socksLn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.socks.Shutdown(dctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.tunnels.Wait(dctx)
	}()
	wg.Wait()
	if n := s.tunnels.Len(); n > 0 {
		s.diag.Warn("drain time over: cutting tunnels", zap.Int("tunnels", n))
	}
	s.Close()
}

// Close cuts everything at once.
func (s *Server) Close() {
	s.draining.Store(true)
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
	if s.adminSrv != nil {
		s.adminSrv.Close()
	}
	s.closeListeners()
	s.socks.Shutdown(context.Background())
	s.tunnels.CloseAll()
	s.wg.Wait()
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.httpLn, s.socksLn, s.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

func sameListen(a, b config.Listen) bool {
	return a.HTTP == b.HTTP && a.SOCKS5 == b.SOCKS5 && a.Admin == b.Admin &&
		a.ProxyProtocol == b.ProxyProtocol && slices.Equal(a.TrustedProxies, b.TrustedProxies)
}
