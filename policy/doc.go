// Package policy owns every egress decision egressd makes.
//
// It holds the policy section of the config (Config), compiles it into an
// immutable *Policy (Compile), and answers requests from every front end
// through one Decider (Engine). It owns destination normalization
// (NormalizeHost: case, trailing dot, IDNA to punycode, IP literals in every
// inet_aton spelling), host patterns, client groups, rule matching, the
// special-purpose address ranges and the report-mode switch. It imports
// nothing from proxy/ or cache/; its only I/O is the injected Resolver.
//
// # Decision order
//
// A request is normalized, matched against the rules (first match wins;
// exact names, "*.suffix" wildcards at any depth but not the apex, and cidrs
// for IP-literal destinations only), then resolved, and every address is
// checked against deny_ranges with allow_ranges and the matched rule's
// allow_ranges and cidrs as exceptions: the most specific prefix wins and a
// tie is denied. An IPv6 address that embeds an IPv4 address (mapped,
// translated (SIIT), compatible, NAT64 under 64:ff9b::/96 or a
// nat64_prefixes entry, 6to4, Teredo) is denied if either address is.
//
// A rule with action deny that matches first denies with denied_by_rule and
// names the rule; nothing is resolved for it.
//
// Report mode turns not_allowed, port_not_allowed, sni_missing, sni_mismatch,
// ech_refused and protocol_mismatch into Verdict Report; it never relaxes
// private_range, a deny rule or tls_hello_invalid (a ClientHello the guard
// could not read is never relayed). The mode is the client's: a group's own
// mode, or the policy's; a client in several groups is in report mode only
// when every one of them is. Decision.Mode carries it to the later SNI and
// protocol checks.
// A passing request whose rule names an upstream proxy (via, else the
// policy's default_via; a report-mode request no rule allowed takes the via
// of the rule that matched its host on other ports, else default_via) is
// decided as any other but not resolved: Decision.Via names
// the parent, which resolves the name and applies its own policy. An IP
// literal is range-checked first all the same. Deny rules take no via.
//
// A host that cannot be normalized is denied with not_allowed in every mode:
// no rule can name it and there is nothing safe to dial.
//
// # Performance
//
// Exact hosts and wildcard suffixes are map keys with sorted rule-index
// lists, so Match costs one lookup per label of the host regardless of the
// number of rules, and allocates nothing for normalized ASCII names. The
// range check does one map lookup per distinct prefix length.
package policy
