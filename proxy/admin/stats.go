package admin

import (
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// Page sizes and the request-count window.
const (
	// RecentDenials is how many denials (and reports) the page and
	// /api/denials keep.
	RecentDenials = 100
	// TopHosts is how many denied and allowed hosts the page lists.
	TopHosts = 10
	// Window is the span of the page's recent request counts.
	Window = 5 * time.Minute
	// SampleEvery is how often Run samples the request counters for Window.
	SampleEvery = 10 * time.Second
)

// Stats is what the status page shows that the metrics do not: the recent
// denials and the most frequent denied and allowed hosts. It is the access
// log's Observer, fed by the one terminal event of every request and tunnel.
// Its memory is fixed: a ring of denials with their text copied into fixed
// arrays, and two top-k sketches.
//
// An allowed request costs a hash and four atomic increments; a denial also
// takes a mutex to write its ring slot. Stats also samples the request
// counters for the page's recent counts (Run).
type Stats struct {
	allowed *TopK
	denied  *TopK // denials and reports

	mu   sync.Mutex // guards ring and n; taken only for denials and reports
	ring [RecentDenials]denial
	n    uint64 // denials ever written; the next slot is n % len(ring)

	gather  prometheus.Gatherer // nil: no request counts
	winMu   sync.Mutex
	samples []sample // oldest first, spanning at most Window
}

// denial is one ring slot. Wire text (host, user, SNI) is copied into fixed
// arrays so a slot neither allocates nor keeps the exchange's buffers alive;
// rule, group and reason come from the config and the contract.
type denial struct {
	at       int64 // unix nanoseconds, when the exchange ended
	listener policy.Listener
	client   netip.Addr
	user     text
	group    string
	host     text
	port     uint16
	sni      text
	verdict  policy.Verdict
	reason   policy.Reason
	rule     string
	status   int
}

// text is a string of at most maxText bytes in place.
type text struct {
	n   uint16
	cut bool
	b   [maxText]byte
}

func (t *text) set(s string) {
	t.cut = len(s) > maxText
	if t.cut {
		cut := maxText
		for cut > 0 && !runeStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	t.n = uint16(copy(t.b[:], s))
}

func (t *text) String() string {
	if t.cut {
		return string(t.b[:t.n]) + "…"
	}
	return string(t.b[:t.n])
}

// NewStats returns empty stats whose recent request counts come from the
// egressd_requests_total family of g (nil: none).
func NewStats(g prometheus.Gatherer) *Stats {
	return &Stats{allowed: NewTopK(TopHosts), denied: NewTopK(TopHosts), gather: g}
}

var _ accesslog.Observer = (*Stats)(nil)

// Observe records a finished exchange: allowed hosts are counted, denials
// and reports are counted and written to the ring.
func (s *Stats) Observe(r *accesslog.Record) {
	v := r.Verdict()
	if v == policy.Allow {
		if r.Host != "" {
			s.allowed.Add(r.Host)
		}
		return
	}
	if r.Host != "" {
		s.denied.Add(r.Host)
	}
	now := time.Now().UnixNano()
	s.mu.Lock()
	d := &s.ring[s.n%RecentDenials]
	s.n++
	d.at = now
	d.listener = r.Listener
	d.client = r.Client
	d.user.set(r.User)
	d.group = r.Decision.Group
	d.host.set(r.Host)
	d.port = r.Port
	d.sni.set(r.SNI)
	d.verdict = v
	d.reason = r.FinalReason()
	d.rule = r.Decision.Rule
	d.status = r.Status
	s.mu.Unlock()
}

// Denial is one recent denial or report, as /api/denials and the page show
// it. The JSON keys are the access log's.
type Denial struct {
	Time     time.Time `json:"ts"`
	Listener string    `json:"listener"`
	Client   string    `json:"client"`
	User     string    `json:"user"`
	Group    string    `json:"group"`
	Host     string    `json:"host"`
	Port     uint16    `json:"port"`
	SNI      string    `json:"sni"`
	Decision string    `json:"decision"`
	Rule     string    `json:"rule"`
	Reason   string    `json:"reason"`
	Status   int       `json:"status"`
}

// Denials returns up to limit recent denials and reports, newest first.
func (s *Stats) Denials(limit int) []Denial {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int(min(s.n, RecentDenials))
	n = min(n, max(limit, 0))
	out := make([]Denial, n)
	for i := range out {
		d := &s.ring[(s.n-1-uint64(i))%RecentDenials]
		out[i] = Denial{
			Time:     time.Unix(0, d.at).UTC(),
			Listener: string(d.listener),
			User:     d.user.String(),
			Group:    d.group,
			Host:     d.host.String(),
			Port:     d.port,
			SNI:      d.sni.String(),
			Decision: d.verdict.String(),
			Rule:     d.rule,
			Reason:   string(d.reason),
			Status:   d.status,
		}
		if d.client.IsValid() {
			out[i].Client = d.client.String()
		}
	}
	return out
}

// TopDenied returns the most frequent denied (or reported) hosts since
// start, with estimated counts.
func (s *Stats) TopDenied() []Entry { return s.denied.Top(TopHosts) }

// TopAllowed returns the most frequent allowed hosts since start, with
// estimated counts.
func (s *Stats) TopAllowed() []Entry { return s.allowed.Top(TopHosts) }

// RequestKey is a decision and a reason of egressd_requests_total.
type RequestKey struct {
	Decision string
	Reason   string
}

type sample struct {
	at     time.Time
	counts map[RequestKey]float64
}

// requestCounts sums egressd_requests_total over listeners (series at zero
// are left out).
func (s *Stats) requestCounts() map[RequestKey]float64 {
	out := map[RequestKey]float64{}
	if s.gather == nil {
		return out
	}
	mfs, _ := s.gather.Gather() // a partial gather still carries the family
	for _, mf := range mfs {
		if mf.GetName() != "egressd_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var k RequestKey
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "decision":
					k.Decision = l.GetValue()
				case "reason":
					k.Reason = l.GetValue()
				}
			}
			if v := m.GetCounter().GetValue(); v != 0 {
				out[k] += v
			}
		}
	}
	return out
}

// Sample records the request counters at now; Run calls it every
// SampleEvery. Samples older than Window are dropped, but the newest of
// them is kept as the window's start.
func (s *Stats) Sample(now time.Time) {
	c := s.requestCounts()
	s.winMu.Lock()
	defer s.winMu.Unlock()
	s.samples = append(s.samples, sample{now, c})
	drop := 0
	for drop+1 < len(s.samples) && now.Sub(s.samples[drop+1].at) >= Window {
		drop++
	}
	s.samples = append(s.samples[:0], s.samples[drop:]...)
}

// Run samples the request counters every SampleEvery until stop is closed.
func (s *Stats) Run(stop <-chan struct{}) {
	s.Sample(time.Now())
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			s.Sample(now)
		case <-stop:
			return
		}
	}
}

// RequestCounts returns the request counts since start and their growth
// over span: the last Window (to within SampleEvery), or less when egressd
// started less than Window ago. With no sample yet, recent is total and
// span is 0.
func (s *Stats) RequestCounts(now time.Time) (total, recent map[RequestKey]float64, span time.Duration) {
	total = s.requestCounts()
	recent = map[RequestKey]float64{}
	s.winMu.Lock()
	var base sample
	if len(s.samples) > 0 {
		base = s.samples[0] // the newest sample at least Window old, else the oldest
	}
	s.winMu.Unlock()
	if base.counts == nil {
		return total, total, 0
	}
	for k, v := range total {
		if d := v - base.counts[k]; d > 0 {
			recent[k] = d
		}
	}
	return total, recent, now.Sub(base.at)
}
