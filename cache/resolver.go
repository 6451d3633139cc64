package cache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// ErrNotFound is wrapped by the errors [Resolver.LookupNetIP] returns when
// the name does not exist (NXDOMAIN) or has no A or AAAA records (NODATA).
// Test for it with errors.Is.
var ErrNotFound = errors.New("no such host")

// Metric results passed to [ResolverConfig.Metrics]. They are a bounded set,
// fit for a Prometheus label.
const (
	ResultHit         = "hit"          // positive answer served from the cache
	ResultNegativeHit = "negative_hit" // cached not-found answer
	ResultMiss        = "miss"         // asked upstream, got addresses
	ResultNotFound    = "not_found"    // asked upstream, the name has no addresses
	ResultError       = "error"        // the lookup failed (timeout, SERVFAIL, network, bad name)
	ResultStale       = "stale"        // the refresh failed: an expired answer served within StaleTTL
	ResultLiteral     = "literal"      // the host was an IP literal: no lookup
)

// Defaults used when a [ResolverConfig] field is zero.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultSize        = 10000
	DefaultMaxTTL      = 5 * time.Minute
	DefaultNegativeTTL = 5 * time.Second
)

// maxCNAMEChain bounds how many CNAME hops are followed inside one answer.
const maxCNAMEChain = 16

// staleRetry is how long a stale answer is served without asking upstream
// again after a refresh failed: RFC 8767's failure recheck timer (section 5
// suggests 30 seconds), so an outage does not cost every lookup a timeout.
const staleRetry = 30 * time.Second

// ResolverConfig configures a [Resolver]. The zero value reads the servers
// from /etc/resolv.conf, with the defaults above.
type ResolverConfig struct {
	// Servers are DNS servers as "host:port", tried in order. Empty means
	// the system's: the name servers and options of ResolvConf.
	Servers []string

	// ResolvConf is the resolv.conf(5) file read when Servers is empty.
	// Empty means DefaultResolvConf. Its nameserver lines (at most three),
	// and options timeout:, attempts: and rotate are used; search, domain
	// and ndots are not (names are absolute). The file is watched and read
	// again when it changes (see Watch); a reading with no usable server
	// keeps the previous one.
	ResolvConf string

	// Watch, when Servers is empty, re-reads ResolvConf when it changes
	// until Close. False reads it once (for one-shot commands).
	Watch bool

	// Timeout bounds each query to one server. Zero means DefaultTimeout.
	// With servers from resolv.conf, its options timeout: wins when set.
	Timeout time.Duration

	// Size is the maximum number of cached names. Zero means DefaultSize.
	Size int

	// MaxTTL caps how long any answer is cached. Zero means DefaultMaxTTL.
	MaxTTL time.Duration

	// MinTTL is the shortest time a positive answer is cached: answers
	// with a smaller TTL (even 0) are kept this long. Zero means the
	// record TTLs as they are (TTL 0 is never cached).
	MinTTL time.Duration

	// NegativeTTL is how long a not-found answer (NXDOMAIN or NODATA) is
	// cached. Zero means DefaultNegativeTTL; negative disables negative
	// caching.
	NegativeTTL time.Duration

	// StaleTTL is how long past its expiry a positive answer may still be
	// served when the refresh fails (a timeout, SERVFAIL or any error but
	// not-found), as RFC 8767 describes; after a failed refresh the stale
	// answer is served without asking again for staleRetry. Zero disables.
	StaleTTL time.Duration

	// Metrics, when non-nil, is called once per LookupNetIP with one of
	// the Result* constants and the lookup's duration. It must not block.
	Metrics func(result string, d time.Duration)

	// OnResolvConf, when non-nil, is called each time ResolvConf has been
	// read (at start and on every change): with the configuration now in
	// use, or with the error that kept the previous one.
	OnResolvConf func(rc ResolvConf, err error)

	// resolvPort replaces port 53 of resolv.conf's servers (tests).
	resolvPort string
}

// Resolver is a caching DNS resolver. It asks its servers (configured, or
// the system's from resolv.conf) for A and AAAA records in parallel with
// github.com/miekg/dns, honours the records' TTLs, caches negative
// answers, and collapses concurrent lookups of one name into one query
// pair. It satisfies policy.Resolver. It is safe for concurrent use. Create
// it with [NewResolver] and stop it with [Resolver.Close]; the zero value
// is not usable.
type Resolver struct {
	upstream    atomic.Pointer[upstream]
	minTTL      time.Duration
	maxTTL      time.Duration
	negativeTTL time.Duration
	staleTTL    time.Duration
	metrics     func(string, time.Duration)
	rotor       atomic.Uint32 // next first server under options rotate

	cache *TTL[string, answer]
	group singleflight.Group
	watch *resolvWatch // nil: configured servers, or resolv.conf read once

	// waitHook, when non-nil, is called by each caller once it waits for
	// a shared lookup; tests use it to know when callers have joined.
	waitHook func()
}

// upstream is who is asked and how: configured servers, or the system's
// from resolv.conf (swapped whole when the file changes).
type upstream struct {
	servers  []string
	timeout  time.Duration // per query to one server
	attempts int           // rounds over the servers
	rotate   bool
}

// answer is one cached lookup result: addresses, or not-found when empty.
type answer struct {
	addrs   []netip.Addr
	expires time.Time // end of the TTL; later, the answer is stale
	retryAt time.Time // stale only: a refresh failed; do not ask before then
}

// NewResolver returns a Resolver for c. It fails when a server address is
// not "host:port". With no servers it reads c.ResolvConf; a file that
// cannot be read or holds no usable server gives 127.0.0.1:53 (glibc's
// default) until it changes, and the error goes to c.OnResolvConf.
func NewResolver(c ResolverConfig) (*Resolver, error) {
	maxTTL := cmp.Or(c.MaxTTL, DefaultMaxTTL)
	r := &Resolver{
		minTTL:      max(c.MinTTL, 0),
		maxTTL:      maxTTL,
		negativeTTL: cmp.Or(c.NegativeTTL, DefaultNegativeTTL),
		staleTTL:    max(c.StaleTTL, 0),
		metrics:     c.Metrics,
	}
	timeout := cmp.Or(c.Timeout, DefaultTimeout)
	if len(c.Servers) > 0 {
		up := &upstream{timeout: timeout, attempts: 1}
		for _, s := range c.Servers {
			if _, _, err := net.SplitHostPort(s); err != nil {
				return nil, fmt.Errorf("dns server %q: %w", s, err)
			}
			up.servers = append(up.servers, s)
		}
		r.upstream.Store(up)
	} else {
		path := cmp.Or(c.ResolvConf, DefaultResolvConf)
		apply := func(rc ResolvConf, err error) {
			if err == nil && c.resolvPort != "" {
				for i, srv := range rc.Servers {
					host, _, _ := net.SplitHostPort(srv)
					rc.Servers[i] = net.JoinHostPort(host, c.resolvPort)
				}
			}
			if err == nil {
				r.upstream.Store(&upstream{servers: rc.Servers, timeout: cmp.Or(rc.Timeout, timeout),
					attempts: rc.Attempts, rotate: rc.Rotate})
			}
			if c.OnResolvConf != nil {
				c.OnResolvConf(rc, err)
			}
		}
		// glibc's answer to a missing or useless file, until it is fixed.
		r.upstream.Store(&upstream{servers: []string{"127.0.0.1:53"}, timeout: timeout, attempts: resolvDefAttempts})
		rc, err := ReadResolvConf(path)
		apply(rc, err)
		if c.Watch {
			w, err := watchResolvConf(path, apply)
			if err != nil && c.OnResolvConf != nil {
				c.OnResolvConf(ResolvConf{}, err)
			}
			r.watch = w
		}
	}
	// Entries live past their TTL for StaleTTL: the LRU's bound covers both.
	r.cache = NewTTL[string, answer](cmp.Or(c.Size, DefaultSize), maxTTL+r.staleTTL)
	return r, nil
}

// Close stops watching resolv.conf. Lookups keep working with the servers
// last read.
func (r *Resolver) Close() {
	if r.watch != nil {
		r.watch.Close()
		r.watch = nil
	}
}

// Servers returns the servers asked now, in order (before any rotation).
func (r *Resolver) Servers() []string { return slices.Clone(r.upstream.Load().servers) }

// LookupNetIP returns the addresses of host: IPv4 addresses (A records)
// first, then IPv6 (AAAA), each in answer order, IPv4-mapped addresses
// unmapped and duplicates removed. An IP literal is returned as is
// (unmapped, without zone). A name without addresses yields an error
// wrapping [ErrNotFound]; other failures (timeouts, SERVFAIL, an invalid
// name, ctx) are wrapped errors that do not.
//
// Concurrent lookups of one name share one upstream query pair. A caller
// whose ctx ends stops waiting at once, but the shared lookup goes on,
// detached, for the other callers (as net.Resolver does); it is bounded by
// Timeout per server and ends on its own.
func (r *Resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	start := time.Now()
	addrs, result, err := r.lookup(ctx, host)
	if r.metrics != nil {
		r.metrics(result, time.Since(start))
	}
	return addrs, err
}

func (r *Resolver) lookup(ctx context.Context, host string) ([]netip.Addr, string, error) {
	name := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")); err == nil {
		return []netip.Addr{ip.WithZone("").Unmap()}, ResultLiteral, nil
	}
	if name == "" {
		return nil, ResultError, fmt.Errorf("lookup %q: empty host name", host)
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, ResultError, fmt.Errorf("lookup %q: invalid host name", host)
	}
	var stale *answer
	if a, ok := r.cache.Get(name); ok {
		now := r.cache.clock()
		switch {
		case now.Before(a.expires) && len(a.addrs) == 0:
			return nil, ResultNegativeHit, fmt.Errorf("lookup %s: %w", name, ErrNotFound)
		case now.Before(a.expires):
			return slices.Clone(a.addrs), ResultHit, nil
		case now.Before(a.retryAt):
			// A refresh failed a moment ago: do not wait for another.
			return slices.Clone(a.addrs), ResultStale, nil
		}
		stale = &a // only positive answers outlive their TTL
	}

	// The shared lookup must not die with the first caller's context, or
	// every waiter would fail with it; each query is bounded by the
	// upstream timeout, so the detached lookup ends on its own.
	ch := r.group.DoChan(name, func() (any, error) {
		addrs, err := r.resolve(context.WithoutCancel(ctx), name)
		if err != nil && stale != nil && !errors.Is(err, ErrNotFound) {
			return r.serveStale(name, *stale), nil
		}
		return resolved{addrs: addrs}, err
	})
	if r.waitHook != nil {
		r.waitHook()
	}
	select {
	case <-ctx.Done():
		return nil, ResultError, fmt.Errorf("lookup %s: %w", name, ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			if errors.Is(res.Err, ErrNotFound) {
				return nil, ResultNotFound, res.Err
			}
			return nil, ResultError, res.Err
		}
		v := res.Val.(resolved)
		if v.stale {
			return slices.Clone(v.addrs), ResultStale, nil
		}
		return slices.Clone(v.addrs), ResultMiss, nil
	}
}

// resolved is what one shared lookup hands its callers.
type resolved struct {
	addrs []netip.Addr
	stale bool // the refresh failed; addrs is the expired answer
}

// serveStale keeps an expired answer whose refresh failed for the rest of
// its stale window, not to be refreshed again for staleRetry (RFC 8767).
func (r *Resolver) serveStale(name string, a answer) resolved {
	now := r.cache.clock()
	a.retryAt = now.Add(staleRetry)
	r.cache.Add(name, a, a.expires.Add(r.staleTTL).Sub(now))
	return resolved{addrs: a.addrs, stale: true}
}

// store caches a positive answer for ttl, clamped to [MinTTL, MaxTTL], and
// keeps it StaleTTL longer for serving stale. A ttl of 0 with no MinTTL
// stores nothing.
func (r *Resolver) store(name string, addrs []netip.Addr, ttl time.Duration) {
	ttl = min(max(ttl, r.minTTL), r.maxTTL)
	if ttl <= 0 {
		r.cache.Remove(name)
		return
	}
	r.cache.Add(name, answer{addrs: addrs, expires: r.cache.clock().Add(ttl)}, ttl+r.staleTTL)
}

// storeNotFound caches a not-found answer for NegativeTTL (never stale).
func (r *Resolver) storeNotFound(name string) {
	if r.negativeTTL > 0 {
		r.cache.Add(name, answer{expires: r.cache.clock().Add(r.negativeTTL)}, r.negativeTTL)
	}
}

// resolve asks upstream and fills the cache. It runs once per name at a time.
func (r *Resolver) resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	up := r.upstream.Load()
	type result struct {
		addrs []netip.Addr
		ttl   uint32
		err   error
	}
	aaaa := make(chan result, 1)
	go func() {
		addrs, ttl, err := r.query(ctx, up, name, dns.TypeAAAA)
		aaaa <- result{addrs, ttl, err}
	}()
	a4, ttl4, err4 := r.query(ctx, up, name, dns.TypeA)
	a6 := <-aaaa

	nf4, nf6 := errors.Is(err4, ErrNotFound), errors.Is(a6.err, ErrNotFound)
	switch {
	case nf4 && nf6:
		r.storeNotFound(name)
		return nil, fmt.Errorf("lookup %s: %w", name, ErrNotFound)
	case err4 != nil && !nf4 && a6.err != nil && !nf6,
		err4 != nil && !nf4 && len(a6.addrs) == 0,
		a6.err != nil && !nf6 && len(a4) == 0:
		// One family failed and the other gave nothing: a failure, not a
		// not-found, even when the other said NODATA (an IPv4-only name
		// whose A query timed out), so a stale answer can still be served.
		return nil, fmt.Errorf("lookup %s: %w", name, errors.Join(failure(err4), failure(a6.err)))
	}

	addrs := dedupe(append(a4, a6.addrs...))
	var ttl time.Duration
	switch {
	case len(a4) > 0 && len(a6.addrs) > 0:
		ttl = time.Duration(min(ttl4, a6.ttl)) * time.Second
	case len(a4) > 0:
		ttl = time.Duration(ttl4) * time.Second
	default:
		ttl = time.Duration(a6.ttl) * time.Second
	}
	if err4 != nil && !nf4 || a6.err != nil && !nf6 {
		// One family failed: serve the other, but ask again soon.
		if r.negativeTTL <= 0 {
			return addrs, nil
		}
		ttl = min(max(ttl, r.minTTL), r.negativeTTL)
	}
	r.store(name, addrs, ttl)
	return addrs, nil
}

// failure is err with ErrNotFound no longer in its chain (its text kept),
// for a lookup that failed as a whole.
func failure(err error) error {
	if errors.Is(err, ErrNotFound) {
		return errors.New(err.Error())
	}
	return err
}

// query asks the servers for one record type until one gives an
// authoritative answer: addresses, NXDOMAIN or NODATA. It goes through the
// servers in order (from a rotating start under options rotate), up to
// up.attempts rounds, and returns the addresses and the smallest TTL along
// the answer chain.
func (r *Resolver) query(ctx context.Context, up *upstream, name string, qtype uint16) ([]netip.Addr, uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	n := len(up.servers)
	first := 0
	if up.rotate && n > 1 {
		first = int(r.rotor.Add(1) % uint32(n))
	}
	var errs []error
	for range max(up.attempts, 1) {
		for i := range n {
			server := up.servers[(first+i)%n]
			resp, err := r.exchange(ctx, up.timeout, m, server)
			if err != nil {
				errs = append(errs, err)
				if ctx.Err() != nil {
					return nil, 0, errors.Join(errs...)
				}
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess:
				addrs, ttl := extract(resp, dns.Fqdn(name), qtype)
				if len(addrs) == 0 {
					return nil, 0, fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], server, ErrNotFound)
				}
				return addrs, ttl, nil
			case dns.RcodeNameError:
				return nil, 0, fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], server, ErrNotFound)
			default:
				errs = append(errs, fmt.Errorf("%s %s: server answered %s", dns.TypeToString[qtype], server, dns.RcodeToString[resp.Rcode]))
			}
		}
	}
	return nil, 0, errors.Join(errs...)
}

// exchange sends m to server over UDP, and again over TCP when the UDP
// answer is truncated. Each attempt is bounded by timeout.
func (r *Resolver) exchange(ctx context.Context, timeout time.Duration, m *dns.Msg, server string) (*dns.Msg, error) {
	qtype := dns.TypeToString[m.Question[0].Qtype]
	resp, err := exchangeNet(ctx, timeout, "udp", m, server)
	if err == nil && resp.Truncated {
		resp, err = exchangeNet(ctx, timeout, "tcp", m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", qtype, server, err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) || resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, fmt.Errorf("%s %s: answer for another question", qtype, server)
	}
	return resp, nil
}

func exchangeNet(ctx context.Context, timeout time.Duration, network string, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: timeout, UDPSize: 1232}
	resp, _, err := c.ExchangeContext(ctx, m.Copy(), server)
	return resp, err
}

// extract follows the CNAME chain from qname through the answer section
// and returns the qtype addresses of its final name, with the smallest TTL
// seen along the chain.
func extract(resp *dns.Msg, qname string, qtype uint16) ([]netip.Addr, uint32) {
	cur := qname
	ttl := uint32(1<<32 - 1)
	for range maxCNAMEChain {
		var addrs []netip.Addr
		next := ""
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				if qtype != dns.TypeA {
					continue
				}
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					addrs = append(addrs, a)
					ttl = min(ttl, h.Ttl)
				}
			case *dns.AAAA:
				if qtype != dns.TypeAAAA {
					continue
				}
				if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
					addrs = append(addrs, a.Unmap())
					ttl = min(ttl, h.Ttl)
				}
			case *dns.CNAME:
				if next == "" {
					next = v.Target
					ttl = min(ttl, h.Ttl)
				}
			}
		}
		if len(addrs) > 0 {
			return addrs, ttl
		}
		if next == "" {
			return nil, 0
		}
		cur = next
	}
	return nil, 0
}

func dedupe(addrs []netip.Addr) []netip.Addr {
	out := addrs[:0:0]
	for _, a := range addrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
