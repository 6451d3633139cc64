package rollout

import (
	"fmt"
	"strings"

	"github.com/egressd/egressd/policy"
)

// Diff renders `egressd learn --diff`: what the proposal would change
// against the current config (destinations it does not allow today), and
// which of today's rules, hosts and cidrs saw no traffic.
func (lr *Learned) Diff() []byte {
	c := lr.collect()
	var b strings.Builder
	name := lr.opt.ConfigName
	fmt.Fprintf(&b, "egressd learn --diff against %s: %s in %s", name, plural64(lr.Counts.Access, "access line"), plural(lr.Counts.Files, "log"))
	if lr.span.first != 0 {
		fmt.Fprintf(&b, " (%s .. %s)", stamp(lr.span.first), stamp(lr.span.last))
	}
	b.WriteString("\n")

	var adds []string
	kept, keptReqs := 0, int64(0)
	for _, e := range c.entries {
		for _, ps := range e.ports {
			p, st := ps.port, ps.stat
			if !ps.newToday {
				kept++
				keptReqs += st.count
				continue
			}
			line := fmt.Sprintf("  + %s: %s; %s", groupLabel(e.group), hostPort(e.pattern, p), st.describe())
			if e.wildcard {
				line += fmt.Sprintf("; folds %s", plural(len(e.names), "name"))
				if e.more {
					line += " and more"
				}
			}
			if len(e.exceptions) > 0 {
				line += "; allow_ranges " + strings.Join(e.exceptions, ", ")
			}
			adds = append(adds, line)
		}
	}
	fmt.Fprintf(&b, "\nWould add (not allowed by %s today): %d\n", name, len(adds))
	for _, l := range adds {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "\nAlready allowed today: %s (%s)\n", plural(kept, "destination"), plural64(keptReqs, "request"))

	var unusedAllow, unusedDeny, unusedParts []string
	for i, r := range lr.cfg.Policy.Rules {
		deny := r.Action == policy.ActionDeny
		if !lr.todayUsed[i] {
			line := fmt.Sprintf("  - rules[%d] %s", i, r.Name)
			if deny {
				unusedDeny = append(unusedDeny, line)
			} else {
				unusedAllow = append(unusedAllow, line)
			}
			continue
		}
		var parts []string
		for j, used := range lr.patUsed[i] {
			if !used {
				parts = append(parts, r.Hosts[j])
			}
		}
		for j, used := range lr.cidrUsed[i] {
			if !used {
				parts = append(parts, r.CIDRs[j])
			}
		}
		if len(parts) > 0 {
			unusedParts = append(unusedParts, fmt.Sprintf("  - rules[%d] %s: %s", i, r.Name, strings.Join(parts, ", ")))
		}
	}
	fmt.Fprintf(&b, "\nRules that saw no traffic (candidates to remove): %d\n", len(unusedAllow))
	for _, l := range unusedAllow {
		b.WriteString(l + "\n")
	}
	if len(unusedParts) > 0 {
		fmt.Fprintf(&b, "\nHosts and cidrs that saw no traffic, in rules that did:\n")
		for _, l := range unusedParts {
			b.WriteString(l + "\n")
		}
	}
	if len(unusedDeny) > 0 {
		fmt.Fprintf(&b, "\nDeny rules that saw no traffic (kept: learn never loosens them):\n")
		for _, l := range unusedDeny {
			b.WriteString(l + "\n")
		}
	}
	nf := int64(0)
	for _, f := range lr.findings.buckets {
		nf += f.count
	}
	for _, d := range c.denied {
		nf += d.count
	}
	if nf > 0 || len(c.rare) > 0 {
		fmt.Fprintf(&b, "\nNot proposed: %s of findings (denied or unsafe), %s below --min-count; the proposal lists them.\n",
			plural64(nf, "request"), plural(len(c.rare), "destination"))
	}
	return []byte(b.String())
}
