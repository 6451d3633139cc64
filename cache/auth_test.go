package cache

import (
	"testing"
	"time"
)

func TestAuthCache(t *testing.T) {
	clk := newFakeClock()
	a := NewAuthCache(100, time.Minute)
	a.c.now = clk.now

	if a.Seen("alice", "secret") {
		t.Fatalf("empty cache saw alice")
	}
	a.Add("alice", "secret")
	checks := []struct {
		name       string
		user, pass string
		want       bool
	}{
		{"same credentials", "alice", "secret", true},
		{"wrong password", "alice", "secret2", false},
		{"other user", "bob", "secret", false},
		{"split moved between user and password", "alices", "ecret", false},
		{"empty", "", "", false},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if got := a.Seen(c.user, c.pass); got != c.want {
				t.Errorf("Seen(%q, %q) = %v, want %v", c.user, c.pass, got, c.want)
			}
		})
	}
	clk.advance(time.Minute)
	if a.Seen("alice", "secret") {
		t.Errorf("verification outlived its TTL")
	}
}

func TestAuthCacheKeysAreSalted(t *testing.T) {
	a, b := NewAuthCache(1, time.Minute), NewAuthCache(1, time.Minute)
	if a.hash("u", "p") == b.hash("u", "p") {
		t.Errorf("two caches derive the same key: the salt is missing")
	}
}

func TestAuthCacheDisabled(t *testing.T) {
	a := NewAuthCache(100, 0)
	if a != nil {
		t.Fatalf("NewAuthCache with TTL 0 = %v, want nil", a)
	}
	a.Add("alice", "secret") // must not panic
	if a.Seen("alice", "secret") {
		t.Errorf("nil cache saw a verification")
	}
}
