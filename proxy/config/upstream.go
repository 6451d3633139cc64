package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/policy"
)

// UpstreamProxy is one parent proxy (upstream_proxies.NAME) that rules
// with via: NAME, or policy.default_via, hand their connections to.
type UpstreamProxy struct {
	// URLs are the parent's addresses, "http://host:port", tried in order
	// when one does not accept the connection.
	URLs []string `yaml:"urls"`
	// Username and PasswordFile are the Basic credentials sent in
	// Proxy-Authorization; both or neither.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// ConnectTimeout bounds the TCP connect to each URL.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`

	password string // PasswordFile's contents, read by Parse
}

// Password returns the password read from PasswordFile when the config
// was parsed ("" without one). It never appears in a marshalled config.
func (u UpstreamProxy) Password() string { return u.password }

// WithPassword returns u with the password set, as Parse would have read
// it from PasswordFile (for callers that build configs in code).
func (u UpstreamProxy) WithPassword(p string) UpstreamProxy {
	u.password = p
	return u
}

// DefaultUpstreamConnectTimeout is connect_timeout when omitted.
const DefaultUpstreamConnectTimeout = 5 * time.Second

// maxPasswordFile bounds a password file: a password, not a document.
const maxPasswordFile = 4096

// upstreamName is what a parent's name may be: it is a metric label value
// and a token in the access log.
var upstreamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// validateUpstream checks upstream_proxies (URLs, credentials, the
// password file's permissions, which it reads) and that every via and
// default_via names one of them.
func (d *decoder) validateUpstream(c *Config, decodeErrs int) {
	names := make([]string, 0, len(c.UpstreamProxies))
	for name := range c.UpstreamProxies {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u := c.UpstreamProxies[name]
		path := "upstream_proxies." + name
		if d.reported(path, decodeErrs) {
			continue
		}
		if !upstreamName.MatchString(name) {
			d.errorf(d.line(path), path, "%q: a name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
		}
		if len(u.URLs) == 0 {
			d.errorf(d.line(path+".urls"), path+".urls", "required: list at least one URL, e.g. \"http://10.1.2.3:8080\"")
		}
		for i, s := range u.URLs {
			p := fmt.Sprintf("%s.urls[%d]", path, i)
			if _, err := ParseUpstreamURL(s); err != nil {
				d.errorf(d.line(p), p, "%q: %v", redactURL(s), err)
			}
		}
		if _, set := d.lines[path+".connect_timeout"]; !set {
			u.ConnectTimeout = DefaultUpstreamConnectTimeout
		} else {
			d.positive(path+".connect_timeout", int64(u.ConnectTimeout))
		}
		switch {
		case u.Username != "" && u.PasswordFile == "":
			d.errorf(d.line(path+".username"), path+".username", "needs password_file")
		case u.Username == "" && u.PasswordFile != "":
			d.errorf(d.line(path+".password_file"), path+".password_file", "needs username")
		case strings.ContainsAny(u.Username, ":\r\n") || hasControl(u.Username):
			d.errorf(d.line(path+".username"), path+".username", "must not contain ':' or control characters (Basic credentials)")
		}
		if u.PasswordFile != "" {
			p := path + ".password_file"
			pw, err := readPasswordFile(u.PasswordFile)
			if err != nil {
				d.errorf(d.line(p), p, "%v", err)
			}
			u.password = pw
		}
		c.UpstreamProxies[name] = u
	}
	check := func(path, via string) {
		if via == "" {
			return
		}
		if _, ok := c.UpstreamProxies[via]; !ok && !d.reported(path, decodeErrs) {
			d.errorf(d.line(path), path, "%q: no such parent in upstream_proxies", via)
		}
	}
	check("policy.default_via", c.Policy.DefaultVia)
	for i, r := range c.Policy.Rules {
		if r.Action != policy.ActionDeny {
			check(fmt.Sprintf("policy.rules[%d].via", i), r.Via)
		}
	}
}

// ParseUpstreamURL checks a parent's URL: http://host[:port] (port 80 when
// omitted), host an IP or a name, nothing else (credentials belong in
// username and password_file, where they stay out of logs). It returns
// host:port.
func ParseUpstreamURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http":
		return "", errors.New("want http://host:port (a parent is spoken to in plain HTTP)")
	case u.User != nil:
		return "", errors.New("credentials do not go in the URL: set username and password_file")
	case u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", errors.New("want http://host:port, with no path or query")
	case u.Hostname() == "":
		return "", errors.New("no host")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", errors.New("port must be 1..65535")
	}
	if strings.Contains(host, "%") {
		return "", errors.New("zones are not allowed")
	}
	if _, _, _, err := policy.NormalizeHost(host); err != nil {
		return "", errors.New("host must be an IP address or a name")
	}
	return net.JoinHostPort(host, port), nil
}

// readPasswordFile reads a parent's password: the file's contents without
// one trailing newline. It refuses a file that others than its owner can
// read (the password of a corporate proxy account), an empty one, and one
// with a line break inside.
func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s: readable by group or others (mode %04o): chmod 600 it (or 400), owned by the user egressd runs as", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if len(b) > maxPasswordFile {
		return "", fmt.Errorf("%s: larger than %d bytes: not a password", path, maxPasswordFile)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	switch {
	case len(b) == 0:
		return "", fmt.Errorf("%s: empty", path)
	case bytes.ContainsAny(b, "\r\n"):
		return "", fmt.Errorf("%s: more than one line", path)
	}
	return string(b), nil
}

// redactURL is s with any password in it replaced by "xxxxx", for error
// messages: a URL given with credentials is an error, and its password
// must not reach the terminal or a log.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return "(a URL with credentials; not shown)"
	}
	return s
}

// unwrapPath drops the *PathError's own copy of the path.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
