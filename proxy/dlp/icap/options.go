package icap

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Options is what the service said about itself in its OPTIONS response
// (RFC 3507 section 4.10.2).
type Options struct {
	ISTag   string   // the service's state tag; a response with another one means the options changed
	Methods []string // e.g. REQMOD, RESPMOD
	// Preview is how many body bytes the service wants before it decides
	// whether it needs the rest; -1 when it takes no preview.
	Preview int
	// Allow204 is the service's "Allow: 204": it can answer 204 outside a
	// preview.
	Allow204 bool
	// MaxConnections is the service's limit on concurrent connections;
	// 0 when it names none.
	MaxConnections int
	// TTL is how long these options are valid; 0 means until the ISTag
	// changes.
	TTL time.Duration

	fetched time.Time
}

// parseOptions reads the options from an OPTIONS response.
func parseOptions(r *response, now time.Time) (*Options, error) {
	if r.status != StatusOK {
		return nil, fmt.Errorf("icap: OPTIONS answered %d", r.status)
	}
	h := r.header
	o := &Options{ISTag: h.Get("Istag"), Preview: -1, fetched: now}
	for _, v := range h.Values("Methods") {
		for m := range strings.SplitSeq(v, ",") {
			if m = strings.TrimSpace(m); m != "" {
				o.Methods = append(o.Methods, strings.ToUpper(m))
			}
		}
	}
	if v := h.Get("Preview"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > 1<<20 {
			return nil, protoErr("bad Preview in OPTIONS")
		}
		o.Preview = n
	}
	for _, v := range h.Values("Allow") {
		for a := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(a) == "204" {
				o.Allow204 = true
			}
		}
	}
	if v := h.Get("Max-Connections"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return nil, protoErr("bad Max-Connections in OPTIONS")
		}
		o.MaxConnections = n
	}
	if v := h.Get("Options-Ttl"); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 || n > 1<<31 {
			return nil, protoErr("bad Options-TTL in OPTIONS")
		}
		// An explicit 0 would mean an OPTIONS before every request:
		// a second is the shortest validity honoured.
		o.TTL = time.Duration(max(n, 1)) * time.Second
	}
	return o, nil
}

// supports reports whether the service lists method.
func (o *Options) supports(method string) bool {
	for _, m := range o.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// fresh reports whether the options are still valid at now.
func (o *Options) fresh(now time.Time) bool {
	return o.TTL == 0 || now.Before(o.fetched.Add(o.TTL))
}
