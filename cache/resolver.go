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

// ResolverConfig configures a [Resolver]. The zero value uses the system
// resolver with the defaults above.
type ResolverConfig struct {
	// Servers are DNS servers as "host:port", tried in order. Empty means
	// the system resolver (net.DefaultResolver), whose answers carry no TTL
	// and are therefore cached for SystemTTL only.
	Servers []string

	// Timeout bounds each query to one server. Zero means DefaultTimeout.
	Timeout time.Duration

	// Size is the maximum number of cached names. Zero means DefaultSize.
	Size int

	// MaxTTL caps how long any answer is cached. Zero means DefaultMaxTTL.
	MaxTTL time.Duration

	// NegativeTTL is how long a not-found answer (NXDOMAIN or NODATA) is
	// cached. Zero means DefaultNegativeTTL; negative disables negative
	// caching.
	NegativeTTL time.Duration

	// SystemTTL is how long answers of the system resolver are cached
	// when Servers is empty. Zero means they are not cached.
	SystemTTL time.Duration

	// Metrics, when non-nil, is called once per LookupNetIP with one of
	// the Result* constants and the lookup's duration. It must not block.
	Metrics func(result string, d time.Duration)
}

// Resolver is a caching DNS resolver. It asks the configured servers for A
// and AAAA records in parallel, honours the records' TTLs, caches negative
// answers, and collapses concurrent lookups of one name into one query
// pair. It satisfies policy.Resolver. It is safe for concurrent use. Create
// it with [NewResolver]; the zero value is not usable.
type Resolver struct {
	servers     []string
	timeout     time.Duration
	negativeTTL time.Duration
	systemTTL   time.Duration
	metrics     func(string, time.Duration)

	cache *TTL[string, answer]
	group singleflight.Group

	// system is the fallback lookup when no servers are configured; tests
	// may replace it.
	system func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// waitHook, when non-nil, is called by each caller once it waits for
	// a shared lookup; tests use it to know when callers have joined.
	waitHook func()
}

// answer is one cached lookup result: addresses, or not-found when empty.
type answer struct {
	addrs []netip.Addr
}

// NewResolver returns a Resolver for c. It fails when a server address is
// not "host:port".
func NewResolver(c ResolverConfig) (*Resolver, error) {
	r := &Resolver{
		timeout:     cmp.Or(c.Timeout, DefaultTimeout),
		negativeTTL: cmp.Or(c.NegativeTTL, DefaultNegativeTTL),
		systemTTL:   c.SystemTTL,
		metrics:     c.Metrics,
		system:      net.DefaultResolver.LookupNetIP,
	}
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("dns server %q: %w", s, err)
		}
		r.servers = append(r.servers, s)
	}
	r.cache = NewTTL[string, answer](cmp.Or(c.Size, DefaultSize), cmp.Or(c.MaxTTL, DefaultMaxTTL))
	return r, nil
}

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
	if a, ok := r.cache.Get(name); ok {
		if len(a.addrs) == 0 {
			return nil, ResultNegativeHit, fmt.Errorf("lookup %s: %w", name, ErrNotFound)
		}
		return slices.Clone(a.addrs), ResultHit, nil
	}

	// The shared lookup must not die with the first caller's context, or
	// every waiter would fail with it; each query is bounded by r.timeout,
	// so the detached lookup ends on its own.
	ch := r.group.DoChan(name, func() (any, error) {
		return r.resolve(context.WithoutCancel(ctx), name)
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
		return slices.Clone(res.Val.([]netip.Addr)), ResultMiss, nil
	}
}

// resolve asks upstream and fills the cache. It runs once per name at a time.
func (r *Resolver) resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	if len(r.servers) == 0 {
		return r.resolveSystem(ctx, name)
	}
	type result struct {
		addrs []netip.Addr
		ttl   uint32
		err   error
	}
	aaaa := make(chan result, 1)
	go func() {
		addrs, ttl, err := r.query(ctx, name, dns.TypeAAAA)
		aaaa <- result{addrs, ttl, err}
	}()
	a4, ttl4, err4 := r.query(ctx, name, dns.TypeA)
	a6 := <-aaaa

	nf4, nf6 := errors.Is(err4, ErrNotFound), errors.Is(a6.err, ErrNotFound)
	switch {
	case nf4 && nf6:
		if r.negativeTTL > 0 {
			r.cache.Add(name, answer{}, r.negativeTTL)
		}
		return nil, fmt.Errorf("lookup %s: %w", name, ErrNotFound)
	case err4 != nil && !nf4 && a6.err != nil && !nf6,
		err4 != nil && !nf4 && len(a6.addrs) == 0,
		a6.err != nil && !nf6 && len(a4) == 0:
		return nil, fmt.Errorf("lookup %s: %w", name, errors.Join(err4, a6.err))
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
		ttl = min(ttl, r.negativeTTL)
	}
	r.cache.Add(name, answer{addrs: addrs}, ttl) // ttl 0: not stored
	return addrs, nil
}

// resolveSystem uses the system resolver, which reports no TTL.
func (r *Resolver) resolveSystem(ctx context.Context, name string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	addrs, err := r.system(ctx, "ip", name)
	if err != nil {
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			if r.negativeTTL > 0 {
				r.cache.Add(name, answer{}, r.negativeTTL)
			}
			return nil, fmt.Errorf("lookup %s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("lookup %s: %w", name, err)
	}
	for i, a := range addrs {
		addrs[i] = a.WithZone("").Unmap()
	}
	// IPv4 first, each family in the system's order.
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		return cmp.Compare(boolInt(!a.Is4()), boolInt(!b.Is4()))
	})
	addrs = dedupe(addrs)
	if len(addrs) == 0 {
		return nil, fmt.Errorf("lookup %s: %w", name, ErrNotFound)
	}
	r.cache.Add(name, answer{addrs: addrs}, r.systemTTL)
	return addrs, nil
}

// query asks the servers in order for one record type until one gives an
// authoritative answer: addresses, NXDOMAIN or NODATA. It returns the
// addresses and the smallest TTL along the answer chain.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]netip.Addr, uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	var errs []error
	for _, server := range r.servers {
		resp, err := r.exchange(ctx, m, server)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
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
	return nil, 0, errors.Join(errs...)
}

// exchange sends m to server over UDP, and again over TCP when the UDP
// answer is truncated. Each attempt is bounded by r.timeout.
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	qtype := dns.TypeToString[m.Question[0].Qtype]
	resp, err := r.exchangeNet(ctx, "udp", m, server)
	if err == nil && resp.Truncated {
		resp, err = r.exchangeNet(ctx, "tcp", m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", qtype, server, err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) || resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, fmt.Errorf("%s %s: answer for another question", qtype, server)
	}
	return resp, nil
}

func (r *Resolver) exchangeNet(ctx context.Context, network string, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout, UDPSize: 1232}
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

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
