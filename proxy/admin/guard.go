package admin

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
)

// hostGuard serves h only to requests whose Host is an IP literal,
// localhost or one of names() (admin.ui_hosts, normalized), and answers 403
// otherwise. It closes DNS rebinding: a web page that points its own name
// at the admin address can make a browser send requests there, but they
// carry that name as Host, so the page cannot read the status page, the
// denials or a profile. /metrics, /healthz and /readyz are not guarded:
// Prometheus and load balancers reach them by name, and they hold nothing
// about clients.
func hostGuard(names func() []string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r.Host, names) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			securityHeaders(w.Header())
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, "admin: Host %q is not an IP address, localhost or a name in admin.ui_hosts\n", r.Host)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether a request's Host (with or without a port)
// names the admin listener in a way no other site can: an IP literal (a
// browser never resolves one), localhost, or a listed name. It normalizes
// as the policy does (case, one trailing dot, IDNA, odd IPv4 spellings);
// anything that does not normalize is refused.
func hostAllowed(raw string, names func() []string) bool {
	if h, _, err := net.SplitHostPort(raw); err == nil {
		raw = h // "[::1]:9090" gives "::1"; "[::1]" and "::1" go as they are
	}
	host, _, isIP, err := policy.NormalizeHost(raw)
	switch {
	case err != nil:
		return false
	case isIP, host == "localhost":
		return true
	case names == nil:
		return false
	}
	return slices.Contains(names(), host)
}

// /api/check resolves names with egressd's resolver (and its upstream DNS
// servers), so it is rate-limited: a page open in a browser asks a few
// times a minute, a script probing names gets 429.
const (
	checkRate  = 10 // checks a second, sustained
	checkBurst = 10 // checks at once
)

// tokenBucket admits rate events a second on average and burst at once.
type tokenBucket struct {
	rate, burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst float64) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, tokens: burst}
}

// take spends one token if there is one; otherwise it reports how long
// until there will be.
func (b *tokenBucket) take(now time.Time) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// retryAfter is a Retry-After value: whole seconds, at least 1.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}
