package egress

import (
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitPipesIdle waits, bounded, until no pipe is lent: a relay gives its
// pipe back right after the write the test has just observed.
func waitPipesIdle(t testing.TB, pool *PipePool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); pool.Stats().InUse != 0; {
		if time.Now().After(end) {
			t.Fatalf("pipes still lent: %+v", pool.Stats())
		}
		runtime.Gosched()
	}
}

// TestIdleTunnelsHoldNoPipes opens tunnels, moves bytes both ways through
// each (so every direction has used a pipe), lets them go idle, and counts
// descriptors: each idle tunnel holds its two proxy-side sockets and no
// pipe. The test's own client and origin ends are the other two of the four
// descriptors per tunnel counted here.
func TestIdleTunnelsHoldNoPipes(t *testing.T) {
	const n = 200
	pool := &PipePool{MaxIdle: 4}
	runtime.GC()
	baseFDs := openFDs(t)
	baseG := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	tunnels := make([]*tunnel, n)
	buf := make([]byte, 5)
	for i := range tunnels {
		tn := startRelay(t, RelayOptions{Pipes: pool, Idle: time.Hour})
		tunnels[i] = tn
		tn.client.Write([]byte("ping!"))
		if _, err := io.ReadFull(tn.origin, buf); err != nil {
			t.Fatal(err)
		}
		tn.origin.Write([]byte("pong!"))
		if _, err := io.ReadFull(tn.client, buf); err != nil {
			t.Fatal(err)
		}
	}
	waitPipesIdle(t, pool)
	if st := pool.Stats(); st.Idle > 4 {
		t.Fatalf("pool keeps %d idle pipes, max 4", st.Idle)
	}
	pool.Trim()
	fds := openFDs(t) - baseFDs
	if fds != 4*n {
		t.Fatalf("%d descriptors for %d idle tunnels, want %d (4 sockets each: 2 the relay's, 2 the test's)", fds, n, 4*n)
	}
	if g := runtime.NumGoroutine() - baseG; g != 2*n {
		t.Fatalf("%d goroutines for %d idle tunnels, want %d", g, n, 2*n)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perTunnel := func(a, b uint64) float64 { return float64(int64(a)-int64(b)) / n / 1024 }
	t.Logf("per idle tunnel: 2 relay fds; Go heap %.1f KiB, goroutine stacks %.1f KiB (both include the test's client and origin conns)",
		perTunnel(after.HeapInuse, before.HeapInuse), perTunnel(after.StackInuse, before.StackInuse))

	for _, tn := range tunnels {
		tn.client.Close()
		tn.origin.Close()
	}
	for _, tn := range tunnels {
		tn.wait(t)
	}
	if st := pool.Stats(); st.InUse != 0 {
		t.Fatalf("pipes lent after close: %+v", st)
	}
	pool.Trim()
	if fds := openFDs(t); fds != baseFDs {
		t.Fatalf("%d descriptors after close, want %d", fds, baseFDs)
	}
	goleak.VerifyNone(t)
}

// TestPipePoolBounds: extras are closed, and a pipe that may hold bytes is
// never pooled.
func TestPipePoolBounds(t *testing.T) {
	base := openFDs(t)
	pool := &PipePool{MaxIdle: 1}
	a, err := pool.get()
	if err != nil {
		t.Fatal(err)
	}
	b, err := pool.get()
	if err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st != (PipeStats{InUse: 2}) {
		t.Fatalf("%+v", st)
	}
	pool.put(a)
	pool.put(b) // over MaxIdle: closed
	if st := pool.Stats(); st != (PipeStats{Idle: 1}) || openFDs(t)-base != 2 {
		t.Fatalf("%+v, %d fds", st, openFDs(t)-base)
	}
	c, _ := pool.get()
	c.buffered = 1
	pool.put(c) // dirty: closed
	if st := pool.Stats(); st != (PipeStats{}) || openFDs(t) != base {
		t.Fatalf("%+v, %d fds", st, openFDs(t)-base)
	}
	none := &PipePool{MaxIdle: -1}
	d, _ := none.get()
	none.put(d)
	if st := none.Stats(); st != (PipeStats{}) || openFDs(t) != base {
		t.Fatalf("%+v", st)
	}
}
