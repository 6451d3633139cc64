package dlp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Modes of a profile and values of dlp.oversize and dlp.icap.failure.
const (
	ModeEnforce = "enforce"
	ModeReport  = "report"

	OversizeBlock  = "block"
	OversizeAllow  = "allow"
	OversizeStream = "stream"

	FailureOpen   = "open"
	FailureClosed = "closed"
)

// Config is the dlp section of the config file, as written (proxy/config
// owns the YAML; this is its Go form).
type Config struct {
	DefaultProfile string
	MaxScanBytes   int64
	Oversize       string
	ICAP           ICAPConfig
	Profiles       map[string]ProfileConfig
}

// ICAPConfig is dlp.icap.
type ICAPConfig struct {
	URL     string        // icap://host:port/service; "" when no profile uses ICAP
	Timeout time.Duration // per ICAP transaction
	Failure string        // open | closed
}

// ProfileConfig is one dlp.profiles entry.
type ProfileConfig struct {
	Mode      string
	Detectors []string
	Patterns  []PatternConfig
	ICAP      bool
}

// FieldError is one problem in the dlp section; Path is relative to it
// ("profiles.strict.patterns[0].regex").
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Rules is a compiled dlp section: immutable, swapped whole on reload.
type Rules struct {
	defaultProfile string
	maxScan        int64
	oversize       string
	icap           ICAPConfig
	icapAddr       string // host:port
	icapService    *url.URL
	profiles       map[string]*profile
	// holdBufs are buffers of maxScan+1 bytes for the bodies held while
	// they are judged: one allocation per request would cost a zeroed
	// max_scan_bytes each time.
	holdBufs *sync.Pool
}

type profile struct {
	name    string
	report  bool
	matcher *Matcher // nil: no built-in detector or pattern
	icap    bool
}

// Compile validates c and builds its Rules. The error joins one
// *FieldError per problem.
func Compile(c Config) (*Rules, error) {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	r := &Rules{defaultProfile: c.DefaultProfile, maxScan: c.MaxScanBytes, oversize: c.Oversize, icap: c.ICAP,
		profiles: make(map[string]*profile, len(c.Profiles))}
	r.holdBufs = &sync.Pool{New: func() any { b := make([]byte, r.maxScan+1); return &b }}
	if c.MaxScanBytes <= 0 {
		fail("max_scan_bytes", "must be greater than zero")
	}
	switch c.Oversize {
	case OversizeBlock, OversizeAllow, OversizeStream:
	default:
		fail("oversize", "%q: must be block, allow or stream", c.Oversize)
	}
	usesICAP := false
	names := make([]string, 0, len(c.Profiles))
	for n := range c.Profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		pc := c.Profiles[name]
		path := "profiles." + name
		p := &profile{name: name, icap: pc.ICAP}
		switch pc.Mode {
		case ModeEnforce, "":
		case ModeReport:
			p.report = true
		default:
			fail(path+".mode", "%q: must be enforce or report", pc.Mode)
		}
		ok := true
		for i, d := range pc.Detectors {
			if !slices.Contains(BuiltinDetectors, d) {
				fail(fmt.Sprintf("%s.detectors[%d]", path, i), "%q: unknown detector (known: %v)", d, BuiltinDetectors)
				ok = false
			}
		}
		seen := map[string]bool{}
		for i, pt := range pc.Patterns {
			pp := fmt.Sprintf("%s.patterns[%d]", path, i)
			switch {
			case pt.Name == "":
				fail(pp+".name", "required")
				ok = false
			case slices.Contains(BuiltinDetectors, pt.Name) || pt.Name == FindingOversize || pt.Name == FindingBomb ||
				pt.Name == FindingUndecodable || pt.Name == FindingICAP:
				fail(pp+".name", "%q: the name of a built-in detector", pt.Name)
				ok = false
			case seen[pt.Name]:
				fail(pp+".name", "%q: duplicate pattern name", pt.Name)
				ok = false
			}
			seen[pt.Name] = true
			if _, err := compilePattern(pt.Name, pt.Regex); err != nil {
				fail(pp+".regex", "%q: %v", pt.Regex, err)
				ok = false
			}
		}
		if ok && (len(pc.Detectors) > 0 || len(pc.Patterns) > 0) {
			m, err := compileMatcher(pc.Detectors, pc.Patterns)
			if err != nil {
				fail(path, "%v", err)
			}
			p.matcher = m
		}
		if !pc.ICAP && len(pc.Detectors) == 0 && len(pc.Patterns) == 0 {
			fail(path, "inspects nothing: list detectors or patterns, or set icap: true")
		}
		usesICAP = usesICAP || pc.ICAP
		r.profiles[name] = p
	}
	if c.DefaultProfile != "" && r.profiles[c.DefaultProfile] == nil {
		fail("default_profile", "%q: no such profile in dlp.profiles", c.DefaultProfile)
	}
	switch c.ICAP.Failure {
	case FailureOpen, FailureClosed:
	default:
		fail("icap.failure", "%q: must be open or closed", c.ICAP.Failure)
	}
	if c.ICAP.Timeout <= 0 {
		fail("icap.timeout", "must be greater than zero")
	}
	if c.ICAP.URL != "" {
		u, err := url.Parse(c.ICAP.URL)
		switch {
		case err != nil || u.Scheme != "icap" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
			fail("icap.url", "%q: want icap://host[:port]/service", c.ICAP.URL)
		default:
			host, port := u.Hostname(), u.Port()
			if port == "" {
				port = "1344"
			}
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				fail("icap.url", "%q: bad port", c.ICAP.URL)
			}
			r.icapAddr = net.JoinHostPort(host, port)
			r.icapService = u
		}
	} else if usesICAP {
		fail("icap.url", "required: a profile sets icap: true")
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Has reports whether name is a profile.
func (r *Rules) Has(name string) bool {
	_, ok := r.profiles[name]
	return ok
}

// Profiles lists the profile names, sorted.
func (r *Rules) Profiles() []string {
	out := make([]string, 0, len(r.profiles))
	for n := range r.profiles {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Detectors lists every detector name a finding of these rules can carry
// (for metrics that exist from start).
func (r *Rules) Detectors() []string {
	out := slices.Clone(BuiltinDetectors)
	out = append(out, FindingOversize, FindingBomb, FindingUndecodable, FindingICAP)
	for _, p := range r.profiles {
		if p.matcher == nil {
			continue
		}
		for _, d := range p.matcher.dets {
			if !slices.Contains(out, d.name) {
				out = append(out, d.name)
			}
		}
	}
	return out
}

// select returns the profile for a rule's dlp field: the rule's own, else
// dlp.default_profile, else none.
func (r *Rules) pick(name string) *profile {
	if name == "" {
		name = r.defaultProfile
	}
	if name == "" {
		return nil
	}
	return r.profiles[name]
}
