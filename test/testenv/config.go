package testenv

import (
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/config"
)

// Config is egressd's config file as proxy/config types it: tests build one
// with [NewConfig], set the fields they need, and start egressd with
// [Egressd.StartConfig] (or render it with [YAML] to rewrite a file for a
// reload). Being the product's own struct, it has every key the binary
// under test knows, and a renamed key is a compile error, not a config
// egressd refuses at start.
type Config = config.Config

// NewConfig returns the config a test starts from: every key at egressd's
// default (what an empty file gives), except
//
//   - no listener: set the ones the test uses (see [Listeners]); an empty
//     address disables a listener, and the defaults are fixed ports;
//   - timeouts.drain_delay 0s and timeouts.drain 2s, so the SIGTERM on
//     cleanup stops egressd at once.
//
// policy.mode is enforce, with deny_ranges [default] and no rule.
func NewConfig(t testing.TB) *Config {
	t.Helper()
	c, err := config.Parse(nil, "empty")
	if err != nil {
		t.Fatalf("egressd's defaults: %v", err)
	}
	c.Listen.HTTP, c.Listen.SOCKS5, c.Listen.Admin = "", "", ""
	c.Timeouts.DrainDelay = 0
	c.Timeouts.Drain = 2 * time.Second
	return c
}

// Listeners returns the HTTP, SOCKS5 and admin listen addresses on free
// ports of ip in ns (nil: the host namespace), for Config.Listen.
func Listeners(t testing.TB, ns *Netns, ip string) Listen {
	t.Helper()
	return Listen{HTTP: ns.FreeAddr(t, ip), SOCKS5: ns.FreeAddr(t, ip), Admin: ns.FreeAddr(t, ip)}
}

// YAML renders c as the config file egressd reads (every key written out,
// in the schema's order).
func YAML(t testing.TB, c *Config) string {
	t.Helper()
	b, err := config.Marshal(c)
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	return string(b)
}

// StartConfig starts egressd with c written to its config file; see
// [Egressd.Start].
func (e *Egressd) StartConfig(t testing.TB, c *Config) *Proc {
	t.Helper()
	return e.Start(t, YAML(t, c))
}

// Listen is the config's listen section; Rule is one policy.rules entry,
// and Group one policy.groups value.
type (
	Listen = config.Listen
	Rule   = policy.Rule
	Group  = policy.Group
)
