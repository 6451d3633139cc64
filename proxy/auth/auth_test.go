package auth

import (
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
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
	a := New(usersOf(t, bcrypt.MinCost, "alice", "wonderland", "bob", "builder"), cache.NewAuthCache(100, time.Minute), cache.NewAuthCache(100, time.Minute))
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
	a := New(usersOf(t, bcrypt.MinCost, "alice", "wonderland"), nil, nil)
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
	a := New(usersOf(t, bcrypt.MinCost, "alice", "old", "bob", "builder"), c, cache.NewAuthCache(100, time.Hour))
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

// countBcrypt makes a's checks count themselves; gate, when non-nil, holds
// every check until it is closed.
func countBcrypt(a *Authenticator, gate chan struct{}) *atomic.Int64 {
	n := new(atomic.Int64)
	a.compare = func(hash, pass []byte) error {
		n.Add(1)
		if gate != nil {
			<-gate
		}
		return bcrypt.CompareHashAndPassword(hash, pass)
	}
	return n
}

// TestCacheSkipsBcrypt: with a cache, repeated verifications of the same
// credentials run bcrypt once; without one, every time; failures always.
func TestCacheSkipsBcrypt(t *testing.T) {
	u := usersOf(t, bcrypt.MinCost, "alice", "wonderland")
	cached := New(u, cache.NewAuthCache(100, time.Minute), nil)
	uncached := New(u, nil, nil)
	nc, nu := countBcrypt(cached, nil), countBcrypt(uncached, nil)
	for range 5 {
		if !cached.Verify("alice", "wonderland") || !uncached.Verify("alice", "wonderland") {
			t.Fatal("right password refused")
		}
		if cached.Verify("alice", "nope") {
			t.Fatal("wrong password accepted")
		}
	}
	if got := nc.Load(); got != 1+5 {
		t.Errorf("with a cache: %d bcrypt checks, want 1 for the right password and 5 for the wrong one", got)
	}
	if got := nu.Load(); got != 5 {
		t.Errorf("without a cache: %d bcrypt checks, want 5", got)
	}
}

// TestConcurrentChecksShareOneBcrypt: many connections that arrive at once
// with the same credentials (a client's burst after a restart, a reload or
// a cache expiry) wait for one bcrypt check and all get its answer, right
// or wrong, known user or not; different credentials do not wait for each
// other; nothing is remembered past the flight but a success in the cache.
func TestConcurrentChecksShareOneBcrypt(t *testing.T) {
	u := usersOf(t, bcrypt.MinCost, "alice", "wonderland", "bob", "builder")
	for _, tc := range []struct {
		name, user, pass string
		want             bool
	}{
		{"right password", "alice", "wonderland", true},
		{"wrong password", "alice", "nope", false},
		{"unknown user", "mallory", "wonderland", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []*cache.AuthCache{cache.NewAuthCache(100, time.Minute), nil} {
				a := New(u, c, nil)
				var mu sync.Mutex
				seen := map[string]int{}
				a.Observe = func(source, result string) {
					mu.Lock()
					seen[source+" "+result]++
					mu.Unlock()
				}
				gate := make(chan struct{})
				n := countBcrypt(a, gate)
				var joined atomic.Int64
				a.joinHook = func() { joined.Add(1) }
				const conns = 20
				results := make(chan bool, conns)
				for range conns {
					go func() { results <- a.Verify(tc.user, tc.pass) }()
				}
				// bob's check is not held up by alice's flight.
				other := make(chan bool)
				go func() { other <- a.Verify("bob", "builder") }()
				// Every check has joined a flight, and two run bcrypt
				// (held at the gate): alice's and bob's.
				waitFor(t, func() bool { return joined.Load() == conns+1 && n.Load() == 2 })
				close(gate)
				for range conns {
					if got := <-results; got != tc.want {
						t.Fatalf("Verify(%q) = %v, want %v", tc.user, got, tc.want)
					}
				}
				if !<-other {
					t.Fatal("bob refused")
				}
				if got := n.Load(); got != 2 {
					t.Fatalf("%d concurrent verifications ran %d bcrypt checks, want 1 (and 1 for bob)", conns, got-1)
				}
				result := map[bool]string{true: "ok", false: "fail"}[tc.want]
				wantSeen := map[string]int{"bcrypt " + result: 1, "shared " + result: conns - 1}
				wantSeen["bcrypt ok"]++ // bob
				mu.Lock()
				if diff := cmp.Diff(wantSeen, seen); diff != "" {
					t.Errorf("observed checks (-want +got):\n%s", diff)
				}
				mu.Unlock()
				// The flight is over: the next check is the cache's (a
				// success, with a cache) or a new bcrypt run.
				a.Verify(tc.user, tc.pass)
				want := int64(3)
				if tc.want && c != nil {
					want = 2
				}
				if got := n.Load(); got != want {
					t.Errorf("after the flight: %d bcrypt checks, want %d", got, want)
				}
			}
		})
	}
}

// TestFailuresRemembered: with a failure cache, a client repeating a wrong
// password or an unknown user name costs one bcrypt check, not one per
// connection, and the remembered failure never outlives what made it one:
// a users file that sets that password, or adds that user, lets it in at
// once. One cache given for both answers cannot turn a failure into a
// success.
func TestFailuresRemembered(t *testing.T) {
	shared := cache.NewAuthCache(100, time.Hour)
	for _, tc := range []struct {
		name       string
		ok, failed *cache.AuthCache
	}{
		{"separate caches", cache.NewAuthCache(100, time.Hour), cache.NewAuthCache(100, time.Hour)},
		{"one cache for both", shared, shared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := New(usersOf(t, bcrypt.MinCost, "alice", "wonderland"), tc.ok, tc.failed)
			n := countBcrypt(a, nil)
			for range 5 {
				if a.Verify("alice", "stale") {
					t.Fatal("wrong password accepted")
				}
				if a.Verify("mallory", "x") {
					t.Fatal("unknown user accepted")
				}
			}
			if got := n.Load(); got != 2 {
				t.Fatalf("5 tries each of a wrong password and an unknown user ran %d bcrypt checks, want 2", got)
			}
			if !a.Verify("alice", "wonderland") {
				t.Fatal("right password refused after failures")
			}
			a.SetUsers(usersOf(t, bcrypt.MinCost, "alice", "stale", "mallory", "x"))
			if !a.Verify("alice", "stale") {
				t.Error("the users file set the remembered wrong password, and it is still refused")
			}
			if !a.Verify("mallory", "x") {
				t.Error("the users file added the remembered unknown user, and it is still refused")
			}
			if a.Verify("alice", "wonderland") {
				t.Error("the old password is still accepted after the users file changed it")
			}
		})
	}
}

// waitFor polls cond until it holds, failing after 10 s (a guard against
// a hang, not a timing goal).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the verifications never lined up behind one bcrypt check")
		}
	}
}

// BenchmarkVerify shows what the cache saves: "bcrypt" runs the check on
// every call (cost 10, as htpasswd -B writes), "cached" the way a client
// sending many requests with the same credentials is checked.
func BenchmarkVerify(b *testing.B) {
	u := usersOf(b, bcrypt.DefaultCost, "alice", "wonderland")
	b.Run("bcrypt", func(b *testing.B) {
		a := New(u, nil, nil)
		for b.Loop() {
			if !a.Verify("alice", "wonderland") {
				b.Fatal("refused")
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		a := New(u, cache.NewAuthCache(100, time.Minute), nil)
		a.Verify("alice", "wonderland") // the one bcrypt check, before the timer starts
		for b.Loop() {
			if !a.Verify("alice", "wonderland") {
				b.Fatal("refused")
			}
		}
	})
	b.Run("header-cached", func(b *testing.B) {
		a := New(u, cache.NewAuthCache(100, time.Minute), nil)
		h := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wonderland"))
		a.VerifyHeader(h)
		for b.Loop() {
			if _, ok := a.VerifyHeader(h); !ok {
				b.Fatal("refused")
			}
		}
	})
}

// usersFile parses "user:hash" lines.
func usersFile(t testing.TB, lines ...string) *Users {
	t.Helper()
	u, err := Parse(strings.NewReader(strings.Join(lines, "\n")), "test")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUnknownUserAtHighestCost: an unknown user name is checked against a
// hash of the file's highest bcrypt cost, wherever that user is in the
// file, so it costs as much as the costliest wrong password and the time an
// answer takes does not tell which names exist.
func TestUnknownUserAtHighestCost(t *testing.T) {
	hash := func(pass string, cost int) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pass), cost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	cheap, dear := "cheap:"+hash("a", bcrypt.MinCost), "dear:"+hash("b", bcrypt.MinCost+2)
	for _, order := range [][]string{{cheap, dear}, {dear, cheap}, {cheap, dear, "cheap2:" + hash("c", bcrypt.MinCost)}} {
		a := New(usersFile(t, order...), nil, nil)
		var costs []int
		a.compare = func(h, pass []byte) error {
			c, err := bcrypt.Cost(h)
			if err != nil {
				t.Fatal(err)
			}
			costs = append(costs, c)
			return bcrypt.CompareHashAndPassword(h, pass)
		}
		if a.Verify("mallory", "b") || a.Verify("eve", "a") {
			t.Fatal("unknown user accepted")
		}
		if want := []int{bcrypt.MinCost + 2, bcrypt.MinCost + 2}; !cmp.Equal(costs, want) {
			t.Errorf("file order %v: unknown users checked at cost %v, want the highest, %v", order, costs, want)
		}
	}
}

// TestCheckLimit: with the cap at one, a second bcrypt check waits for the
// first; one that gets no slot within the wait fails as "overload" without
// running bcrypt, one whose slot frees in time runs. Fake time: the wait is
// exact.
func TestCheckLimit(t *testing.T) {
	u := usersOf(t, bcrypt.MinCost, "alice", "wonderland")
	synctest.Test(t, func(t *testing.T) {
		a := New(u, nil, nil)
		a.SetCheckLimit(1, 10*time.Second)
		var mu sync.Mutex
		var seen []string
		a.Observe = func(source, result string) {
			mu.Lock()
			seen = append(seen, source+" "+result)
			mu.Unlock()
		}
		gate := make(chan struct{})
		n := countBcrypt(a, gate)
		first := make(chan bool)
		go func() { first <- a.Verify("alice", "wonderland") }()
		synctest.Wait() // the first check holds the slot, in bcrypt
		start := time.Now()
		if a.Verify("alice", "other") {
			t.Fatal("an overloaded check succeeded")
		}
		if waited := time.Since(start); waited != 10*time.Second {
			t.Errorf("the overloaded check waited %v, want the 10s wait", waited)
		}
		if got := n.Load(); got != 1 {
			t.Fatalf("%d bcrypt checks ran, want only the first", got)
		}
		// A check that arrives now gets the slot once the first ends.
		second := make(chan bool)
		go func() { second <- a.Verify("alice", "wonderland2") }()
		synctest.Wait()
		time.Sleep(5 * time.Second)
		close(gate)
		if !<-first {
			t.Fatal("the first check failed")
		}
		if <-second {
			t.Fatal("wrong password accepted")
		}
		if got := n.Load(); got != 2 {
			t.Fatalf("%d bcrypt checks ran, want 2", got)
		}
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff([]string{"bcrypt overload", "bcrypt ok", "bcrypt fail"}, seen); diff != "" {
			t.Errorf("observed (-want +got):\n%s", diff)
		}
	})
}

// TestOverloadNotRemembered: an overloaded check says nothing about the
// password: it is not remembered as a failure, and the next try runs
// bcrypt.
func TestOverloadNotRemembered(t *testing.T) {
	a := New(usersOf(t, bcrypt.MinCost, "alice", "wonderland", "bob", "builder"),
		cache.NewAuthCache(100, time.Hour), cache.NewAuthCache(100, time.Hour))
	a.SetCheckLimit(1, 0)
	var mu sync.Mutex
	seen := map[string]int{}
	a.Observe = func(source, result string) {
		mu.Lock()
		seen[source+" "+result]++
		mu.Unlock()
	}
	gate := make(chan struct{})
	n := countBcrypt(a, gate)
	held := make(chan bool)
	go func() { held <- a.Verify("bob", "builder") }()
	waitFor(t, func() bool { return n.Load() == 1 })
	if a.Verify("alice", "wonderland") {
		t.Fatal("an overloaded check succeeded")
	}
	close(gate)
	if !<-held {
		t.Fatal("bob refused")
	}
	if !a.Verify("alice", "wonderland") {
		t.Fatal("right password refused after an overload")
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("%d bcrypt checks, want 2 (bob, then alice after her overload)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(map[string]int{"bcrypt overload": 1, "bcrypt ok": 2}, seen); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
}
