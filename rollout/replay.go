package rollout

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/egressd/egressd/policy"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// Policy is the config to test, compiled.
	Policy *policy.Policy
	// Resolver answers the names whose lines show no dialed address (the
	// config's DNS, as `egressd check` uses it); lines with an ip key are
	// decided with that address, as the proxy saw it.
	Resolver policy.Resolver
	// ConfigName is shown in the report.
	ConfigName string
	Progress   Progress
}

// ReplayChange counts lines whose decision changes the same way.
type ReplayChange struct {
	From         string `json:"from"`
	To           string `json:"to"`
	Rule         string `json:"rule"`
	Reason       string `json:"reason"`
	FromRule     string `json:"from_rule"`
	FromReason   string `json:"from_reason"`
	Lines        int64  `json:"lines"`
	Destinations int    `json:"destinations"`
}

// ReplayDestination is one destination (of one group) whose decision
// changes.
type ReplayDestination struct {
	Group  string `json:"group"`
	Client string `json:"client"` // one client that asked
	User   string `json:"user"`
	Host   string `json:"host"`
	Port   uint16 `json:"port"`
	From   string `json:"from"`
	To     string `json:"to"`
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
	Lines  int64  `json:"lines"`
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	Config       string              `json:"config"`
	Files        int                 `json:"files"`
	Lines        int64               `json:"lines"`
	Replayed     int64               `json:"replayed"`
	NotReplayed  map[string]int64    `json:"not_replayed"` // by reason: lines with no destination decision to replay
	Skipped      int64               `json:"skipped"`      // not access lines
	ChangedLines int64               `json:"changed_lines"`
	Changes      []ReplayChange      `json:"changes"`
	Destinations []ReplayDestination `json:"destinations"`
}

// Changed reports whether any decision would change.
func (r *ReplayResult) Changed() bool { return r.ChangedLines > 0 }

type ipKey struct{}

// lineResolver answers with the address the line dialed when it has one.
type lineResolver struct{ next policy.Resolver }

func (r lineResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, ok := ctx.Value(ipKey{}).(netip.Addr); ok && a.IsValid() {
		return []netip.Addr{a}, nil
	}
	if r.next == nil {
		return nil, errors.New("no resolver")
	}
	return r.next.LookupNetIP(ctx, host)
}

// outcome is a destination decision: the verdict of the policy stage (rules,
// mode, ranges), with its rule and reason.
type outcome struct {
	verdict      policy.Verdict
	rule, reason string
}

// oldOutcome reads the policy-stage decision a line records; ok is false
// for lines with no destination decision (auth_required, limit,
// bad_request).
func oldOutcome(l *Line) (outcome, bool) {
	o := outcome{rule: string(l.Rule), reason: string(l.Reason)}
	switch policy.Reason(l.Reason) {
	case policy.ReasonNone, policy.ReasonNotAllowed, policy.ReasonPortNotAllowed, policy.ReasonPrivateRange, policy.ReasonDeniedByRule:
		switch string(l.Decision) {
		case "allow":
			o.verdict = policy.Allow
		case "report":
			o.verdict = policy.Report
		default:
			o.verdict = policy.Deny
		}
		return o, true
	case policy.ReasonSNIMismatch, policy.ReasonSNIMissing, policy.ReasonTLSHelloInvalid, policy.ReasonECHRefused,
		policy.ReasonProtocolMismatch, policy.ReasonDLP, policy.ReasonDLPUnavailable, policy.ReasonDialError, policy.ReasonDNSError,
		policy.ReasonTimeout:
		// Decided after the destination passed: by a rule, or reported.
		o.verdict = policy.Allow
		if o.rule == "" {
			o.verdict = policy.Report
		}
		return o, true
	}
	return o, false
}

type decisionKey struct {
	host       string
	port       uint16
	ip         netip.Addr
	wasPrivate bool // the line was denied private_range (and shows no address)
}

type changeKey struct {
	from, to                        policy.Verdict
	rule, reason, fromRule, fromRsn string
}

const maxCachedDecisions = 1 << 20

// Replay decides the destination (client, user, host, port) of every line
// of sources with opt.Policy, through the same Engine as the proxy, and
// reports which would change decision.
func Replay(ctx context.Context, sources []Source, opt ReplayOptions) (*ReplayResult, error) {
	engine := policy.NewEngine(opt.Policy, lineResolver{opt.Resolver})
	res := &ReplayResult{Config: opt.ConfigName, NotReplayed: map[string]int64{}}
	sigs := map[string]int{}   // client and user -> membership ID
	sigIDs := map[string]int{} // joined groups -> ID
	var sigGroup []string      // membership ID -> the group a change is shown under
	cache := map[string]outcome{}
	changes := map[changeKey]*ReplayChange{}
	dests := map[string]*ReplayDestination{}
	perChange := map[changeKey]int{}
	var scratch, key []byte
	var counts Counts
	err := scan(sources, opt.Progress, func(l *Line) {
		if l.Port < 1 || l.Port > 65535 {
			counts.Other++
			return
		}
		old, ok := oldOutcome(l)
		if !ok {
			res.NotReplayed[string(l.Reason)]++
			return
		}
		res.Replayed++
		scratch = append(append(append(scratch[:0], l.Client...), 0), l.User...)
		sig, ok := sigs[string(scratch)]
		if !ok {
			client := clientOf(l)
			joined := strings.Join(opt.Policy.Groups(client), "\x00")
			if sig, ok = sigIDs[joined]; !ok {
				sig = len(sigIDs)
				sigIDs[joined] = sig
				_, g := opt.Policy.ClientMode(client)
				sigGroup = append(sigGroup, g)
			}
			sigs[string(scratch)] = sig
		}
		wasPrivate := old.reason == string(policy.ReasonPrivateRange)
		// The decision depends on the client only through its groups.
		key = strconv.AppendInt(key[:0], int64(sig), 10)
		key = strconv.AppendInt(append(key, 0), int64(l.Port), 10)
		key = append(append(append(key, 0), l.IP...), 0)
		if wasPrivate {
			key = append(key, 'p')
		}
		key = append(append(key, 0), l.Host...)
		now, ok := cache[string(key)]
		if !ok {
			ip, _ := netip.ParseAddr(string(l.IP))
			now = decide(ctx, engine, clientOf(l), decisionKey{host: string(l.Host), port: uint16(l.Port), ip: ip.Unmap(), wasPrivate: wasPrivate})
			if len(cache) >= maxCachedDecisions {
				clear(cache)
			}
			cache[string(key)] = now
		}
		if now.verdict == old.verdict {
			return
		}
		res.ChangedLines++
		ck := changeKey{from: old.verdict, to: now.verdict, rule: now.rule, reason: now.reason, fromRule: old.rule, fromRsn: old.reason}
		ch := changes[ck]
		if ch == nil {
			ch = &ReplayChange{From: old.verdict.String(), To: now.verdict.String(), Rule: now.rule, Reason: now.reason,
				FromRule: old.rule, FromReason: old.reason}
			changes[ck] = ch
		}
		ch.Lines++
		group := sigGroup[sig]
		key = append(append(key[:0], ch.From...), 0)
		for _, part := range []string{ch.To, ch.Rule, ch.Reason, ch.FromRule, ch.FromReason, group} {
			key = append(append(key, part...), 0)
		}
		key = strconv.AppendInt(append(append(key, l.Host...), 0), int64(l.Port), 10)
		d := dests[string(key)]
		if d == nil {
			client := clientOf(l)
			d = &ReplayDestination{Group: group, Client: client.Addr.String(), User: client.User, Host: string(l.Host), Port: uint16(l.Port),
				From: ch.From, To: ch.To, Rule: ch.Rule, Reason: ch.Reason}
			dests[string(key)] = d
			perChange[ck]++
		}
		d.Lines++
	}, &counts)
	if err != nil {
		return nil, err
	}
	res.Files, res.Lines, res.Skipped = counts.Files, counts.Lines, counts.Malformed+counts.Other
	for ck, ch := range changes {
		ch.Destinations = perChange[ck]
		res.Changes = append(res.Changes, *ch)
	}
	slices.SortFunc(res.Changes, func(a, b ReplayChange) int {
		return cmp.Or(cmp.Compare(b.Lines, a.Lines), cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To),
			cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.FromRule, b.FromRule), cmp.Compare(a.FromReason, b.FromReason))
	})
	type sorted struct {
		order string
		d     *ReplayDestination
	}
	all := make([]sorted, 0, len(dests))
	for _, d := range dests {
		all = append(all, sorted{hostOrder(d.Host), d})
	}
	slices.SortFunc(all, func(x, y sorted) int {
		a, b := x.d, y.d
		if c := groupOrder(a.Group, b.Group); c != 0 {
			return c
		}
		if c := cmp.Compare(x.order, y.order); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To),
			cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Reason, b.Reason))
	})
	res.Destinations = make([]ReplayDestination, len(all))
	for i, s := range all {
		res.Destinations[i] = *s.d
	}
	return res, nil
}

// decide runs the engine for one destination. When a name the line shows
// no address for does not resolve now, the replay judges the policy, not
// today's DNS: a name last denied private_range stays so, any other keeps
// the verdict of the rules and the mode.
func decide(ctx context.Context, e *policy.Engine, c policy.Client, k decisionKey) outcome {
	if k.ip.IsValid() {
		ctx = context.WithValue(ctx, ipKey{}, k.ip)
	}
	d, err := e.Decide(ctx, policy.Request{Listener: policy.ListenerCheck, Client: c, Host: k.host, Port: k.port})
	o := outcome{verdict: d.Verdict, rule: d.Rule, reason: string(d.Reason)}
	if err == nil || d.Reason != policy.ReasonDNSError {
		return o
	}
	switch m := e.Load().Match(policy.Request{Client: c, Host: k.host, Port: k.port}); {
	case k.wasPrivate:
		o.verdict, o.reason = policy.Deny, string(policy.ReasonPrivateRange)
	case m.Reason == policy.ReasonNone:
		o.verdict, o.reason = policy.Allow, ""
	default:
		o.verdict, o.reason = policy.Report, string(m.Reason)
	}
	return o
}

// WriteJSON writes r as one JSON object.
func (r *ReplayResult) WriteJSON(w io.Writer) error {
	if r.Changes == nil {
		r.Changes = []ReplayChange{}
	}
	if r.Destinations == nil {
		r.Destinations = []ReplayDestination{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r for people: totals, the changes by rule and reason,
// and the destinations that change.
func (r *ReplayResult) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "egressd check --replay against %s: %s in %s, %s replayed",
		r.Config, plural64(r.Lines, "line"), plural(r.Files, "log"), commas(r.Replayed))
	if len(r.NotReplayed) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.NotReplayed)) {
			parts = append(parts, fmt.Sprintf("%s %s", orDash(k), commas(r.NotReplayed[k])))
		}
		fmt.Fprintf(&b, "; not replayed (no destination decision): %s", strings.Join(parts, ", "))
	}
	if r.Skipped > 0 {
		fmt.Fprintf(&b, "; %s not access lines", commas(r.Skipped))
	}
	b.WriteString("\n")
	if !r.Changed() {
		b.WriteString("No decision would change.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "Would change: %s, %s.\n\n", plural64(r.ChangedLines, "line"), plural(len(r.Destinations), "destination"))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tRULE\tREASON\tWAS RULE\tWAS REASON\tLINES\tDESTINATIONS")
	for _, c := range r.Changes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", c.From, c.To, orDash(c.Rule), orDash(c.Reason),
			orDash(c.FromRule), orDash(c.FromReason), commas(c.Lines), c.Destinations)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "FROM\tTO\tGROUP\tDESTINATION\tRULE\tREASON\tLINES\tCLIENT")
	for _, d := range r.Destinations {
		client := d.Client
		if d.User != "" {
			client += " (" + d.User + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.From, d.To, orDash(d.Group), hostPort(d.Host, d.Port),
			orDash(d.Rule), orDash(d.Reason), commas(d.Lines), client)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
