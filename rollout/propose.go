package rollout

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/policy"
)

// entry is one proposed destination pattern of one group: an exact name, a
// folded "*." wildcard or an IP, with its ports.
type entry struct {
	group      string
	pattern    string
	isIP       bool
	wildcard   bool
	ports      []portStat // sorted by port
	names      []string   // the names a wildcard folds
	more       bool       // and names counted but not kept
	exceptions []string
	client     policy.Client
	order      string // hostOrder(pattern) + exceptions, to sort by
}

type portStat struct {
	port uint16
	stat
	newToday bool // --diff: not allowed by the current config on this port
}

// at returns the stats of port, added when missing.
func (e *entry) at(port uint16) *portStat {
	i, found := slices.BinarySearchFunc(e.ports, port, func(p portStat, port uint16) int { return cmp.Compare(p.port, port) })
	if !found {
		e.ports = slices.Insert(e.ports, i, portStat{port: port})
	}
	return &e.ports[i]
}

func (e *entry) total() stat {
	var s stat
	for _, p := range e.ports {
		s.merge(p.stat)
	}
	return s
}

func (e *entry) portList() []uint16 {
	out := make([]uint16, len(e.ports))
	for i, p := range e.ports {
		out[i] = p.port
	}
	return out
}

// lostFold is a folded node found unsafe after names were counted into it.
type lostFold struct {
	group, parent, suffix string
	port                  uint16
	stat
}

// rareEntry is an entry on one port seen fewer than MinCount times.
type rareEntry struct {
	group, pattern string
	port           uint16
	stat
}

// collected is the learned traffic turned into entries.
type collected struct {
	entries []*entry
	lost    []lostFold
	rare    []rareEntry
	denied  []deniedEntry
}

// deniedEntry is a proposable destination a kept deny rule denies.
type deniedEntry struct {
	group, pattern, rule string
	port                 uint16
	stat
}

// collect folds the names of every tree into entries, once: it then drops
// the trees, which the entries replace, so that rendering a big proposal
// reuses their memory.
func (lr *Learned) collect() collected {
	if lr.collected != nil {
		return *lr.collected
	}
	defer func() {
		lr.trees, lr.byID = nil, nil
		runtime.GC()
	}()
	var out collected
	defer func() { lr.collected = &out }()
	type patKey struct{ group, pattern, exc string }
	byPat := make(map[patKey]*entry)
	get := func(group, pattern string, exc []string, mk func() *entry) *entry {
		k := patKey{group, pattern, strings.Join(exc, ",")}
		e, ok := byPat[k]
		if !ok {
			e = mk()
			e.group, e.pattern, e.exceptions = group, pattern, exc
			byPat[k] = e
		}
		return e
	}
	for tk, t := range lr.trees {
		// top returns the topmost folded, safe ancestor of host (or host
		// itself when self is set).
		top := func(host string, self bool) string {
			best := ""
			if self {
				if n, ok := t.nodes[host]; ok && n.bucket != nil && n.poisoned == "" {
					best = host
				}
			}
			for i := 0; i < len(host); i++ {
				if host[i] == '.' {
					if n, ok := t.nodes[host[i+1:]]; ok && n.bucket != nil && n.poisoned == "" {
						best = host[i+1:]
					}
				}
			}
			return best
		}
		for host, ne := range t.names {
			pattern, wildcard := host, false
			if ne.isIP {
				a := netip.MustParseAddr(host)
				pattern = netip.PrefixFrom(a, a.BitLen()).String()
			} else if len(ne.exceptions) == 0 {
				if a := top(host, false); a != "" {
					pattern, wildcard = "*."+a, true
				}
			}
			e := get(tk.group, pattern, ne.exceptions, func() *entry {
				return &entry{isIP: ne.isIP, wildcard: wildcard, client: ne.client}
			})
			ps := e.at(tk.port)
			ps.merge(ne.stat)
			ps.newToday = ps.newToday || ne.newToday
			if wildcard {
				e.names = append(e.names, host)
			}
		}
		for name, n := range t.nodes {
			if n.bucket == nil || n.bucket.count == 0 {
				continue
			}
			if n.poisoned != "" {
				out.lost = append(out.lost, lostFold{group: tk.group, parent: name, suffix: n.poisoned, port: tk.port, stat: n.bucket.stat})
				continue
			}
			a := top(name, true)
			e := get(tk.group, "*."+a, nil, func() *entry { return &entry{wildcard: true} })
			ps := e.at(tk.port)
			ps.merge(n.bucket.stat)
			ps.newToday = ps.newToday || n.bucket.newToday
			e.more = e.more || n.more
		}
	}
	deny := lr.denyPolicy()
	for _, e := range byPat {
		e.ports = slices.DeleteFunc(e.ports, func(ps portStat) bool {
			if ps.count < lr.opt.MinCount {
				out.rare = append(out.rare, rareEntry{e.group, e.pattern, ps.port, ps.stat})
				return true
			}
			if deny != nil && !e.wildcard {
				host := e.pattern
				if pr, err := netip.ParsePrefix(host); err == nil {
					host = pr.Addr().String()
				}
				if m := deny.Match(policy.Request{Client: e.client, Host: host, Port: ps.port}); m.Reason == policy.ReasonDeniedByRule {
					out.denied = append(out.denied, deniedEntry{e.group, e.pattern, m.RuleName, ps.port, ps.stat})
					return true
				}
			}
			return false
		})
		if len(e.ports) > 0 {
			slices.Sort(e.names)
			e.order = hostOrder(e.pattern) + "\x00" + strings.Join(e.exceptions, ",")
			out.entries = append(out.entries, e)
		}
	}
	slices.SortFunc(out.entries, func(a, b *entry) int {
		if c := groupOrder(a.group, b.group); c != 0 {
			return c
		}
		return cmp.Compare(a.order, b.order)
	})
	slices.SortFunc(out.lost, func(a, b lostFold) int {
		return cmp.Or(groupOrder(a.group, b.group), cmp.Compare(a.parent, b.parent), cmp.Compare(a.port, b.port))
	})
	slices.SortFunc(out.rare, func(a, b rareEntry) int {
		if c := groupOrder(a.group, b.group); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(hostOrder(a.pattern), hostOrder(b.pattern)), cmp.Compare(a.port, b.port))
	})
	slices.SortFunc(out.denied, func(a, b deniedEntry) int {
		if c := groupOrder(a.group, b.group); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(hostOrder(a.pattern), hostOrder(b.pattern)), cmp.Compare(a.port, b.port))
	})
	return out
}

// groupOrder sorts groups by name, "any client" last.
func groupOrder(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	return cmp.Compare(a, b)
}

// hostOrder sorts names by their labels from the right, so that names of one
// domain sit together; IPs sort before names.
func hostOrder(pattern string) string {
	if _, err := netip.ParsePrefix(pattern); err == nil {
		return "\x00" + pattern
	}
	labels := strings.Split(strings.TrimPrefix(pattern, "*."), ".")
	slices.Reverse(labels)
	s := strings.Join(labels, ".")
	if strings.HasPrefix(pattern, "*.") {
		s += ".\x00" // a wildcard before the names below it
	}
	return s
}

// denyPolicy compiles the current config's deny rules alone (nil without a
// config or deny rules), to find proposals a kept deny rule would deny.
func (lr *Learned) denyPolicy() *policy.Policy {
	if lr.cfg == nil {
		return nil
	}
	pc := lr.cfg.Policy
	pc.Rules = nil
	for _, r := range lr.cfg.Policy.Rules {
		if r.Action == policy.ActionDeny {
			pc.Rules = append(pc.Rules, r)
		}
	}
	if len(pc.Rules) == 0 {
		return nil
	}
	p, err := policy.Compile(pc)
	if err != nil {
		return nil // a subset of a config that compiled
	}
	return p
}

// learnedRule is one proposed rule: the entries of a group that share ports
// and range exceptions.
type learnedRule struct {
	name       string
	group      string
	ports      []uint16
	exceptions []string
	entries    []*entry
}

func (lr *Learned) rules(c collected) []*learnedRule {
	var out []*learnedRule
	byKey := make(map[string]*learnedRule)
	taken := make(map[string]bool)
	if lr.cfg != nil {
		for _, r := range lr.cfg.Policy.Rules {
			if r.Action == policy.ActionDeny {
				taken[r.Name] = true
			}
		}
	}
	for _, e := range c.entries {
		ports := e.portList()
		k := e.group + "\x00" + fmt.Sprint(ports) + "\x00" + strings.Join(e.exceptions, ",")
		r, ok := byKey[k]
		if !ok {
			r = &learnedRule{group: e.group, ports: ports, exceptions: e.exceptions}
			byKey[k] = r
			out = append(out, r)
		}
		r.entries = append(r.entries, e)
	}
	slices.SortStableFunc(out, func(a, b *learnedRule) int {
		return cmp.Or(groupOrder(a.group, b.group), slices.Compare(a.ports, b.ports),
			cmp.Compare(strings.Join(a.exceptions, ","), strings.Join(b.exceptions, ",")))
	})
	for _, r := range out {
		g := r.group
		if g == "" {
			g = "any"
		}
		var ps []string
		for _, p := range r.ports {
			ps = append(ps, strconv.Itoa(int(p)))
		}
		base := "learned-" + g + "-" + strings.Join(ps, "-")
		if len(ps) > 4 {
			base = "learned-" + g + "-" + strconv.Itoa(len(ps)) + "-ports"
		}
		if len(r.exceptions) > 0 {
			base += "-ranges"
		}
		name := base
		for i := 2; taken[name]; i++ {
			name = base + "-" + strconv.Itoa(i)
		}
		taken[name] = true
		r.name = name
	}
	return out
}

// sentinel stands for the learned rules in the encoded document; they are
// written as text in its place (a yaml.Node per host costs too much memory
// for a 100,000-host proposal).
const sentinel = "egressd-learn-rules-go-here"

// Proposal renders the proposed config: a whole file `egressd validate`
// accepts. With a config, every section but policy.rules is the file's own;
// its deny rules come first, unchanged, then the learned rules. Findings
// follow the policy section as comments.
func (lr *Learned) Proposal() ([]byte, error) {
	c := lr.collect()
	rules := lr.rules(c)
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	var doc yaml.Node
	var rulesKey, policyKey *yaml.Node
	pc := policy.Config{Mode: policy.ModeEnforce, DenyRanges: []string{policy.DefaultRanges}, RequireSNI: true, TLSPorts: []int{443}}
	if lr.cfg != nil {
		pc = lr.cfg.Policy
		pc.Rules = nil
		if err := yaml.Unmarshal(lr.opt.Config, &doc); err != nil {
			return nil, err
		}
		if doc.Kind == 0 {
			doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
		}
		root := doc.Content[0]
		var pol *yaml.Node
		policyKey, pol = mapGet(root, "policy")
		if pol == nil || pol.Kind != yaml.MappingNode {
			policyKey, pol = scalar("policy"), &yaml.Node{Kind: yaml.MappingNode}
			mapSet(root, policyKey, pol)
		}
		var old *yaml.Node
		rulesKey, old = mapGet(pol, "rules")
		if rulesKey == nil {
			rulesKey = scalar("rules")
		}
		if old != nil && old.Kind == yaml.SequenceNode {
			for i, r := range lr.cfg.Policy.Rules {
				if r.Action == policy.ActionDeny && i < len(old.Content) {
					seq.Content = append(seq.Content, old.Content[i])
					pc.Rules = append(pc.Rules, r)
				}
			}
		}
		mapSet(pol, rulesKey, seq)
	} else {
		policyKey, rulesKey = scalar("policy"), scalar("rules")
		pol := &yaml.Node{Kind: yaml.MappingNode}
		mapSet(pol, scalar("mode"), scalar(policy.ModeEnforce))
		pol.Content[0].LineComment = "report: allow everything, log what this would deny"
		mapSet(pol, rulesKey, seq)
		root := &yaml.Node{Kind: yaml.MappingNode}
		mapSet(root, policyKey, pol)
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	}
	rulesKey.HeadComment = joinComments(rulesKey.HeadComment, lr.header())
	if len(rules) > 0 {
		seq.Content = append(seq.Content, scalar(sentinel))
	}
	if len(seq.Content) == 0 {
		seq.Style = yaml.FlowStyle
	}
	policyKey.FootComment = joinComments(policyKey.FootComment, lr.findingsText(c))
	// The learned rules must compile where the config's deny rules do.
	for _, r := range rules {
		pc.Rules = append(pc.Rules, r.config())
	}
	if _, err := policy.Compile(pc); err != nil {
		return nil, fmt.Errorf("internal error: the proposed policy does not compile: %w", err)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	enc.Close()
	if len(rules) == 0 {
		return b.Bytes(), nil
	}
	text := b.Bytes()
	i := bytes.Index(text, []byte("- "+sentinel+"\n"))
	if i < 0 {
		return nil, errors.New("internal error: lost the place of the learned rules")
	}
	lineStart := bytes.LastIndexByte(text[:i], '\n') + 1
	indent := string(text[lineStart:i])
	out := bytes.NewBuffer(make([]byte, 0, len(text)+len(rules)*256))
	out.Write(text[:lineStart])
	for _, r := range rules {
		r.write(out, indent)
	}
	out.Write(text[i+len("- "+sentinel+"\n"):])
	return out.Bytes(), nil
}

func joinComments(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + "\n\n" + b
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

func mapGet(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func mapSet(m, key, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key.Value {
			m.Content[i], m.Content[i+1] = key, val
			return
		}
	}
	m.Content = append(m.Content, key, val)
}

// config returns the rule as policy.Compile takes it.
func (r *learnedRule) config() policy.Rule {
	pr := policy.Rule{Name: r.name, AllowRanges: r.exceptions}
	if r.group != "" {
		pr.Groups = []string{r.group}
	}
	for _, p := range r.ports {
		pr.Ports = append(pr.Ports, int(p))
	}
	for _, e := range r.entries {
		if e.isIP {
			pr.CIDRs = append(pr.CIDRs, e.pattern)
		} else {
			pr.Hosts = append(pr.Hosts, e.pattern)
		}
	}
	return pr
}

// quote writes s as a YAML scalar: plain when it is a lowercase name that
// cannot read as anything but a string, else double-quoted (a JSON string
// is a YAML one).
func quote(s string) string {
	if plainName(s) {
		return s
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func plainName(s string) bool {
	switch s {
	case "", "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return false
	}
	if s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' && i > 0 && s[i-1] != '.') {
			return false
		}
	}
	return s[len(s)-1] != '.'
}

// write renders the rule as one item of a block sequence at indent.
func (r *learnedRule) write(b *bytes.Buffer, indent string) {
	var total stat
	nNames, nWild, nIPs := 0, 0, 0
	for _, e := range r.entries {
		total.merge(e.total())
		switch {
		case e.isIP:
			nIPs++
		case e.wildcard:
			nWild++
		default:
			nNames++
		}
	}
	who := "any client"
	if r.group != "" {
		who = "group " + r.group
	}
	var parts []string
	for _, x := range []struct {
		n    int
		what string
	}{{nNames, "name"}, {nWild, "wildcard"}, {nIPs, "IP"}} {
		if x.n > 0 {
			parts = append(parts, plural(x.n, x.what))
		}
	}
	fmt.Fprintf(b, "%s# %s: %s; %s\n", indent, who, strings.Join(parts, ", "), total.describe())
	fmt.Fprintf(b, "%s- name: %s\n", indent, quote(r.name))
	in := indent + "  "
	if r.group != "" {
		fmt.Fprintf(b, "%sgroups: [%s]\n", in, quote(r.group))
	}
	perPort := len(r.ports) > 1
	for _, list := range []struct {
		key string
		ip  bool
	}{{"hosts", false}, {"cidrs", true}} {
		started := false
		for _, e := range r.entries {
			if e.isIP != list.ip {
				continue
			}
			if !started {
				fmt.Fprintf(b, "%s%s:\n", in, list.key)
				started = true
			}
			fmt.Fprintf(b, "%s  - %s # %s\n", in, quote(e.pattern), e.comment(perPort))
		}
	}
	ports := make([]string, len(r.ports))
	for i, p := range r.ports {
		ports[i] = strconv.Itoa(int(p))
	}
	fmt.Fprintf(b, "%sports: [%s]\n", in, strings.Join(ports, ", "))
	if len(r.exceptions) > 0 {
		q := make([]string, len(r.exceptions))
		for i, s := range r.exceptions {
			q[i] = quote(s)
		}
		fmt.Fprintf(b, "%sallow_ranges: [%s] # the config's, for names that resolved into deny_ranges\n", in, strings.Join(q, ", "))
	}
}

func (e *entry) comment(perPort bool) string {
	var b strings.Builder
	if e.wildcard {
		fmt.Fprintf(&b, "folds %s", plural(len(e.names), "name"))
		if e.more {
			b.WriteString(" and more")
		}
		if len(e.names) > 0 {
			shown := e.names
			if len(shown) > 3 {
				shown = shown[:3]
			}
			b.WriteString(" (" + strings.Join(shown, ", "))
			if len(e.names) > 3 {
				b.WriteString(", ...")
			}
			b.WriteString(")")
		}
		b.WriteString("; ")
	}
	b.WriteString(e.total().describe())
	if perPort {
		var ps []string
		for _, p := range e.ports {
			ps = append(ps, fmt.Sprintf("%d: %s", p.port, commas(p.count)))
		}
		b.WriteString("; by port " + strings.Join(ps, ", "))
	}
	return b.String()
}

// describe says "N requests, first T1, last T2".
func (s stat) describe() string {
	out := plural64(s.count, "request")
	if s.first != 0 {
		out += ", first " + stamp(s.first) + ", last " + stamp(s.last)
	}
	return out
}

func stamp(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }

func plural(n int, what string) string { return plural64(int64(n), what) }

func plural64(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return commas(n) + " " + what + "s"
}

// commas formats n with thousands separators.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (lr *Learned) header() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Proposed by egressd learn from %s in %s", plural64(lr.Counts.Access, "access line"), plural(lr.Counts.Files, "log"))
	if lr.span.first != 0 {
		fmt.Fprintf(&b, " (%s .. %s)", stamp(lr.span.first), stamp(lr.span.last))
	}
	fmt.Fprintf(&b, ", --fold %d, --min-count %d", lr.opt.Fold, lr.opt.MinCount)
	if lr.opt.Since > 0 {
		fmt.Fprintf(&b, ", --since %s", lr.opt.Since)
	}
	b.WriteString(".\nEvery rule is traffic that was seen, not traffic known to be safe: review before use.")
	if lr.cfg == nil {
		b.WriteString("\nWithout --config the rules are for any client; pass --config to learn per client group.")
	} else {
		b.WriteString("\nThe config's deny rules come first, unchanged; its allow rules are replaced by what the logs show.")
	}
	if skipped := lr.Counts.Malformed + lr.Counts.Other + lr.Counts.Old; skipped > 0 {
		fmt.Fprintf(&b, "\nSkipped: %s not JSON, %s JSON but not access lines, %s before --since.",
			commas(lr.Counts.Malformed), commas(lr.Counts.Other), commas(lr.Counts.Old))
	}
	return b.String()
}

func groupLabel(g string) string {
	if g == "" {
		return "any client"
	}
	return "group " + g
}

// findingsText lists what was never proposed.
func (lr *Learned) findingsText(c collected) string {
	var b strings.Builder
	keys := make([]findingKey, 0, len(lr.findings.buckets))
	for k := range lr.findings.buckets {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b findingKey) int {
		return cmp.Or(groupOrder(a.group, b.group), cmp.Compare(a.decision, b.decision), cmp.Compare(a.reason, b.reason),
			cmp.Compare(a.rule, b.rule), cmp.Compare(hostOrder(a.domain), hostOrder(b.domain)), cmp.Compare(a.port, b.port),
			cmp.Compare(a.why, b.why))
	})
	if len(keys) > 0 || len(c.denied) > 0 || len(c.lost) > 0 {
		b.WriteString("Findings: traffic that is never proposed; investigate each.")
	}
	for _, k := range keys {
		f := lr.findings.buckets[k]
		what := k.decision
		if k.reason != "" {
			what += " " + k.reason
		}
		if k.rule != "" {
			what += " (rule " + k.rule + ")"
		}
		var dest string
		if len(f.names) == 1 && !f.moreNames {
			dest = hostPort(f.names[0].name, k.port)
		} else {
			var ns []string
			for _, n := range f.names {
				ns = append(ns, n.name)
			}
			slices.Sort(ns)
			dest = fmt.Sprintf("%s under %s on port %d: %s", plural(len(ns), "name"), k.domain, k.port, strings.Join(ns, ", "))
			if f.moreNames {
				dest += ", and more"
			}
		}
		fmt.Fprintf(&b, "\n  %s: %s: %s; %s", groupLabel(k.group), what, dest, f.describe())
		if k.why != "" {
			b.WriteString("; " + k.why)
		}
	}
	for _, d := range c.denied {
		fmt.Fprintf(&b, "\n  %s: denied by the kept deny rule %s: %s; %s", groupLabel(d.group), d.rule, hostPort(d.pattern, d.port), d.describe())
	}
	for _, l := range c.lost {
		fmt.Fprintf(&b, "\n  %s: names under %s on port %d, counted before the public suffix %s showed below it, are not proposed "+
			"(a wildcard would cover other registrants); rerun with --fold 0 to list them; %s",
			groupLabel(l.group), l.parent, l.port, l.suffix, l.describe())
	}
	if len(c.rare) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n\n")
		}
		fmt.Fprintf(&b, "Seen fewer than --min-count %d times, not proposed:", lr.opt.MinCount)
		for i, r := range c.rare {
			if i == 200 {
				fmt.Fprintf(&b, "\n  and %d more", len(c.rare)-i)
				break
			}
			fmt.Fprintf(&b, "\n  %s: %s; %s", groupLabel(r.group), hostPort(r.pattern, r.port), r.describe())
		}
	}
	return b.String()
}

// hostPort writes host (a name, a wildcard, an address or a single-address
// prefix) with port.
func hostPort(host string, port uint16) string {
	if pr, err := netip.ParsePrefix(host); err == nil && pr.IsSingleIP() {
		host = pr.Addr().String()
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}
