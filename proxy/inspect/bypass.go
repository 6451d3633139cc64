package inspect

import (
	"fmt"

	"github.com/egressd/egressd/policy"
)

// Bypass is the set of names never inspected (tls_inspection.bypass):
// exact names and "*.suffix" patterns, as in a rule's hosts.
type Bypass struct {
	exact    map[string]struct{}
	wildcard []policy.HostPattern
}

// ParseBypass compiles the bypass list. An entry that is not a valid
// host pattern is an error naming its index.
func ParseBypass(names []string) (*Bypass, error) {
	b := &Bypass{exact: make(map[string]struct{}, len(names))}
	for i, s := range names {
		hp, err := policy.ParseHostPattern(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q: %w", KeyBypass, i, s, err)
		}
		if hp.Wildcard {
			b.wildcard = append(b.wildcard, hp)
		} else {
			b.exact[hp.Name] = struct{}{}
		}
	}
	return b, nil
}

// Matches reports whether host, normalized, is in the list.
func (b *Bypass) Matches(host string) bool {
	if b == nil {
		return false
	}
	if _, ok := b.exact[host]; ok {
		return true
	}
	for _, hp := range b.wildcard {
		if hp.Matches(host) {
			return true
		}
	}
	return false
}
