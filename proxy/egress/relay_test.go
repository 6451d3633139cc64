package egress

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var pairMu sync.Mutex

// tcpPair returns both ends of one loopback TCP connection.
func tcpPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	pairMu.Lock()
	defer pairMu.Unlock()
	d, err := net.DialTCP("tcp4", nil, pairListener.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a, err := pairListener.AcceptTCP()
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	if a.RemoteAddr().String() != d.LocalAddr().String() {
		t.Fatalf("accepted %v, dialed from %v", a.RemoteAddr(), d.LocalAddr())
	}
	return d, a
}

type relayResult struct {
	up, down int64
	err      error
}

// tunnel is a running Relay between a test client and a test origin.
type tunnel struct {
	client *net.TCPConn // the test's client end
	origin *net.TCPConn // the test's origin end
	done   chan relayResult
	once   sync.Once
	res    relayResult
}

// startRelay runs Relay(proxy's client conn, proxy's upstream conn) in a
// goroutine that the test's cleanup waits for.
func startRelay(t testing.TB, opts RelayOptions) *tunnel {
	t.Helper()
	client, proxyClient := tcpPair(t)
	proxyUpstream, origin := tcpPair(t)
	tn := &tunnel{client: client, origin: origin, done: make(chan relayResult, 1)}
	Start(proxyClient, proxyUpstream, opts, func(up, down int64, err error) {
		tn.done <- relayResult{up, down, err}
	})
	t.Cleanup(func() {
		client.Close()
		origin.Close()
		tn.wait(t)
	})
	return tn
}

// wait returns Relay's result, failing the test if it does not end soon.
func (tn *tunnel) wait(t testing.TB) relayResult {
	t.Helper()
	tn.once.Do(func() {
		select {
		case tn.res = <-tn.done:
		case <-time.After(30 * time.Second):
			t.Fatal("Relay did not return")
		}
	})
	return tn.res
}

// ended reports whether Relay has returned, without waiting.
func (tn *tunnel) ended() bool {
	select {
	case r := <-tn.done:
		tn.once.Do(func() { tn.res = r })
		return true
	default:
		return false
	}
}

var modes = []struct {
	name string
	opts RelayOptions
}{
	{"splice", RelayOptions{}},
	{"copy", RelayOptions{NoSplice: true}},
}

// stream writes n pseudo-random bytes from seed to w, then closes its write
// half, and returns the SHA-256 of what it wrote.
func stream(w *net.TCPConn, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(src, n))
	if err == nil {
		err = w.CloseWrite()
	}
	return [32]byte(h.Sum(nil)), err
}

// drain reads r to EOF and returns the count and SHA-256.
func drain(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return n, [32]byte(h.Sum(nil)), err
}

// exchange sends up bytes client->origin and down bytes origin->client at
// the same time and checks both arrive intact.
func exchange(t *testing.T, tn *tunnel, up, down int64) {
	t.Helper()
	type sent struct {
		sum [32]byte
		err error
	}
	type got struct {
		n   int64
		sum [32]byte
		err error
	}
	sentUp, sentDown := make(chan sent, 1), make(chan sent, 1)
	gotUp, gotDown := make(chan got, 1), make(chan got, 1)
	go func() { s, err := stream(tn.client, 1, up); sentUp <- sent{s, err} }()
	go func() { s, err := stream(tn.origin, 2, down); sentDown <- sent{s, err} }()
	go func() { n, s, err := drain(tn.origin); gotUp <- got{n, s, err} }()
	go func() { n, s, err := drain(tn.client); gotDown <- got{n, s, err} }()
	for _, c := range []struct {
		name string
		want int64
		s    chan sent
		g    chan got
	}{{"up", up, sentUp, gotUp}, {"down", down, sentDown, gotDown}} {
		s, g := <-c.s, <-c.g
		if s.err != nil || g.err != nil {
			t.Fatalf("%s: send %v, receive %v", c.name, s.err, g.err)
		}
		if g.n != c.want || g.sum != s.sum {
			t.Fatalf("%s: received %d bytes (sum match %v), want %d", c.name, g.n, g.sum == s.sum, c.want)
		}
	}
}

func TestRelayBothWays(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tn := startRelay(t, m.opts)
			exchange(t, tn, 3<<20+17, 5<<20+3)
			r := tn.wait(t)
			if r.err != nil || r.up != 3<<20+17 || r.down != 5<<20+3 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

func TestRelayLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB each way")
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tn := startRelay(t, m.opts)
			exchange(t, tn, 64<<20, 64<<20)
			if r := tn.wait(t); r.err != nil || r.up != 64<<20 || r.down != 64<<20 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

func TestRelayEmpty(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tn := startRelay(t, m.opts)
			exchange(t, tn, 0, 0)
			if r := tn.wait(t); r.err != nil || r.up != 0 || r.down != 0 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

// TestRelayHalfClose: the client shuts down its write half; the origin
// reads EOF and can still send its reply, which the client receives.
func TestRelayHalfClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tn := startRelay(t, m.opts)
			if _, err := tn.client.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := tn.client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			req, err := io.ReadAll(tn.origin)
			if err != nil || string(req) != "request" {
				t.Fatalf("origin read %q, %v", req, err)
			}
			if tn.ended() {
				t.Fatal("tunnel ended on the client's half-close")
			}
			if _, err := tn.origin.Write([]byte("reply")); err != nil {
				t.Fatal(err)
			}
			tn.origin.CloseWrite()
			reply, err := io.ReadAll(tn.client)
			if err != nil || string(reply) != "reply" {
				t.Fatalf("client read %q, %v", reply, err)
			}
			if r := tn.wait(t); r.err != nil || r.up != 7 || r.down != 5 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

// TestRelayOriginClosesFirst: the origin sends and closes; the client gets
// every byte then EOF, and may still send before it closes.
func TestRelayOriginClosesFirst(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tn := startRelay(t, m.opts)
			if _, err := tn.origin.Write([]byte("bye")); err != nil {
				t.Fatal(err)
			}
			tn.origin.CloseWrite()
			got, err := io.ReadAll(tn.client)
			if err != nil || string(got) != "bye" {
				t.Fatalf("client read %q, %v", got, err)
			}
			// The client's write half is still open: its bytes still
			// reach the origin, which has not closed its read side.
			if _, err := tn.client.Write([]byte("ack")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 3)
			if _, err := io.ReadFull(tn.origin, buf); err != nil || string(buf) != "ack" {
				t.Fatalf("origin read %q, %v", buf, err)
			}
			tn.origin.Close()
			tn.client.Close()
			if r := tn.wait(t); r.down != 3 || r.up != 3 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

func TestRelayPrefixesFirst(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			opts := m.opts
			opts.ClientPrefix = []byte("HELLO-")
			opts.UpstreamPrefix = []byte("BANNER-")
			tn := startRelay(t, opts)
			tn.client.Write([]byte("body"))
			tn.client.CloseWrite()
			tn.origin.Write([]byte("reply"))
			tn.origin.CloseWrite()
			up, err1 := io.ReadAll(tn.origin)
			down, err2 := io.ReadAll(tn.client)
			if err1 != nil || err2 != nil || string(up) != "HELLO-body" || string(down) != "BANNER-reply" {
				t.Fatalf("up %q %v, down %q %v", up, err1, down, err2)
			}
			if r := tn.wait(t); r.err != nil || r.up != 10 || r.down != 12 {
				t.Fatalf("%+v", r)
			}
		})
	}
}

func TestRelayIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			opts := m.opts
			opts.Idle = idle
			start := time.Now()
			tn := startRelay(t, opts)
			r := tn.wait(t)
			if took := time.Since(start); !errors.Is(r.err, ErrIdle) || took < idle {
				t.Fatalf("after %v: %+v", took, r)
			}
			// Both ends see the tunnel closed.
			for _, c := range []*net.TCPConn{tn.client, tn.origin} {
				if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
					t.Fatalf("read %d, %v", n, err)
				}
			}
		})
	}
}

// TestRelayIdleCountsBothWays: bytes flowing one way keep the tunnel alive,
// including its silent direction, for longer than the idle timeout.
//
// Relay needs real sockets (splice), so this runs on the wall clock, not in
// a synctest bubble. On a loaded machine the test and the relay can both be
// held up for longer than the idle timeout, and then the relay is right to
// end the tunnel. So an early end fails the test only when the test can
// show bytes moved more often than the timeout all along; otherwise the
// attempt proves nothing and the next one runs with a longer timeout.
func TestRelayIdleCountsBothWays(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			for _, idle := range []time.Duration{300 * time.Millisecond, time.Second, 3 * time.Second} {
				if keptAlive(t, m.opts, idle) {
					return
				}
				t.Logf("held up for longer than the idle timeout %v: trying a longer one", idle)
			}
			t.Fatal("every attempt was held up for longer than its idle timeout")
		})
	}
}

// keptAlive sends one byte client to origin every idle/6 for 3*idle, then
// goes silent and expects the tunnel to end with ErrIdle. It fails the test
// if the tunnel ended while bytes moved, and returns false without failing
// if it ended after a gap the relay may have seen as idle.
func keptAlive(t *testing.T, opts RelayOptions, idle time.Duration) bool {
	t.Helper()
	opts.Idle = idle
	// The relay stamps a byte's move between the client's Write and the
	// origin's read, and its start after startRelay is called. So the
	// longest it can have seen nothing move is bounded by the span from
	// one byte's write (or the start) to the next byte's arrival.
	prev := time.Now()
	tn := startRelay(t, opts)
	var longest time.Duration
	ended := func(err error) bool {
		if longest < idle {
			t.Fatalf("tunnel ended while bytes moved at least every %v (idle timeout %v): %v", longest, idle, err)
		}
		return false
	}
	tick := time.NewTicker(idle / 6)
	defer tick.Stop()
	buf := make([]byte, 1)
	for end := prev.Add(3 * idle); time.Now().Before(end); {
		<-tick.C
		wrote := time.Now()
		_, err := tn.client.Write([]byte("k"))
		if err == nil {
			_, err = io.ReadFull(tn.origin, buf)
		}
		longest = max(longest, time.Since(prev))
		prev = wrote
		if err != nil {
			return ended(err)
		}
	}
	longest = max(longest, time.Since(prev))
	if tn.ended() {
		return ended(tn.res.err)
	}
	// Silent both ways now: the timeout ends it.
	if r := tn.wait(t); !errors.Is(r.err, ErrIdle) {
		t.Fatalf("%+v", r)
	}
	return true
}

func TestRelayMaxDuration(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			opts := m.opts
			opts.MaxDuration = 200 * time.Millisecond
			opts.Idle = time.Hour
			tn := startRelay(t, opts)
			// Keep it busy: activity must not extend MaxDuration.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := tn.client.Write([]byte("x")); err != nil {
							return
						}
					}
				}
			}()
			go func() { defer wg.Done(); io.Copy(io.Discard, tn.origin) }()
			r := tn.wait(t)
			close(stop)
			tn.origin.Close()
			wg.Wait()
			if !errors.Is(r.err, ErrMaxDuration) {
				t.Fatalf("%+v", r)
			}
		})
	}
}

// TestRelayResetClosesBoth: an origin reset ends the tunnel with the
// syscall error, and the client sees its conn closed.
func TestRelayResetClosesBoth(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tn := startRelay(t, m.opts)
			tn.origin.SetLinger(0)
			tn.origin.Close() // RST
			r := tn.wait(t)
			if !errors.Is(r.err, syscall.ECONNRESET) {
				t.Fatalf("%+v", r)
			}
			if n, err := tn.client.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Fatalf("client read %d, %v", n, err)
			}
		})
	}
}

// TestRelayRegistryCloseAll: a drain cuts a live tunnel.
func TestRelayRegistryCloseAll(t *testing.T) {
	var reg Registry
	client, proxyClient := tcpPair(t)
	proxyUpstream, origin := tcpPair(t)
	defer client.Close()
	defer origin.Close()
	id := reg.Add(proxyClient, proxyUpstream)
	done := make(chan error, 1)
	go func() {
		_, _, err := Relay(proxyClient, proxyUpstream, RelayOptions{})
		reg.Remove(id)
		done <- err
	}()
	client.Write([]byte("x"))
	io.ReadFull(origin, make([]byte, 1))
	reg.CloseAll()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("err %v", err)
	}
	if err := reg.Wait(t.Context()); err != nil || reg.Len() != 0 {
		t.Fatalf("wait %v, len %d", err, reg.Len())
	}
}

// TestRelayLiveCounters: a caller reads byte counts while the tunnel runs.
func TestRelayLiveCounters(t *testing.T) {
	var up, down atomic.Int64
	tn := startRelay(t, RelayOptions{Up: &up, Down: &down})
	payload := bytes.Repeat([]byte("z"), 1000)
	tn.client.Write(payload)
	io.ReadFull(tn.origin, make([]byte, 1000))
	tn.origin.Write(payload[:10])
	io.ReadFull(tn.client, make([]byte, 10))
	// The count is added right after the bytes are written: give the relay
	// goroutines the moment they need, bounded.
	for end := time.Now().Add(10 * time.Second); (up.Load() != 1000 || down.Load() != 10) && time.Now().Before(end); {
		runtime.Gosched()
	}
	if up.Load() != 1000 || down.Load() != 10 || tn.ended() {
		t.Fatalf("live up %d down %d", up.Load(), down.Load())
	}
}

func ExampleRelay() {
	// client and upstream come from the front end and Dialer.Dial.
	var client, upstream *net.TCPConn
	if client == nil {
		return
	}
	up, down, err := Relay(client, upstream, RelayOptions{
		ClientPrefix: []byte("bytes read during the SNI peek"),
		Idle:         5 * time.Minute,
	})
	fmt.Println(up, down, err)
}

// TestRelayClearsCallerDeadlines: a deadline left from the handshake does
// not cut a tunnel that has no timeouts of its own.
func TestRelayClearsCallerDeadlines(t *testing.T) {
	client, proxyClient := tcpPair(t)
	proxyUpstream, origin := tcpPair(t)
	defer client.Close()
	defer origin.Close()
	past := time.Now().Add(-time.Second)
	proxyClient.SetDeadline(past)
	proxyUpstream.SetDeadline(past)
	done := make(chan error, 1)
	go func() { _, _, err := Relay(proxyClient, proxyUpstream, RelayOptions{}); done <- err }()
	client.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(origin, buf); err != nil {
		t.Fatalf("tunnel cut by a stale deadline: %v", err)
	}
	client.Close()
	origin.Close()
	<-done
}
