package auth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/egressd/egressd/cache"
)

func usersOf(t testing.TB, cost int, kv ...string) *Users {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(kv[i+1]), cost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(kv[i] + ":" + string(h) + "\n")
	}
	u, err := Parse(strings.NewReader(b.String()), "test")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestVerify(t *testing.T) {
	a := New(usersOf(t, bcrypt.MinCost, "alice", "wonderland", "bob", "builder"), cache.NewAuthCache(100, time.Minute))
	cases := []struct {
		name, user, pass string
		want             bool
	}{
		{"right", "alice", "wonderland", true},
		{"right again (cached)", "alice", "wonderland", true},
		{"other user", "bob", "builder", true},
		{"wrong password", "alice", "wonderland2", false},
		{"wrong password after a cached success", "alice", "Wonderland", false},
		{"password of another user", "alice", "builder", false},
		{"unknown user", "mallory", "wonderland", false},
		{"empty", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.Verify(tc.user, tc.pass); got != tc.want {
				t.Errorf("Verify(%q, ...) = %v, want %v", tc.user, got, tc.want)
			}
		})
	}
}

func TestVerifyHeader(t *testing.T) {
	a := New(usersOf(t, bcrypt.MinCost, "alice", "wonderland"), nil)
	hdr := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	if u, ok := a.VerifyHeader(hdr("alice:wonderland")); !ok || u != "alice" {
		t.Errorf("right credentials: %q, %v", u, ok)
	}
	for _, h := range []string{"", hdr("alice:nope"), hdr("eve:wonderland"), "Bearer x"} {
		if u, ok := a.VerifyHeader(h); ok || u != "" {
			t.Errorf("VerifyHeader(%q) = %q, %v; want refusal", h, u, ok)
		}
	}
}

// TestCacheFollowsTheUsersFile: a failed check leaves nothing in the
// cache, and a cached success does not survive a password change or a
// removal.
func TestCacheFollowsTheUsersFile(t *testing.T) {
	c := cache.NewAuthCache(100, time.Hour)
	a := New(usersOf(t, bcrypt.MinCost, "alice", "old", "bob", "builder"), c)
	if a.Verify("alice", "wrong") {
		t.Fatal("wrong password accepted")
	}
	hash, _ := a.Users().hash("alice")
	if c.Seen("alice", string(hash)+"wrong") {
		t.Fatal("a failed check was cached")
	}
	if !a.Verify("alice", "old") || !a.Verify("bob", "builder") {
		t.Fatal("right password refused")
	}
	a.SetUsers(usersOf(t, bcrypt.MinCost, "alice", "new"))
	if a.Verify("alice", "old") {
		t.Error("old password still accepted after the users file changed it")
	}
	if a.Verify("bob", "builder") {
		t.Error("removed user still accepted from the cache")
	}
	if !a.Verify("alice", "new") {
		t.Error("new password refused")
	}
}

// TestCacheSkipsBcrypt proves the cache is used: with a cache, repeated
// verifications of the same credentials take far less than one bcrypt
// check at the default cost each.
func TestCacheSkipsBcrypt(t *testing.T) {
	u := usersOf(t, bcrypt.DefaultCost, "alice", "wonderland")
	a := New(u, cache.NewAuthCache(100, time.Minute))
	start := time.Now()
	if !a.Verify("alice", "wonderland") {
		t.Fatal("refused")
	}
	one := time.Since(start)
	start = time.Now()
	const n = 200
	for i := 0; i < n; i++ {
		if !a.Verify("alice", "wonderland") {
			t.Fatal("refused")
		}
	}
	if all := time.Since(start); all > one {
		t.Fatalf("%d cached verifications took %v, more than one bcrypt check (%v)", n, all, one)
	}
}

// BenchmarkVerify shows what the cache saves: "bcrypt" runs the check on
// every call (cost 10, as htpasswd -B writes), "cached" the way a client
// sending many requests with the same credentials is checked.
func BenchmarkVerify(b *testing.B) {
	u := usersOf(b, bcrypt.DefaultCost, "alice", "wonderland")
	b.Run("bcrypt", func(b *testing.B) {
		a := New(u, nil)
		for b.Loop() {
			if !a.Verify("alice", "wonderland") {
				b.Fatal("refused")
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		a := New(u, cache.NewAuthCache(100, time.Minute))
		a.Verify("alice", "wonderland") // the one bcrypt check, before the timer starts
		for b.Loop() {
			if !a.Verify("alice", "wonderland") {
				b.Fatal("refused")
			}
		}
	})
	b.Run("header-cached", func(b *testing.B) {
		a := New(u, cache.NewAuthCache(100, time.Minute))
		h := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wonderland"))
		a.VerifyHeader(h)
		for b.Loop() {
			if _, ok := a.VerifyHeader(h); !ok {
				b.Fatal("refused")
			}
		}
	})
}
