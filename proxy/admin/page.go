package admin

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/policy"
)

// Status is the server's state the page shows besides the metrics.
type Status struct {
	Version   string
	Started   time.Time
	ConfigSHA string    // sha256 of the config file in force
	Loaded    time.Time // when the config in force was loaded
	Reload    Reload    // the last reload attempt; zero Time: none since start
	Mode      string    // the policy's mode
	Groups    []Group   // client groups, sorted by name
	Rules     []Rule    // in config order
	Listeners []Listener
}

// Rule is a policy rule: its name and action (allow or deny).
type Rule struct {
	Name   string
	Action string
}

// Reload is the outcome of a config reload.
type Reload struct {
	Time   time.Time
	Result string // "success" or "error", as egressd_config_reloads_total
}

// Group is a client group and the mode its clients are decided in.
type Group struct {
	Name string
	Mode string // effective: the group's own, or the policy's
	Own  bool   // the group sets its mode
}

// Listener is a configured listener: its config key (http, socks5, admin)
// and address.
type Listener struct {
	Name string
	Addr string
}

//go:embed assets
var assets embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"time":  fmtTime,
	"count": fmtCount,
	"short": func(s string) string { return s[:min(len(s), 12)] },
}).ParseFS(assets, "assets/page.html"))

// staticFiles are the page's script, style sheet and icon, served under
// /assets/ (the template is not served).
var staticFiles = []string{"app.js", "style.css", "favicon.svg"}

// securityHeaders: the page loads only its own script, style and icon, and
// nothing from the wire can become markup (html/template escapes it, and
// the policy forbids inline script as a second line).
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// ui serves the status page and its API.
type ui struct {
	o      Options
	checks *tokenBucket // /api/check's rate limit
}

func (u *ui) register(mux *http.ServeMux) {
	guarded := func(h http.HandlerFunc) http.Handler { return enabled(u.o.UI, hostGuard(u.o.UIHosts, h)) }
	mux.Handle("GET /{$}", guarded(u.servePage))
	for _, name := range staticFiles {
		mux.Handle("GET /assets/"+name, guarded(func(w http.ResponseWriter, r *http.Request) {
			securityHeaders(w.Header())
			http.ServeFileFS(w, r, assets, "assets/"+name)
		}))
	}
	mux.Handle("GET /api/check", guarded(u.serveCheck))
	mux.Handle("GET /api/denials", guarded(u.serveDenials))
}

// CheckResult is the JSON answer of /api/check: the fields `egressd check`
// prints.
type CheckResult struct {
	Decision string   `json:"decision"`
	Rule     string   `json:"rule"`
	Reason   string   `json:"reason"`
	Group    string   `json:"group"`
	Host     string   `json:"host"`
	Port     uint16   `json:"port"`
	Addrs    []string `json:"addrs"`           // the checked addresses, HOST:PORT; empty when denied
	Error    string   `json:"error,omitempty"` // why no decision could be made (DNS)
}

// checkTimeout bounds one /api/check, as `egressd check` bounds its run.
const checkTimeout = 30 * time.Second

func (u *ui) serveCheck(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req, err := checkRequest(q.Get("client"), q.Get("user"), q.Get("target"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if u.o.Decider == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no policy engine"})
		return
	}
	// Only checks that reach the engine (and maybe the resolver) count.
	if ok, wait := u.checks.take(time.Now()); !ok {
		w.Header().Set("Retry-After", retryAfter(wait))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{
			"error": "too many checks: at most " + strconv.Itoa(checkRate) + " a second"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	dec, err := u.o.Decider.Decide(ctx, req)
	res := CheckResult{
		Decision: dec.Verdict.String(),
		Rule:     dec.Rule,
		Reason:   string(dec.Reason),
		Group:    dec.Group,
		Host:     dec.Host,
		Port:     req.Port,
		Addrs:    make([]string, 0, len(dec.Addrs)),
	}
	for _, a := range dec.Addrs {
		res.Addrs = append(res.Addrs, a.String())
	}
	if err != nil {
		res.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, res)
}

// checkRequest builds the policy request of /api/check from its parameters,
// as `egressd check` does from its flags.
func checkRequest(client, user, target string) (policy.Request, error) {
	if target == "" {
		return policy.Request{}, errorString("target is required (HOST:PORT)")
	}
	host, portStr, err := net.SplitHostPort(target)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || port == 0 {
		return policy.Request{}, errorString("target " + strconv.Quote(target) + " is not HOST:PORT")
	}
	var addr netip.Addr
	if client != "" {
		if addr, err = netip.ParseAddr(client); err != nil {
			return policy.Request{}, errorString("client " + strconv.Quote(client) + " is not an IP address")
		}
	}
	return policy.Request{
		Listener: policy.ListenerCheck,
		Client:   policy.Client{Addr: addr.Unmap(), User: user},
		Host:     host,
		Port:     uint16(port),
	}, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

func (u *ui) serveDenials(w http.ResponseWriter, r *http.Request) {
	limit := RecentDenials
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "limit must be a positive integer"})
			return
		}
		limit = min(n, RecentDenials)
	}
	var ds []Denial
	if u.o.Stats != nil {
		ds = u.o.Stats.Denials(limit)
	}
	writeJSON(w, http.StatusOK, struct {
		Denials []Denial `json:"denials"`
	}{append(make([]Denial, 0, len(ds)), ds...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	securityHeaders(h)
	w.WriteHeader(code)
	enc := json.NewEncoder(w) // escapes <, > and & in strings
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// pageData is what page.html renders.
type pageData struct {
	Status
	Now         time.Time
	Uptime      string
	Listeners   []listenerRow
	Requests    []requestRow
	WindowLabel string
	Denials     []Denial
	TopDenied   []Entry
	TopAllowed  []Entry
	Rules       []ruleRow
}

type listenerRow struct {
	Name, Addr  string
	Protocols   string
	HasCounts   bool // connections and tunnels apply (not the admin listener)
	Connections float64
	Tunnels     float64
}

type requestRow struct {
	Decision, Reason string
	Total, Recent    float64
}

type ruleRow struct {
	Rule
	Hits  float64
	Never bool
}

func (u *ui) servePage(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	d := pageData{Now: now.UTC()}
	if u.o.Status != nil {
		d.Status = u.o.Status()
	}
	if !d.Started.IsZero() {
		d.Uptime = now.Sub(d.Started).Truncate(time.Second).String()
	}
	m := gatherPage(u.o)
	for _, l := range d.Status.Listeners {
		row := listenerRow{Name: l.Name, Addr: l.Addr}
		switch l.Name {
		case "http":
			row.HasCounts, row.Protocols = true, "HTTP, CONNECT"
			row.Connections = m.clientConns["http"]
			row.Tunnels = m.tunnels["connect"] + m.tunnels["http"]
		case "socks5":
			row.HasCounts, row.Protocols = true, "SOCKS5"
			row.Connections = m.clientConns["socks5"]
			row.Tunnels = m.tunnels["socks5"]
		case "admin":
			row.Protocols = "this page, /metrics, /healthz, /readyz"
		}
		d.Listeners = append(d.Listeners, row)
	}
	if u.o.Stats != nil {
		total, recent, span := u.o.Stats.RequestCounts(now)
		for k, v := range total {
			if v > 0 {
				d.Requests = append(d.Requests, requestRow{k.Decision, k.Reason, v, recent[k]})
			}
		}
		slices.SortFunc(d.Requests, func(a, b requestRow) int {
			return cmp.Or(cmp.Compare(decisionOrder(a.Decision), decisionOrder(b.Decision)),
				cmp.Compare(b.Total, a.Total), strings.Compare(a.Reason, b.Reason))
		})
		// Before egressd has run for Window, the recent counts are all
		// of them.
		d.WindowLabel = "last 5 min"
		if span < Window {
			d.WindowLabel = "last 5 min (up " + span.Truncate(time.Second).String() + ")"
		}
		d.Denials = u.o.Stats.Denials(RecentDenials)
		d.TopDenied = u.o.Stats.TopDenied()
		d.TopAllowed = u.o.Stats.TopAllowed()
	}
	for _, r := range d.Status.Rules {
		hits := m.rules[r.Name]
		d.Rules = append(d.Rules, ruleRow{Rule: r, Hits: hits, Never: hits == 0})
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	securityHeaders(h)
	var buf strings.Builder
	if err := page.Execute(&buf, d); err != nil {
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte(buf.String()))
}

func decisionOrder(d string) int {
	switch d {
	case "deny":
		return 0
	case "report":
		return 1
	}
	return 2
}

// pageMetrics are the series of the registry the page shows.
type pageMetrics struct {
	clientConns map[string]float64 // by listener socket
	tunnels     map[string]float64 // by front end
	rules       map[string]float64 // rule matches by rule
}

func gatherPage(o Options) pageMetrics {
	m := pageMetrics{clientConns: map[string]float64{}, tunnels: map[string]float64{}, rules: map[string]float64{}}
	if o.Gatherer == nil {
		return m
	}
	mfs, _ := o.Gatherer.Gather() // a partial gather still carries the families
	for _, mf := range mfs {
		var into map[string]float64
		var label string
		switch mf.GetName() {
		case "egressd_client_connections":
			into, label = m.clientConns, "listener"
		case "egressd_active_tunnels":
			into, label = m.tunnels, "listener"
		case "egressd_rule_matches_total":
			into, label = m.rules, "rule"
		default:
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == label {
					into[l.GetValue()] += s.GetGauge().GetValue() + s.GetCounter().GetValue()
				}
			}
		}
	}
	return m
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// fmtCount writes a count (float64 from the metrics, uint64 from the
// sketches) with thin spaces between thousands.
func fmtCount(v any) string {
	var n uint64
	switch v := v.(type) {
	case float64:
		n = uint64(max(v, 0))
	case uint64:
		n = v
	}
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u2009")
		}
		b.WriteRune(c)
	}
	return b.String()
}
