package config

import "github.com/egressd/egressd/proxy/dlp"

// fieldDocs describes every config key for the JSON Schema (docs/
// egressd.schema.json) and `egressd config defaults`. Keys are dotted paths;
// "[]" stands for a list item, "*" for a map value. A key missing here
// fails the schema's generation and its test: add the key's line, then
// run `make schema`. Keep them in step with README's config reference.
var fieldDocs = map[string]string{
	"listen":                 "Listener addresses (host:port; \"\" disables one). Read at start only: changing them needs a restart.",
	"listen.http":            "HTTP forward proxy (absolute-URI requests) and CONNECT.",
	"listen.socks5":          "SOCKS5 (RFC 1928 CONNECT).",
	"listen.admin":           "Admin listener: /metrics, /healthz, /readyz, the status page (with admin.ui) and /debug/pprof (with admin.pprof).",
	"listen.transparent":     "In-line mode: the listener nftables hands redirected (or tproxied) client TCP to; the original destination, the TLS SNI or the HTTP Host decides. Empty: off.",
	"listen.proxy_protocol":  "Require a PROXY v1/v2 header on every connection, accepted only from listen.trusted_proxies; its source address is the client.",
	"listen.trusted_proxies": "CIDRs or IPs of the load balancers allowed to send PROXY headers.",

	"dns":              "The resolver. Read at start only.",
	"dns.servers":      "DNS servers as \"IP:port\", tried in order. Empty: the nameservers of /etc/resolv.conf (with its options timeout, attempts, rotate; no search list), re-read when it changes.",
	"dns.timeout":      "Time bound of each query to one server (resolv.conf's options timeout: wins when set).",
	"dns.cache_size":   "Names cached at most.",
	"dns.min_ttl":      "Answers are cached at least this long, whatever their TTL (0s: as the records say; TTL 0 is then never cached).",
	"dns.max_ttl":      "Answers are cached at most this long.",
	"dns.negative_ttl": "How long a name that does not exist (NXDOMAIN, or no address) is remembered.",
	"dns.stale_ttl":    "Serve an expired answer up to this long past its TTL when its refresh times out or fails (RFC 8767), asking again at most every 30s; 0s: off.",

	"policy":                      "Who may reach which hosts and ports. Reloads on SIGHUP or a change of the file.",
	"policy.mode":                 "enforce: deny what no rule allows. report: allow it and log decision=report with the reason (private ranges stay denied).",
	"policy.deny_ranges":          "Destination ranges never dialed: CIDRs, single IPs, or \"default\" for the built-in special-purpose list (RFC 1918, loopback, link-local and metadata, CGNAT, ...).",
	"policy.allow_ranges":         "Exceptions carved out of deny_ranges for every rule; the most specific range wins, a tie denies.",
	"policy.require_sni":          "Tunnels to a tls_ports port must send a TLS ClientHello whose SNI is the requested host.",
	"policy.tls_ports":            "Ports whose tunnels must carry TLS (SNI check); other ports are raw TCP.",
	"policy.http_ports":           "In-line mode: ports whose connections are HTTP, each request decided by its Host; not also in tls_ports.",
	"policy.groups":               "Client groups by name, referenced by rules.",
	"policy.groups.*":             "A client group: clients whose address is in cidrs or whose user is in users.",
	"policy.groups.*.cidrs":       "Client addresses of the group (CIDRs or IPs).",
	"policy.groups.*.users":       "Authenticated users (auth.users_file) of the group.",
	"policy.groups.*.mode":        "enforce or report for this group's clients; empty: policy.mode. A client in several groups is reported only when all of them report.",
	"policy.rules":                "Rules in order; the first that matches the client, host and port decides.",
	"policy.rules[].name":         "Unique name, logged as rule and counted in egressd_rule_matches_total.",
	"policy.rules[].action":       "allow (the default) or deny (denied_by_rule, in every mode).",
	"policy.rules[].groups":       "Groups whose clients the rule applies to; empty: every client.",
	"policy.rules[].hosts":        "Destination names: exact (\"github.com\") or \"*.suffix\" for every subdomain at any depth (not the suffix itself).",
	"policy.rules[].cidrs":        "IP-literal destinations (CIDRs or IPs); names never match them.",
	"policy.rules[].ports":        "Destination ports 1-65535; required for allow rules, omitted on a deny rule: every port.",
	"policy.rules[].allow_ranges": "Deny-range exceptions for this rule's destinations only (allow rules).",

	"auth":            "Proxy authentication.",
	"auth.users_file": "htpasswd file with bcrypt hashes (htpasswd -B); its contents reload with the config.",
	"auth.required":   "Clients without valid credentials are denied (407 on HTTP, auth_required).",
	"auth.cache_ttl":  "How long a credential check (success or failure) is remembered.",

	"admin":          "Admin listener extras.",
	"admin.pprof":    "Serve /debug/pprof on the admin listener.",
	"admin.ui":       "Serve the status page on the admin listener: GET / (HTML: recent denials, top hosts, rule hits, a policy tester), GET /api/check?client=IP&user=NAME&target=HOST:PORT (at most 10 a second, then 429) and GET /api/denials?limit=N (JSON). Reloads.",
	"admin.ui_hosts": "Names, besides IP addresses and localhost, that the status page, its API and /debug/pprof answer to in the Host header; any other Host gets 403 (DNS rebinding protection). /metrics, /healthz and /readyz answer any Host. Reloads.",

	"limits":                            "Resource limits; 0 means no limit for the connection counts.",
	"limits.max_connections":            "Client connections per instance; past it a connection is refused (503 X-Egress-Error: limit, SOCKS5 0x01).",
	"limits.max_connections_per_client": "Client connections per client address (the PROXY header's with listen.proxy_protocol).",
	"limits.max_header_bytes":           "Largest request header block (431 past it): bytes, or a number with a unit (64KiB, 1MB).",
	"limits.max_response_header_bytes":  "Largest response header block from an origin or parent proxy (the request fails with 502 X-Egress-Error past it).",

	"timeouts":             "Time bounds of every blocking step (Go durations: 500ms, 10s, 5m).",
	"timeouts.handshake":   "Request line and headers, SOCKS5 greeting, TLS ClientHello.",
	"timeouts.connect":     "Each dial of an origin address.",
	"timeouts.idle":        "A tunnel, or a forwarded request's wait (its body, the origin's answer, a client taking the response), with no byte either way this long is cut.",
	"timeouts.max_tunnel":  "Longest life of a tunnel; 0s: no limit.",
	"timeouts.drain":       "On SIGTERM, how long requests and tunnels in flight get after the listeners close.",
	"timeouts.drain_delay": "On SIGTERM, how long /readyz answers 503 before the listeners close (the load balancer's health check must see it).",

	"cache":                       "egressd's caches of content.",
	"cache.http":                  "The shared HTTP cache (RFC 9111) of forwarded (absolute-URI) requests, in memory. Read at start only.",
	"cache.http.max_bytes":        "Bytes the cache holds at most (bodies, header fields, a per-object overhead and the hit path's prepared header blocks), least recently used out first: bytes, or a number with a unit (512MiB). 0: the cache is off.",
	"cache.http.max_object_bytes": "Larger responses stream through without being buffered or stored; at most max_bytes.",
	"cache.http.collapse_timeout": "How long a request waits for a concurrent fetch of the same URL before it asks the origin itself.",

	"log":             "Logging.",
	"log.access":      "One JSON access-log line per request or tunnel.",
	"log.access_file": "Write the access log to this file instead of stdout; SIGUSR1 reopens it (logrotate). Empty: stdout.",
	"log.tunnel_open": "Also write an access line (event \"open\", the same fields) when a tunnel is established; its end line has event \"close\". Long tunnels become visible before they end.",
	"log.level":       "Diagnostics on stderr: debug, info, warn or error.",

	"policy.ech":            "A ClientHello with Encrypted Client Hello: allow (judge its outer SNI like any other) or deny (ech_refused).",
	"policy.nat64_prefixes": "IPv6 NAT64 prefixes (RFC 6052 lengths) whose embedded IPv4 address is checked against the deny ranges too; 64:ff9b::/96 always is.",
	"policy.rules[].dlp":    "DLP profile (dlp.profiles) for this rule's HTTP requests (forwarded, and inside inspected tunnels); empty: dlp.default_profile.",

	"policy.rules[].inspect":             "Terminate this rule's CONNECT and SOCKS5 tunnels (TLS inspection, with a leaf from tls_inspection's CA on tls_ports ports; plain HTTP on others) so that every request inside is checked like a forwarded one: Host against the SNI, methods, paths, DLP. Names in tls_inspection.bypass are never inspected.",
	"policy.rules[].methods":             "HTTP methods the rule allows (case-sensitive, e.g. GET, POST); empty: any. Others are denied not_allowed (403). Needs inspect.",
	"policy.rules[].paths":               "Request paths the rule allows: exact (\"/upload\") or a prefix ending in \"/*\" (\"/api/v2/*\"), matched percent-decoded; a path with dot or empty segments, backslashes or an escaped slash matches none. Empty: any. Needs inspect.",
	"policy.rules[].request_headers_add": "Request header fields set on every request the rule allows (replacing any the client sent), with {group}, {user}, {client}, {rule} and {host} filled in. Needs inspect.",

	"policy.rules[].request_headers_add.*": "The field's value; {group}, {user}, {client}, {rule} and {host} are filled in, control characters in them replaced by \"?\".",

	"tls_inspection":                  "TLS inspection of the tunnels of rules with inspect: true. The files are read at start and on every reload (a reload that cannot read them is refused).",
	"tls_inspection.ca_cert":          "PEM file: the CA certificate that signs the leaves clients see (an intermediate is fine), then its chain, served after each leaf.",
	"tls_inspection.ca_key":           "PEM file: the CA's private key (unencrypted). Refused when group or others can read it (chmod 600).",
	"tls_inspection.upstream_ca_file": "PEM file of roots added to the system's for verifying origins of inspected tunnels; empty: the system's roots only.",
	"tls_inspection.bypass":           "Names (exact or \"*.suffix\") never inspected, even when a rule says so: clients that pin certificates.",

	"upstream_proxies":                   "Parent proxies by name (a corporate proxy): rules with via: NAME, or policy.default_via, hand their allowed connections to one instead of dialing the destination. Reloads with the config.",
	"upstream_proxies.*":                 "One parent proxy, spoken to in HTTP: CONNECT host:port for tunnels, absolute-URI requests for forwarded HTTP.",
	"upstream_proxies.*.urls":            "The parent's addresses, \"http://host:port\" (IPs or names; private addresses are fine: this is trusted configuration), tried in order when one does not accept the connection.",
	"upstream_proxies.*.username":        "User of the Basic credentials sent in Proxy-Authorization; needs password_file.",
	"upstream_proxies.*.password_file":   "File holding the password (one line); it must not be readable by group or others, or egressd refuses the config. Read at start and on every reload; never logged.",
	"upstream_proxies.*.connect_timeout": "Time bound of the TCP connect to each URL (default 5s); past it the next URL is tried.",
	"policy.default_via":                 "Parent (upstream_proxies) for every allowed or reported request whose rule names none; empty: direct.",
	"policy.rules[].via":                 "Parent (upstream_proxies) that carries this rule's requests: egressd decides, then asks the parent for the destination by name (not resolving it itself). Empty: policy.default_via. Allow rules only.",

	"auth.max_concurrent_checks": "bcrypt checks running at once; 0: the CPUs egressd uses. A check past it waits up to timeouts.handshake, then is refused (overload).",

	"dlp":                             "Data-loss prevention on HTTP requests (forwarded, and inside inspected tunnels): profiles of detectors, patterns and an ICAP service.",
	"dlp.default_profile":             "Profile for rules that name none; empty: no inspection.",
	"dlp.max_scan_bytes":              "Bytes of each request body inspected, after decoding: bytes, or a number with a unit (1MiB).",
	"dlp.oversize":                    "A body past max_scan_bytes: block, allow (uninspected) or stream (the inspected part is held, the rest streamed).",
	"dlp.icap":                        "The ICAP (RFC 3507) REQMOD service that profiles with icap: true ask.",
	"dlp.icap.url":                    "icap://host[:port]/service (REQMOD; port 1344 when omitted). Required when a profile sets icap: true.",
	"dlp.icap.timeout":                "Time bound of each ICAP transaction: waiting for a pooled connection, OPTIONS when due, the request and the answer.",
	"dlp.icap.failure":                "When the ICAP service fails or times out: closed (503 dlp_unavailable, nothing reaches the origin) or open (forwarded; the access line says dlp_icap: error).",
	"dlp.profiles":                    "Inspection profiles by name, referenced by rules and default_profile.",
	"dlp.profiles.*":                  "One inspection profile.",
	"dlp.profiles.*.mode":             "enforce (the default: deny a request with a finding) or report (log it and let it through).",
	"dlp.profiles.*.detectors":        "Built-in detectors to run.",
	"dlp.profiles.*.patterns":         "Custom patterns (RE2) to look for.",
	"dlp.profiles.*.patterns[].name":  "The pattern's name, logged and counted as its detector.",
	"dlp.profiles.*.patterns[].regex": "RE2 regular expression; it must start with a literal, which the prefilter looks for.",
	"dlp.profiles.*.icap":             "Also ask the ICAP service (dlp.icap), after the built-in detectors found nothing.",
}

// fieldRules are JSON Schema keywords added to a key's schema: enums,
// ranges and required keys, for what the types alone do not say.
var fieldRules = map[string]map[string]any{
	"policy.mode":                       {"enum": []string{"enforce", "report"}},
	"policy.groups.*.mode":              {"enum": []string{"", "enforce", "report"}},
	"policy.rules[]":                    {"required": []string{"name"}},
	"policy.rules[].action":             {"enum": []string{"", "allow", "deny"}},
	"policy.rules[].ports[]":            {"minimum": 1, "maximum": 65535},
	"policy.tls_ports[]":                {"minimum": 1, "maximum": 65535},
	"policy.http_ports[]":               {"minimum": 1, "maximum": 65535},
	"log.level":                         {"enum": []string{"debug", "info", "warn", "error"}},
	"dns.cache_size":                    {"minimum": 0},
	"limits.max_connections":            {"minimum": 0},
	"limits.max_connections_per_client": {"minimum": 0},
	"policy.ech":                        {"enum": []string{"", "allow", "deny"}},
	"dlp.oversize":                      {"enum": []string{"block", "allow", "stream"}},
	"dlp.icap.failure":                  {"enum": []string{"open", "closed"}},
	"dlp.profiles.*.mode":               {"enum": []string{"", "enforce", "report"}},
	"dlp.profiles.*.detectors[]":        {"enum": dlp.BuiltinDetectors},
	"dlp.profiles.*.patterns[]":         {"required": []string{"name", "regex"}},
	"auth.max_concurrent_checks":        {"minimum": 0},
}
