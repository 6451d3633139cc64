package config

import (
	"net/netip"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/dlp"
	"github.com/egressd/egressd/proxy/inspect"
)

// Config is the whole config file. Parse fills omitted keys with the defaults
// documented in docs/config-schema.md.
type Config struct {
	Listen Listen `yaml:"listen"`
	DNS    DNS    `yaml:"dns"`
	// UpstreamProxies are parent proxies by name, for rules with via
	// and policy.default_via.
	UpstreamProxies map[string]UpstreamProxy `yaml:"upstream_proxies"`
	Policy          policy.Config            `yaml:"policy"`
	Auth            Auth                     `yaml:"auth"`
	Admin           Admin                    `yaml:"admin"`
	Limits          Limits                   `yaml:"limits"`
	Timeouts        Timeouts                 `yaml:"timeouts"`
	Log             Log                      `yaml:"log"`
	DLP             DLP                      `yaml:"dlp"`
	Cache           Cache                    `yaml:"cache"`
	// TLSInspection is the CA and settings of rules with inspect: true.
	TLSInspection TLSInspection `yaml:"tls_inspection"`
}

// Listen holds the listener addresses ("host:port"; "" disables one). They
// are not reloadable: changing them needs a restart.
type Listen struct {
	HTTP           string         `yaml:"http"`            // HTTP forward proxy and CONNECT
	SOCKS5         string         `yaml:"socks5"`          // SOCKS5
	Admin          string         `yaml:"admin"`           // /metrics, /healthz, /readyz, the status page
	Transparent    string         `yaml:"transparent"`     // in-line mode: TCP nftables redirects (or tproxies) here; "" disables
	ProxyProtocol  bool           `yaml:"proxy_protocol"`  // require PROXY v1/v2 headers, from TrustedProxies only
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies"` // load balancers allowed to send PROXY headers (CIDRs or IPs)
}

// DNS configures the resolver.
type DNS struct {
	Servers     []string      `yaml:"servers"`      // "host:port"; empty means the name servers of /etc/resolv.conf
	Timeout     time.Duration `yaml:"timeout"`      // per query
	CacheSize   int           `yaml:"cache_size"`   // entries
	MinTTL      time.Duration `yaml:"min_ttl"`      // floor on cached TTLs (0: record TTLs as given)
	MaxTTL      time.Duration `yaml:"max_ttl"`      // cap on cached TTLs
	NegativeTTL time.Duration `yaml:"negative_ttl"` // NXDOMAIN and no-address caching
	StaleTTL    time.Duration `yaml:"stale_ttl"`    // serve an expired answer this long when its refresh fails (0: off)
}

// Auth configures proxy authentication.
type Auth struct {
	UsersFile string        `yaml:"users_file"` // htpasswd file with bcrypt hashes
	Required  bool          `yaml:"required"`   // anonymous clients are denied auth_required
	CacheTTL  time.Duration `yaml:"cache_ttl"`  // how long a verification (success or failure) is remembered
	// MaxConcurrentChecks caps the bcrypt checks running at once; 0 means
	// the number of CPUs egressd uses (GOMAXPROCS). A check past the cap
	// waits up to timeouts.handshake, then is refused as an overload.
	MaxConcurrentChecks int `yaml:"max_concurrent_checks"`
}

// Admin configures the admin listener's extras.
type Admin struct {
	Pprof bool `yaml:"pprof"` // serve /debug/pprof on the admin listener
	UI    bool `yaml:"ui"`    // serve the status page (/) and /api/check, /api/denials
	// UIHosts are the names, besides IP literals and localhost, that the
	// status page, its API and pprof answer to in the Host header (DNS
	// rebinding protection). Validation normalizes them (lowercase, no
	// trailing dot, punycode).
	UIHosts []string `yaml:"ui_hosts"`
}

// Limits bounds resource use. A zero connection limit means no limit.
type Limits struct {
	MaxConnections          int  `yaml:"max_connections"`
	MaxConnectionsPerClient int  `yaml:"max_connections_per_client"`
	MaxHeaderBytes          Size `yaml:"max_header_bytes"`
	// MaxResponseHeaderBytes bounds an origin's (or parent's) response
	// head: past it the request fails with 502, as Squid's
	// reply_header_max_size does, instead of holding up to net/http's
	// 10 MiB default per request.
	MaxResponseHeaderBytes Size `yaml:"max_response_header_bytes"`
}

// Timeouts bounds every blocking step.
type Timeouts struct {
	Handshake  time.Duration `yaml:"handshake"`   // request line and headers, SOCKS greeting, ClientHello peek, wait for a bcrypt slot
	Connect    time.Duration `yaml:"connect"`     // dial, per address
	Idle       time.Duration `yaml:"idle"`        // a tunnel, or a forwarded request's wait, with no bytes either way is cut
	MaxTunnel  time.Duration `yaml:"max_tunnel"`  // 0 means no limit
	Drain      time.Duration `yaml:"drain"`       // in-flight work gets this long on SIGTERM
	DrainDelay time.Duration `yaml:"drain_delay"` // /readyz is 503 this long before listeners close
}

// Log configures logging.
type Log struct {
	Access     bool   `yaml:"access"`      // JSON access log (on stdout, or to AccessFile)
	AccessFile string `yaml:"access_file"` // path of the access log instead of stdout; reopened on SIGUSR1
	TunnelOpen bool   `yaml:"tunnel_open"` // also a line (event "open") when a tunnel is established
	Level      string `yaml:"level"`       // diagnostics on stderr: debug|info|warn|error
}

// DLP configures data-loss prevention on plain HTTP requests (proxy/dlp).
type DLP struct {
	DefaultProfile string                `yaml:"default_profile"` // profile for rules that name none; "" = no inspection
	MaxScanBytes   Size                  `yaml:"max_scan_bytes"`  // of each request body, after decoding
	Oversize       string                `yaml:"oversize"`        // block | allow | stream
	ICAP           DLPICAP               `yaml:"icap"`
	Profiles       map[string]DLPProfile `yaml:"profiles"`
}

// DLPICAP is the ICAP (RFC 3507) REQMOD service profiles may ask.
type DLPICAP struct {
	URL     string        `yaml:"url"`     // icap://host[:port]/service
	Timeout time.Duration `yaml:"timeout"` // per ICAP transaction
	Failure string        `yaml:"failure"` // open | closed
}

// DLPProfile is one inspection profile.
type DLPProfile struct {
	Mode      string       `yaml:"mode"`      // enforce | report
	Detectors []string     `yaml:"detectors"` // built-in detector names
	Patterns  []DLPPattern `yaml:"patterns"`  // custom RE2 patterns
	ICAP      bool         `yaml:"icap"`      // also ask the ICAP service
}

// DLPPattern is a custom pattern.
type DLPPattern struct {
	Name  string `yaml:"name"`
	Regex string `yaml:"regex"`
}

// Rules returns the dlp section in proxy/dlp's form.
func (d DLP) Rules() dlp.Config {
	c := dlp.Config{
		DefaultProfile: d.DefaultProfile,
		MaxScanBytes:   int64(d.MaxScanBytes),
		Oversize:       d.Oversize,
		ICAP:           dlp.ICAPConfig{URL: d.ICAP.URL, Timeout: d.ICAP.Timeout, Failure: d.ICAP.Failure},
		Profiles:       make(map[string]dlp.ProfileConfig, len(d.Profiles)),
	}
	for name, p := range d.Profiles {
		pc := dlp.ProfileConfig{Mode: p.Mode, Detectors: p.Detectors, ICAP: p.ICAP}
		for _, pt := range p.Patterns {
			pc.Patterns = append(pc.Patterns, dlp.PatternConfig{Name: pt.Name, Regex: pt.Regex})
		}
		c.Profiles[name] = pc
	}
	return c
}

// Cache configures egressd's caches of content.
type Cache struct {
	HTTP HTTPCache `yaml:"http"`
}

// HTTPCache configures the shared HTTP response cache of forwarded
// (absolute-URI) requests. Read at start only.
type HTTPCache struct {
	MaxBytes        Size          `yaml:"max_bytes"`        // 0 = off
	MaxObjectBytes  Size          `yaml:"max_object_bytes"` // larger responses stream through unbuffered
	CollapseTimeout time.Duration `yaml:"collapse_timeout"` // a request waits this long for a concurrent fetch of its URL
}

// TLSInspection configures the termination of inspected tunnels
// (proxy/inspect). The files are read at start and on every reload.
type TLSInspection struct {
	CACert         string   `yaml:"ca_cert"`          // PEM: the issuing CA certificate (an intermediate is fine), then its chain
	CAKey          string   `yaml:"ca_key"`           // PEM: its private key; must not be readable by group or others
	UpstreamCAFile string   `yaml:"upstream_ca_file"` // PEM roots added to the system's for origins; "" = the system's only
	Bypass         []string `yaml:"bypass"`           // names never inspected, even when a rule says so
}

// Inspect returns the section in proxy/inspect's form.
func (t TLSInspection) Inspect() inspect.Config {
	return inspect.Config{CACert: t.CACert, CAKey: t.CAKey, UpstreamCAFile: t.UpstreamCAFile, Bypass: t.Bypass}
}

// defaults returns the values used for keys a file omits.
func defaults() Config {
	return Config{
		Listen: Listen{HTTP: "127.0.0.1:3128", SOCKS5: "127.0.0.1:1080", Admin: "127.0.0.1:9090"},
		DNS: DNS{
			Timeout:     2 * time.Second,
			CacheSize:   10000,
			MinTTL:      5 * time.Second,
			MaxTTL:      5 * time.Minute,
			NegativeTTL: 5 * time.Second,
		},
		Policy: policy.Config{
			Mode:          policy.ModeEnforce,
			DenyRanges:    []string{policy.DefaultRanges},
			RequireSNI:    true,
			TLSPorts:      []int{443},
			HTTPPorts:     []int{80},
			ECH:           policy.ECHAllow,
			NAT64Prefixes: []string{"64:ff9b::/96"},
		},
		Auth:  Auth{CacheTTL: time.Minute},
		Admin: Admin{UI: true},
		Limits: Limits{
			MaxConnections:          10000,
			MaxConnectionsPerClient: 1000,
			MaxHeaderBytes:          64 << 10,
			MaxResponseHeaderBytes:  64 << 10,
		},
		Timeouts: Timeouts{
			Handshake:  10 * time.Second,
			Connect:    10 * time.Second,
			Idle:       5 * time.Minute,
			Drain:      30 * time.Second,
			DrainDelay: 5 * time.Second,
		},
		Log: Log{Access: true, Level: "info"},
		DLP: DLP{
			MaxScanBytes: 1 << 20,
			Oversize:     dlp.OversizeBlock,
			ICAP:         DLPICAP{Timeout: 5 * time.Second, Failure: dlp.FailureClosed},
		},
		Cache: Cache{HTTP: HTTPCache{
			MaxObjectBytes:  8 << 20,
			CollapseTimeout: 10 * time.Second,
		}},
	}
}
