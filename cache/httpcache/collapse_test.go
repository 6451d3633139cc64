package httpcache

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCollapsedForwarding: 100 clients ask for one artifact at once; the
// origin is asked once, and every client streams the body as it arrives
// (each has the first part before the origin sends the rest).
func TestCollapsedForwarding(t *testing.T) {
	t.Parallel()
	const clients = 100
	const half = 16 << 10
	body := bytes.Repeat([]byte("0123456789abcdef"), 2*half/16)
	release := make(chan struct{})
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:half])
		w.(http.Flusher).Flush()
		<-release
		w.Write(body[half:])
	})
	var joined atomic.Int32
	allJoined := make(chan struct{})
	e.cache.onJoin = func() {
		if joined.Add(1) == clients-1 {
			close(allJoined)
		}
	}
	type result struct {
		status string
		body   []byte
		err    error
	}
	results := make(chan result, clients)
	var firstParts sync.WaitGroup
	firstParts.Add(clients)
	for range clients {
		go func() {
			resp, err := e.client.Get(e.origin.srv.URL + "/artifact")
			if err != nil {
				firstParts.Done()
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			got := make([]byte, half)
			_, err = io.ReadFull(resp.Body, got)
			firstParts.Done()
			if err != nil {
				results <- result{err: fmt.Errorf("first part: %w", err)}
				return
			}
			rest, err := io.ReadAll(resp.Body)
			results <- result{status: resp.Header.Get(HeaderXCache), body: append(got, rest...), err: err}
		}()
	}
	<-allJoined
	firstParts.Wait() // every client has the first half; the origin still holds the rest
	close(release)
	count := map[string]int{}
	for range clients {
		r := <-results
		if r.err != nil {
			t.Errorf("client: %v", r.err)
			continue
		}
		if !bytes.Equal(r.body, body) {
			t.Errorf("a client got %d bytes, not the artifact", len(r.body))
		}
		count[r.status]++
	}
	if n := e.origin.count("/artifact"); n != 1 {
		t.Errorf("the origin was asked %d times, want once", n)
	}
	if count[string(Miss)] != 1 || count[string(Hit)] != clients-1 {
		t.Errorf("X-Cache values %v, want one MISS and %d HIT", count, clients-1)
	}
	if n := e.obs.collapsed.Load(); n != clients-1 {
		t.Errorf("%d collapsed, want %d", n, clients-1)
	}
	resp, _ := e.get("/artifact")
	e.expect(resp, Hit, 200, 1)
}

// TestCollapseTimeout: a request that waited collapse_timeout for another's
// fetch asks the origin itself.
func TestCollapseTimeout(t *testing.T) {
	t.Parallel()
	arrived, second := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	e := newEnv(t, Options{CollapseTimeout: 20 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			close(arrived)
			<-second // the first fetch hangs until the waiter gave up on it
		} else {
			close(second)
		}
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "body")
	})
	done := make(chan error, 1)
	go func() {
		resp, err := e.client.Get(e.origin.srv.URL + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	<-arrived // the second request starts once the first is at the origin
	resp, body := e.get("/slow")
	if body != "body" || resp.StatusCode != 200 {
		t.Errorf("the waiter: %d %q", resp.StatusCode, body)
	}
	if err := <-done; err != nil {
		t.Errorf("the first: %v", err)
	}
	if got := e.origin.count("/slow"); got != 2 {
		t.Errorf("origin asked %d times, want 2", got)
	}
}

// TestLeaderLeavesEarly: the client that started a fetch goes away; a
// client collapsed onto it still gets the whole body, and it is stored.
// When the only reader leaves, nothing is stored.
func TestLeaderLeavesEarly(t *testing.T) {
	t.Parallel()
	const part = 8 << 10
	body := bytes.Repeat([]byte("x"), 3*part)
	gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
	e := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for i := 0; i < 3; i++ {
			if i > 0 {
				select {
				case <-gates[i-1]:
				case <-r.Context().Done():
					return
				}
			}
			w.Write(body[i*part : (i+1)*part])
			w.(http.Flusher).Flush()
		}
	})
	joined := make(chan struct{})
	e.cache.onJoin = func() { close(joined) }
	leader, err := e.client.Get(e.origin.srv.URL + "/l")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(leader.Body, make([]byte, part)); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		resp, err := e.client.Get(e.origin.srv.URL + "/l")
		if err != nil {
			got <- nil
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- b
	}()
	<-joined
	leader.Body.Close() // the leader's client went away after the first part
	close(gates[0])
	close(gates[1])
	if b := <-got; !bytes.Equal(b, body) {
		t.Fatalf("the collapsed client got %d bytes, want %d", len(b), len(body))
	}
	resp, _ := e.get("/l")
	e.expect(resp, Hit, 200, 1)

	// Alone: the reader leaves, the fetch ends, nothing is stored.
	e2 := newEnv(t, Options{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:part])
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the origin sees the fetch abandoned
	})
	resp, err = e2.client.Get(e2.origin.srv.URL + "/a")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, part))
	resp.Body.Close()
	if n := e2.obs.objects.Load(); n != 0 {
		t.Errorf("%d objects stored after the only reader left", n)
	}
}
