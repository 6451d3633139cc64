package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/dlp"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default config file.
func DefaultYAML() []byte { return slices.Clone(defaultYAML) }

// Error is one problem in a config file, formatted "FILE:LINE: key.path: message".
type Error struct {
	File string // file name as given to Parse or Load
	Line int    // 1-based; 0 when unknown
	Path string // key path, e.g. policy.rules[2].hosts[0]
	Msg  string
}

// Error formats the error for humans and for `egressd validate`.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Parse decodes and validates a config file strictly: unknown keys, wrong
// types, bad values and policy errors (the policy section is compiled to
// check it) are all reported at once, joined with errors.Join, each an *Error.
// Omitted keys (and keys with no value) take the defaults of
// docs/config-schema.md. name is used in error messages.
func Parse(data []byte, name string) (*Config, error) {
	c, _, err := parse(data, name)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads, validates and compiles the config file at path.
func Load(path string) (*Config, *policy.Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return parse(data, path)
}

// Default parses, validates and compiles the embedded default config: the
// listeners on loopback, policy in report mode with no rules and
// `deny_ranges: [default]`.
func Default() (*Config, *policy.Policy, error) {
	return parse(defaultYAML, "default.yaml")
}

// Marshal encodes c as YAML that Parse reads back to the same Config.
func Marshal(c *Config) ([]byte, error) {
	return yaml.Marshal(encode(reflect.ValueOf(*c)))
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func parse(data []byte, name string) (*Config, *policy.Policy, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, nil, syntaxError(name, err)
		}
		return nil, nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document"}
	}
	c := defaults()
	d := &decoder{file: name, lines: make(map[string]int)}
	if doc.Kind != 0 {
		d.value(&doc, reflect.ValueOf(&c).Elem(), "")
	}
	d.validate(&c)
	decodeErrs := len(d.errs)
	p, err := policy.Compile(c.Policy)
	if err != nil {
		for _, e := range unjoin(err) {
			var fe *policy.FieldError
			if !errors.As(e, &fe) {
				d.errorf(d.line("policy"), "policy", "%v", e)
				continue
			}
			path := "policy." + fe.Path
			if d.reported(path, decodeErrs) {
				continue
			}
			d.errorf(d.line(path), path, "%s", fe.Msg)
		}
	}
	d.validateDLP(&c, decodeErrs)
	d.validateUpstream(&c, decodeErrs)
	d.validateInspection(&c)
	if len(d.errs) > 0 {
		slices.SortStableFunc(d.errs, func(a, b *Error) int { return lineKey(a.Line) - lineKey(b.Line) })
		errs := make([]error, len(d.errs))
		for i, e := range d.errs {
			errs[i] = e
		}
		return nil, nil, errors.Join(errs...)
	}
	return &c, p, nil
}

func syntaxError(name string, err error) *Error {
	e := &Error{File: name, Msg: err.Error()}
	if m := yamlLine.FindStringSubmatch(e.Msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = strings.TrimPrefix(e.Msg, m[0])
	}
	return e
}

func lineKey(l int) int {
	if l <= 0 {
		return int(^uint(0) >> 2)
	}
	return l
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// reported reports whether one of the first n errors already concerns path,
// a parent of it or a child of it, so a value that failed to decode does not
// also show up as, say, a missing required key.
func (d *decoder) reported(path string, n int) bool {
	for _, e := range d.errs[:n] {
		if e.Path == path || strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[") ||
			strings.HasPrefix(e.Path, path+".") || strings.HasPrefix(e.Path, path+"[") {
			return true
		}
	}
	return false
}

// validateDLP compiles the dlp section (patterns, names, ICAP URL) and
// checks that every profile a policy rule names exists.
func (d *decoder) validateDLP(c *Config, decodeErrs int) {
	rules, err := dlp.Compile(c.DLP.Rules())
	var errs []error
	if err != nil {
		errs = unjoin(err)
	}
	for _, e := range errs {
		var fe *dlp.FieldError
		if !errors.As(e, &fe) {
			d.errorf(d.line("dlp"), "dlp", "%v", e)
			continue
		}
		path := "dlp." + fe.Path
		if !d.reported(path, decodeErrs) {
			d.errorf(d.line(path), path, "%s", fe.Msg)
		}
	}
	for i, r := range c.Policy.Rules {
		if r.DLP == "" {
			continue
		}
		_, ok := c.DLP.Profiles[r.DLP]
		if rules != nil {
			ok = rules.Has(r.DLP)
		}
		if !ok {
			path := fmt.Sprintf("policy.rules[%d].dlp", i)
			d.errorf(d.line(path), path, "%q: no such profile in dlp.profiles", r.DLP)
		}
	}
}

// validateInspection checks tls_inspection against the rules that need
// it. The files it names are read where they are used (proxy/inspect, at
// start, on reload and by egressd validate), not here.
func (d *decoder) validateInspection(c *Config) {
	t := c.TLSInspection
	switch {
	case t.CACert != "" && t.CAKey == "":
		d.errorf(d.line("tls_inspection.ca_cert"), "tls_inspection.ca_key", "required with tls_inspection.ca_cert")
	case t.CAKey != "" && t.CACert == "":
		d.errorf(d.line("tls_inspection.ca_key"), "tls_inspection.ca_cert", "required with tls_inspection.ca_key")
	}
	if t.UpstreamCAFile != "" && t.CACert == "" {
		d.errorf(d.line("tls_inspection.upstream_ca_file"), "tls_inspection.upstream_ca_file", "has no effect without tls_inspection.ca_cert and ca_key")
	}
	for i, s := range t.Bypass {
		path := fmt.Sprintf("tls_inspection.bypass[%d]", i)
		if _, err := policy.ParseHostPattern(s); err != nil {
			d.errorf(d.line(path), path, "%q: %v", s, err)
		}
	}
	if t.CACert != "" {
		return
	}
	for i, r := range c.Policy.Rules {
		if r.Inspect {
			path := fmt.Sprintf("policy.rules[%d].inspect", i)
			d.errorf(d.line(path), path, "needs tls_inspection.ca_cert and ca_key: the CA that signs the certificates clients see")
		}
	}
}

// validate checks the non-policy sections.
func (d *decoder) validate(c *Config) {
	listeners := []struct{ path, addr string }{
		{"listen.http", c.Listen.HTTP},
		{"listen.socks5", c.Listen.SOCKS5},
		{"listen.admin", c.Listen.Admin},
		{"listen.transparent", c.Listen.Transparent},
	}
	used := map[string]string{}
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		host, port, err := splitHostPort(l.addr)
		if err != nil {
			d.errorf(d.line(l.path), l.path, "%q: %v", l.addr, err)
			continue
		}
		if port == 0 {
			continue
		}
		key := net.JoinHostPort(host, strconv.Itoa(port))
		if prev, dup := used[key]; dup {
			// Blame the key the file sets, not a default.
			path, other := l.path, prev
			if _, set := d.lines[path]; !set {
				path, other = prev, path
			}
			d.errorf(d.line(path), path, "%q: same address as %s", l.addr, other)
		}
		used[key] = l.path
	}
	if c.Listen.ProxyProtocol && len(c.Listen.TrustedProxies) == 0 {
		d.errorf(d.line("listen.proxy_protocol"), "listen.proxy_protocol",
			"needs listen.trusted_proxies: PROXY headers are accepted only from them")
	}
	for i, s := range c.DNS.Servers {
		path := fmt.Sprintf("dns.servers[%d]", i)
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 {
			d.errorf(d.line(path), path, "%q: want IP:port, e.g. \"10.0.0.2:53\" or \"[2001:db8::53]:53\"", s)
		}
	}
	d.positive("dns.timeout", int64(c.DNS.Timeout))
	d.nonNegative("dns.cache_size", int64(c.DNS.CacheSize))
	d.nonNegative("dns.min_ttl", int64(c.DNS.MinTTL))
	d.nonNegative("dns.max_ttl", int64(c.DNS.MaxTTL))
	d.nonNegative("dns.negative_ttl", int64(c.DNS.NegativeTTL))
	d.nonNegative("dns.stale_ttl", int64(c.DNS.StaleTTL))
	if c.DNS.MaxTTL > 0 && c.DNS.MinTTL > c.DNS.MaxTTL && !d.failed("dns.min_ttl") {
		d.errorf(d.line("dns.min_ttl"), "dns.min_ttl", "%v is more than dns.max_ttl (%v)", c.DNS.MinTTL, c.DNS.MaxTTL)
	}
	if c.Auth.Required && c.Auth.UsersFile == "" {
		d.errorf(d.line("auth.required"), "auth.required", "needs auth.users_file")
	}
	d.nonNegative("auth.cache_ttl", int64(c.Auth.CacheTTL))
	d.nonNegative("auth.max_concurrent_checks", int64(c.Auth.MaxConcurrentChecks))
	d.nonNegative("limits.max_connections", int64(c.Limits.MaxConnections))
	d.nonNegative("limits.max_connections_per_client", int64(c.Limits.MaxConnectionsPerClient))
	d.positive("limits.max_header_bytes", int64(c.Limits.MaxHeaderBytes))
	d.positive("limits.max_response_header_bytes", int64(c.Limits.MaxResponseHeaderBytes))
	d.positive("timeouts.handshake", int64(c.Timeouts.Handshake))
	d.positive("timeouts.connect", int64(c.Timeouts.Connect))
	d.positive("timeouts.idle", int64(c.Timeouts.Idle))
	d.nonNegative("timeouts.max_tunnel", int64(c.Timeouts.MaxTunnel))
	d.nonNegative("timeouts.drain", int64(c.Timeouts.Drain))
	d.nonNegative("timeouts.drain_delay", int64(c.Timeouts.DrainDelay))
	for i, h := range c.Admin.UIHosts {
		path := fmt.Sprintf("admin.ui_hosts[%d]", i)
		name, _, isIP, err := policy.NormalizeHost(h)
		switch {
		case err != nil:
			d.errorf(d.line(path), path, "%q: want a host name without port or wildcard, e.g. \"egressd.internal\"", h)
		case isIP:
			d.errorf(d.line(path), path, "%q: an IP address; IP addresses are always accepted, list names only", h)
		default:
			c.Admin.UIHosts[i] = name
		}
	}
	if c.Log.AccessFile != "" && !c.Log.Access {
		d.errorf(d.line("log.access_file"), "log.access_file", "is set but log.access is false: nothing would be written")
	}
	if c.Log.TunnelOpen && !c.Log.Access {
		d.errorf(d.line("log.tunnel_open"), "log.tunnel_open", "is true but log.access is false: nothing would be written")
	}
	d.nonNegative("cache.http.max_bytes", int64(c.Cache.HTTP.MaxBytes))
	d.positive("cache.http.max_object_bytes", int64(c.Cache.HTTP.MaxObjectBytes))
	d.positive("cache.http.collapse_timeout", int64(c.Cache.HTTP.CollapseTimeout))
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		d.errorf(d.line("log.level"), "log.level", "%q: must be debug, info, warn or error", c.Log.Level)
	}
}

func (d *decoder) positive(path string, v int64) {
	if v <= 0 && !d.failed(path) {
		d.errorf(d.line(path), path, "must be greater than zero")
	}
}

func (d *decoder) nonNegative(path string, v int64) {
	if v < 0 && !d.failed(path) {
		d.errorf(d.line(path), path, "must not be negative")
	}
}

func (d *decoder) failed(path string) bool {
	for _, e := range d.errs {
		if e.Path == path {
			return true
		}
	}
	return false
}

// splitHostPort checks a listen address: host (empty, an IP or a name) and a
// numeric port 0..65535 (0 picks a free port, for tests).
func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, errors.New(`want host:port, e.g. "127.0.0.1:3128" or ":3128"`)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, errors.New("port must be a number 0..65535")
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			if _, _, isIP, err := policy.NormalizeHost(host); err != nil || isIP {
				return "", 0, errors.New("host must be an IP address or a name")
			}
		}
	}
	return host, int(n), nil
}
