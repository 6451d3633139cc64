package rollout

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/config"
)

// DefaultFold is learn's --fold default: the distinct names under one
// domain it takes to propose a wildcard for them.
const DefaultFold = 3

// LearnOptions configure Learn.
type LearnOptions struct {
	// Config is the current config file, or nil. With it, the proposal keeps
	// the file's other sections and its deny rules, learns per client group,
	// and --diff has something to compare with.
	Config     []byte
	ConfigName string
	// Since keeps only lines newer than Now minus Since; zero keeps all.
	Since time.Duration
	// MinCount is the number of requests an entry (a name or a folded
	// wildcard, on one port) needs to be proposed; below 1 means 1.
	MinCount int64
	// Fold is the number of distinct names under one parent domain (at or
	// below a registrable domain) that are proposed as one "*." wildcard;
	// 0 never folds.
	Fold int
	// Now is the clock for Since; nil means time.Now.
	Now func() time.Time
	// Progress, when set, is called about four times a second.
	Progress Progress
}

// stat counts the requests of an entry.
type stat struct {
	count       int64
	first, last int64 // Unix ns; 0 when no line had a timestamp
}

func (s *stat) add(ts int64) {
	s.count++
	s.seen(ts)
}

func (s *stat) seen(ts int64) {
	if ts == 0 {
		return
	}
	if s.first == 0 || ts < s.first {
		s.first = ts
	}
	if ts > s.last {
		s.last = ts
	}
}

func (s *stat) merge(o stat) {
	s.count += o.count
	s.seen(o.first)
	s.seen(o.last)
}

// nameEntry is one destination name (or IP) of one group on one port.
type nameEntry struct {
	stat
	isIP       bool
	client     policy.Client // a client that asked, for checks against rules
	exceptions []string      // allow_ranges the address needed (from the current config's rule): never folded
	today      int           // --diff: index of today's rule that allows it, -1 none
	newToday   bool          // --diff, buckets: a name in it is not allowed today
}

// node is an ancestor domain in one (group, port) tree, at or below the
// registrable domain of the names under it. Once it has seen fold distinct
// child labels it is folded: names below it that were not stored yet are
// only counted, in bucket. A node with a public suffix below it (a name
// under it whose registrable domain is longer than the node) is poisoned
// and never proposed as a wildcard: *.amazonaws.com would cover every
// bucket.s3.amazonaws.com.
type node struct {
	labels   []string
	bucket   *nameEntry
	more     bool // bucket holds names never stored individually
	poisoned string
}

type treeKey struct {
	group string
	port  uint16
}

type tree struct {
	names map[string]*nameEntry
	nodes map[string]*node
}

// Learned is what Learn read: the traffic per group, port and name, and
// the findings. Proposal and Diff render it.
type Learned struct {
	opt    LearnOptions
	Counts Counts

	cfg       *config.Config // nil without --config
	pol       *policy.Policy // the current config's, or the default ranges only
	groupIDs  map[string]int // the config's groups, from 1; "" is 0
	groupName []string
	ruleIndex map[string]int

	trees     map[treeKey]*tree // nil once collected
	collected *collected
	byID      map[uint64]*tree // group ID << 16 | port: the per-line lookup
	clientGrp map[string]string
	findings  findings
	span      stat // every line used
	todayUsed []bool
	patUsed   [][]bool // [rule][host pattern] saw traffic (--diff)
	cidrUsed  [][]bool
	patterns  [][]policy.HostPattern
	cidrs     [][]netip.Prefix

	scratch []byte
	diff    bool
}

// Learn reads the access logs of sources and aggregates what they show.
// diff makes it evaluate every destination against the current config too.
func Learn(sources []Source, opt LearnOptions, diff bool) (*Learned, error) {
	if opt.MinCount < 1 {
		opt.MinCount = 1
	}
	if opt.Fold < 0 {
		opt.Fold = 0
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	lr := &Learned{
		opt:       opt,
		trees:     make(map[treeKey]*tree),
		byID:      make(map[uint64]*tree),
		groupIDs:  map[string]int{"": 0},
		groupName: []string{""},
		clientGrp: make(map[string]string),
		findings:  newFindings(),
		diff:      diff,
	}
	if opt.Config != nil {
		cfg, pol, err := config.LoadBytes(opt.Config, opt.ConfigName)
		if err != nil {
			return nil, err
		}
		lr.cfg, lr.pol = cfg, pol
		for g := range cfg.Policy.Groups {
			lr.groupIDs[g] = len(lr.groupName)
			lr.groupName = append(lr.groupName, g)
		}
		lr.ruleIndex = make(map[string]int, len(cfg.Policy.Rules))
		lr.todayUsed = make([]bool, len(cfg.Policy.Rules))
		for i, r := range cfg.Policy.Rules {
			lr.ruleIndex[r.Name] = i
			var pats []policy.HostPattern
			for _, h := range r.Hosts {
				hp, _ := policy.ParseHostPattern(h) // the config compiled: every pattern parses
				pats = append(pats, hp)
			}
			var cidrs []netip.Prefix
			for _, c := range r.CIDRs {
				pr, _ := policy.ParsePrefix(c)
				cidrs = append(cidrs, pr)
			}
			lr.patterns = append(lr.patterns, pats)
			lr.cidrs = append(lr.cidrs, cidrs)
			lr.patUsed = append(lr.patUsed, make([]bool, len(pats)))
			lr.cidrUsed = append(lr.cidrUsed, make([]bool, len(cidrs)))
		}
	} else if diff {
		return nil, fmt.Errorf("--diff needs --config: the current config to compare with")
	} else {
		pol, err := policy.Compile(policy.Config{DenyRanges: []string{policy.DefaultRanges}})
		if err != nil {
			return nil, err
		}
		lr.pol = pol
	}
	var cutoff int64
	if opt.Since > 0 {
		cutoff = opt.Now().Add(-opt.Since).UnixNano()
	}
	err := scan(sources, opt.Progress, func(l *Line) {
		ts, ok := parseTS(l.TS)
		if !ok {
			ts = 0
		}
		if cutoff != 0 && (!ok || ts < cutoff) {
			lr.Counts.Old++
			return
		}
		if l.Port < 1 || l.Port > 65535 {
			lr.Counts.Other++
			return
		}
		lr.Counts.Access++
		lr.span.add(ts)
		lr.line(l, ts)
	}, &lr.Counts)
	if err != nil {
		return nil, err
	}
	return lr, nil
}

// proposable reports whether a line's destination may be proposed: allowed
// by a rule, or reported for lack of one. Everything else is a finding.
func proposable(l *Line) bool {
	switch string(l.Decision) {
	case "allow":
		return len(l.Reason) == 0
	case "report":
		r := policy.Reason(l.Reason)
		return r == policy.ReasonNotAllowed || r == policy.ReasonPortNotAllowed
	}
	return false
}

// group returns the group a line counts for, by its ID: without a config
// (or groups in it), none: rules for any client; with one, the line's group
// when the config has it, else the group the config puts the client in
// (policy.ClientMode), none for a client in no group (its traffic is a
// finding: a rule for any client would open it to every group).
func (lr *Learned) group(l *Line) int {
	if lr.cfg == nil {
		return 0
	}
	if len(l.Group) > 0 {
		if id, ok := lr.groupIDs[string(l.Group)]; ok {
			return id
		}
	}
	lr.scratch = append(append(append(lr.scratch[:0], l.Client...), 0), l.User...)
	if g, ok := lr.clientGrp[string(lr.scratch)]; ok {
		return lr.groupIDs[g]
	}
	_, g := lr.pol.ClientMode(clientOf(l))
	lr.clientGrp[string(lr.scratch)] = g
	return lr.groupIDs[g]
}

func clientOf(l *Line) policy.Client {
	a, _ := netip.ParseAddr(string(l.Client))
	return policy.Client{Addr: a.Unmap(), User: string(l.User)}
}

func (lr *Learned) line(l *Line, ts int64) {
	gid := lr.group(l)
	group := lr.groupName[gid]
	if !proposable(l) {
		lr.finding(group, l, ts, "")
		return
	}
	if gid == 0 && len(lr.groupName) > 1 {
		// A rule for any client would open the destination to every group.
		lr.finding(group, l, ts, "the client ("+clientOf(l).Addr.String()+") is in no group of the config: add it to one to learn its traffic")
		return
	}
	port := uint16(l.Port)
	t := lr.byID[uint64(gid)<<16|uint64(port)]
	if t == nil {
		t = &tree{names: make(map[string]*nameEntry), nodes: make(map[string]*node)}
		lr.trees[treeKey{group, port}] = t
		lr.byID[uint64(gid)<<16|uint64(port)] = t
	}
	if e, ok := t.names[string(l.Host)]; ok {
		e.add(ts)
		return
	}
	// A name not stored: folded into a wildcard already, or new.
	if lr.opt.Fold > 0 && !lr.needsException(l) {
		if n, parent := t.folded(l.Host); n != nil {
			reg, err := publicsuffix.EffectiveTLDPlusOne(string(l.Host))
			if err == nil && len(reg) <= len(parent) {
				n.bucket.add(ts)
				n.more = true
				if lr.diff && lr.evaluate(l, string(l.Host), false) < 0 {
					n.bucket.newToday = true
				}
				return
			}
			// A public suffix lies between host and the folded node: the
			// node must not be proposed (register poisons it below).
		}
	}
	host, _, isIP, err := policy.NormalizeHost(string(l.Host))
	if err != nil {
		lr.finding(group, l, ts, "the host does not normalize")
		return
	}
	if e, ok := t.names[host]; ok { // the log had another spelling
		e.add(ts)
		return
	}
	e := &nameEntry{isIP: isIP, client: clientOf(l), today: -1}
	if exc, why := lr.exceptions(l); why != "" {
		lr.finding(group, l, ts, why)
		return
	} else {
		e.exceptions = exc
	}
	if lr.diff {
		e.today = lr.evaluate(l, host, isIP)
		e.newToday = e.today < 0
	}
	e.add(ts)
	t.names[host] = e
	if !isIP && len(e.exceptions) == 0 && lr.opt.Fold > 0 {
		t.register(host, lr.opt.Fold)
	}
}

// folded returns the nearest folded, unpoisoned ancestor of host and its name.
func (t *tree) folded(host []byte) (*node, string) {
	for i := 0; i < len(host); i++ {
		if host[i] != '.' {
			continue
		}
		if n, ok := t.nodes[string(host[i+1:])]; ok && n.bucket != nil && n.poisoned == "" {
			return n, string(host[i+1:])
		}
	}
	return nil, ""
}

// register adds host's labels to its ancestors at or below its registrable
// domain, folds those that reach fold distinct child labels, and poisons the
// foldable ancestors above its public suffix.
func (t *tree) register(host string, fold int) {
	reg, err := publicsuffix.EffectiveTLDPlusOne(host)
	if err != nil {
		return // host is a public suffix, or has no registrable domain
	}
	child := host
	for i := 0; i < len(host); i++ {
		if host[i] != '.' {
			continue
		}
		parent := host[i+1:]
		label := child[:len(child)-len(parent)-1]
		child = parent
		n, ok := t.nodes[parent]
		if len(parent) < len(reg) {
			// Above host's public suffix: any wildcard here spans registrants.
			if !ok {
				if !foldable(parent) {
					continue
				}
				n = &node{}
				t.nodes[parent] = n
			}
			if n.poisoned == "" {
				n.poisoned, _ = publicsuffix.PublicSuffix(host)
			}
			continue
		}
		if !ok {
			n = &node{}
			t.nodes[parent] = n
		}
		if n.bucket == nil && !contains(n.labels, label) {
			n.labels = append(n.labels, label)
			if len(n.labels) >= fold && n.poisoned == "" {
				n.bucket = &nameEntry{today: -1}
				n.labels = nil
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// foldable reports whether "*.d" may be proposed: d is a registrable
// domain or below one, never a public suffix (ICANN or private section:
// com, co.uk, github.io).
func foldable(d string) bool {
	ps, _ := publicsuffix.PublicSuffix(d)
	return len(d) > len(ps)
}

// needsException reports whether the address the line dialed is in a deny
// range of the current config (or, without one, the default ranges): such
// a name is allowed only through a rule's allow_ranges and is never folded.
func (lr *Learned) needsException(l *Line) bool {
	if len(l.IP) == 0 {
		return false
	}
	a, err := netip.ParseAddr(string(l.IP))
	return err == nil && !lr.pol.AddrAllowed(a.Unmap(), -1)
}

// exceptions returns the allow_ranges a line's address needs: those of the
// current config's rule that allowed it and contain the address. why is
// set when no such rule is known: the destination becomes a finding.
func (lr *Learned) exceptions(l *Line) (exc []string, why string) {
	if !lr.needsException(l) {
		return nil, ""
	}
	a, _ := netip.ParseAddr(string(l.IP))
	a = a.Unmap()
	if lr.cfg == nil {
		return nil, "allowed through a range exception (" + a.String() + "); run learn with --config to keep it"
	}
	if i, ok := lr.ruleIndex[string(l.Rule)]; ok {
		for _, s := range lr.cfg.Policy.Rules[i].AllowRanges {
			if pr, err := policy.ParsePrefix(s); err == nil && pr.Contains(a) {
				exc = append(exc, s)
			}
		}
	}
	if len(exc) == 0 {
		return nil, "dialed " + a.String() + ", which no allow_ranges of the config's rules covers"
	}
	return exc, ""
}

// evaluate matches a destination against the current config (--diff) and
// marks the rules and patterns that saw traffic. It returns the deciding
// rule's index, -1 for none.
func (lr *Learned) evaluate(l *Line, host string, isIP bool) int {
	m := lr.pol.Match(policy.Request{Client: clientOf(l), Host: host, Port: uint16(l.Port)})
	if m.Rule < 0 {
		return -1
	}
	lr.todayUsed[m.Rule] = true
	if isIP || m.IsIP {
		for j, pr := range lr.cidrs[m.Rule] {
			if pr.Contains(m.Addr) || m.Addr.Is4In6() && pr.Contains(m.Addr.Unmap()) {
				lr.cidrUsed[m.Rule][j] = true
			}
		}
	} else {
		for j, hp := range lr.patterns[m.Rule] {
			if hp.Matches(m.Host) {
				lr.patUsed[m.Rule][j] = true
			}
		}
	}
	if m.Reason == policy.ReasonDeniedByRule {
		return -1
	}
	return m.Rule
}

// findings collects the lines that are never proposed, by group, decision,
// reason, rule, port and registrable domain, with a few names each.
type findings struct {
	byName  map[string]*findingName
	buckets map[findingKey]*finding
}

type findingKey struct {
	group, decision, reason, rule, domain, why string
	port                                       uint16
}

type finding struct {
	stat
	names     []*findingName
	moreNames bool
}

type findingName struct {
	stat
	name   string
	bucket *finding
}

const (
	findingNames      = 10      // names kept per finding
	maxFindingBuckets = 100_000 // beyond: one bucket per group, decision and reason
)

func newFindings() findings {
	return findings{byName: make(map[string]*findingName), buckets: make(map[findingKey]*finding)}
}

func (lr *Learned) finding(group string, l *Line, ts int64, why string) {
	f := &lr.findings
	b := append(lr.scratch[:0], group...)
	for _, part := range [][]byte{l.Decision, l.Reason, l.Rule, l.Host, []byte(why)} {
		b = append(append(b, 0), part...)
	}
	b = strconv.AppendInt(append(b, 0), int64(l.Port), 10)
	lr.scratch = b
	if n, ok := f.byName[string(b)]; ok {
		n.add(ts)
		n.bucket.add(ts)
		return
	}
	if lr.diff {
		if host, _, isIP, err := policy.NormalizeHost(string(l.Host)); err == nil {
			lr.evaluate(l, host, isIP)
		}
	}
	host := string(l.Host)
	k := findingKey{group: group, decision: string(l.Decision), reason: string(l.Reason), rule: string(l.Rule),
		domain: registrable(host), why: why, port: uint16(max(l.Port, 0))}
	bk, ok := f.buckets[k]
	if !ok {
		if len(f.buckets) >= maxFindingBuckets {
			k.domain, k.rule, k.port = "(other destinations)", "", 0
			if bk, ok = f.buckets[k]; !ok {
				bk = &finding{}
				f.buckets[k] = bk
			}
		} else {
			bk = &finding{}
			f.buckets[k] = bk
		}
	}
	bk.add(ts)
	if len(bk.names) >= findingNames {
		bk.moreNames = true
		return
	}
	n := &findingName{name: host, bucket: bk}
	n.add(ts)
	bk.names = append(bk.names, n)
	f.byName[string(b)] = n
}

// registrable returns the registrable domain (eTLD+1) of host, or host
// itself when it has none (an IP, a public suffix, a single label).
func registrable(host string) string {
	if _, err := netip.ParseAddr(host); err == nil {
		return host
	}
	if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
		return d
	}
	return host
}
