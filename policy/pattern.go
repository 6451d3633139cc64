package policy

import (
	"errors"
	"strings"
)

// HostPattern is a compiled entry of a rule's hosts list: an exact name, or
// "*." followed by a suffix, which matches every name below the suffix at any
// depth but not the suffix itself.
type HostPattern struct {
	Name     string // normalized name, or the suffix after "*." when Wildcard
	Wildcard bool
}

// String returns the pattern in config form.
func (h HostPattern) String() string {
	if h.Wildcard {
		return "*." + h.Name
	}
	return h.Name
}

// Matches reports whether the normalized host name matches the pattern.
func (h HostPattern) Matches(host string) bool {
	if !h.Wildcard {
		return host == h.Name
	}
	return len(host) > len(h.Name)+1 && strings.HasSuffix(host, h.Name) && host[len(host)-len(h.Name)-1] == '.'
}

var (
	errWildcardAlone = errors.New("a lone \"*\" is not allowed: list the hosts, or use mode report")
	errWildcardPos   = errors.New("wildcard only allowed as the leftmost label")
	errPatternIP     = errors.New("IP literal in hosts: IP destinations match only cidrs")
)

// ParseHostPattern parses and normalizes one hosts entry: "example.com" or
// "*.example.com". The name part goes through NormalizeHost, so IDNs, case
// and a trailing dot are handled as they are for requests.
func ParseHostPattern(s string) (HostPattern, error) {
	wildcard := false
	name := s
	if s == "*" || s == "*." {
		return HostPattern{}, errWildcardAlone
	}
	if strings.HasPrefix(s, "*.") {
		wildcard, name = true, s[2:]
	}
	if strings.Contains(name, "*") {
		return HostPattern{}, errWildcardPos
	}
	host, _, isIP, err := NormalizeHost(name)
	if err != nil {
		return HostPattern{}, err
	}
	if isIP {
		return HostPattern{}, errPatternIP
	}
	return HostPattern{Name: host, Wildcard: wildcard}, nil
}
