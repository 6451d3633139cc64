package cache

import (
	"testing"
	"time"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func TestTTLPerEntryExpiry(t *testing.T) {
	clk := newFakeClock()
	c := NewTTL[string, int](10, time.Minute)
	c.now = clk.now

	c.Add("short", 1, time.Second)
	c.Add("long", 2, time.Hour) // capped at a minute
	c.Add("zero", 3, 0)         // not stored

	if v, ok := c.Get("short"); !ok || v != 1 {
		t.Errorf("Get(short) = %v, %v; want 1, true", v, ok)
	}
	if _, ok := c.Get("zero"); ok {
		t.Errorf("Get(zero) found an entry added with TTL 0")
	}
	clk.advance(time.Second)
	if _, ok := c.Get("short"); ok {
		t.Errorf("Get(short) found an entry at its expiry")
	}
	if v, ok := c.Get("long"); !ok || v != 2 {
		t.Errorf("Get(long) = %v, %v; want 2, true", v, ok)
	}
	clk.advance(time.Minute)
	if _, ok := c.Get("long"); ok {
		t.Errorf("Get(long) outlived the maximum TTL")
	}
	if n := c.Len(); n != 0 {
		t.Errorf("Len = %d after expired reads, want 0", n)
	}
}

func TestTTLAddZeroRemoves(t *testing.T) {
	c := NewTTL[string, int](10, time.Minute)
	c.Add("k", 1, time.Minute)
	c.Add("k", 2, 0)
	if _, ok := c.Get("k"); ok {
		t.Errorf("Add with TTL 0 left the old entry in place")
	}
}

func TestTTLSizeBound(t *testing.T) {
	c := NewTTL[int, int](2, time.Minute)
	for i := range 3 {
		c.Add(i, i, time.Minute)
	}
	if _, ok := c.Get(0); ok {
		t.Errorf("oldest entry survived past the size bound")
	}
	if n := c.Len(); n != 2 {
		t.Errorf("Len = %d, want 2", n)
	}
}
