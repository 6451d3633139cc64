package httpcache

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// serializeHeader is a memo like the forward package's hit block: the
// stored fields as written on the wire, in a buffer sized up front.
func serializeHeader(st Stored) (any, int64) {
	n := 0
	for k, vs := range st.Header() {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	var b bytes.Buffer
	b.Grow(n)
	st.Header().Write(&b)
	return b.Bytes(), int64(cap(b.Bytes()))
}

// recount recomputes, from the objects the store holds, what it should
// count: each object's size from its fields, plus its memo's bytes when
// one is kept; it checks each URL's entry against its variants too.
func recount(t *testing.T, s *store) (int64, int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int64
	objects := 0
	for _, key := range s.lru.Keys() {
		e, _ := s.lru.Peek(key)
		var entry int64
		for _, o := range e.variants {
			n := objectSize(o)
			if m := o.memo.v.Load(); m != nil && m.owner == o {
				n += int64(cap(m.v.([]byte))) + memoValueSize
			}
			entry += n
			objects++
		}
		if entry != e.size {
			t.Errorf("%s: entry counts %d bytes, its variants hold %d", key, e.size, entry)
		}
		total += entry
	}
	return total, objects
}

// bigHeaderOrigin answers every path with a tiny body under header fields
// much larger than it (about 3 KiB serialized), fresh for 10 minutes,
// varying on X-V, and 304 to its ETag unless the request says X-New.
func bigHeaderOrigin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=600")
	w.Header().Set("Vary", "X-V")
	w.Header().Set("ETag", `"e"`)
	if r.Header.Get("If-None-Match") == `"e"` && r.Header.Get("X-New") == "" {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	for i := range 12 {
		w.Header().Set(fmt.Sprintf("X-Pad-%02d", i), strings.Repeat(string(rune('a'+i)), 240))
	}
	w.Write([]byte(r.URL.Path))
}

// TestMemoCountsInMaxBytes: the memo a hit keeps with a stored response
// (a serialized copy of its header fields, as the hit path keeps) counts
// in max_bytes: the store's count grows by exactly what the memo holds,
// responses whose header fields dwarf their bodies never take the store
// (what it reports, and what it holds recounted from its objects) past
// max_bytes, and evicting takes the memo off with its response.
func TestMemoCountsInMaxBytes(t *testing.T) {
	t.Parallel()
	const maxBytes = 128 << 10
	e := newEnv(t, Options{MaxBytes: maxBytes}, bigHeaderOrigin)
	memos := 0
	hit := func(path string) {
		t.Helper()
		u, _ := url.Parse(e.origin.srv.URL + path)
		st, ok := e.cache.Fresh(http.MethodGet, u, http.Header{})
		if !ok {
			t.Fatalf("%s: not fresh in the cache", path)
		}
		before, _ := e.cache.Usage()
		v, size := serializeHeader(st)
		got := st.Memo(func(Stored) (any, int64) { memos++; return v, size })
		after, _ := e.cache.Usage()
		if !bytes.Equal(got.([]byte), v.([]byte)) {
			t.Fatalf("%s: memo %q, want what build made", path, got)
		}
		if after != before+size+memoValueSize && e.obs.evicted.Load() == 0 {
			t.Errorf("%s: the store counts %d bytes after the memo, %d before; the memo holds %d (+%d)",
				path, after, before, size, memoValueSize)
		}
		st.Memo(func(Stored) (any, int64) { t.Errorf("%s: memo built twice", path); return nil, 0 })
		if again, _ := e.cache.Usage(); again != after {
			t.Errorf("%s: a second hit changed the count from %d to %d", path, after, again)
		}
	}
	const n = 100 // about three times what fits
	for i := range n {
		path := fmt.Sprintf("/big/%d", i)
		e.get(path)
		hit(path)
		reported, _ := e.cache.Usage()
		held, _ := recount(t, e.cache.store)
		if reported != held || e.obs.bytes.Load() != reported {
			t.Fatalf("after %s: the store reports %d bytes (metric %d), its objects hold %d", path, reported, e.obs.bytes.Load(), held)
		}
		if reported > maxBytes {
			t.Fatalf("after %s: the store holds %d bytes, past max_bytes %d", path, reported, maxBytes)
		}
	}
	if memos != n {
		t.Errorf("%d memos built, want %d", memos, n)
	}
	// Without the memos the store would have kept more: count what one
	// response costs with and without its memo.
	_, objects := e.cache.Usage()
	u, _ := url.Parse(e.origin.srv.URL + fmt.Sprintf("/big/%d", n-1))
	st, _ := e.cache.Fresh(http.MethodGet, u, http.Header{})
	_, memo := serializeHeader(st)
	per := st.o.size + memo + memoValueSize
	if want := int(maxBytes / per); objects != want {
		t.Errorf("%d responses kept of %d bytes each with the memo (%d without), want %d", objects, per, st.o.size, want)
	}
	t.Logf("%d responses of %d bytes (%d of it the memo) in %d bytes", objects, per, memo+memoValueSize, maxBytes)

	// A memo built after its response left the store (invalidated by a
	// POST, or replaced by a new response for its URL) is not counted: it
	// goes with the last reference.
	for _, leave := range []func(){
		func() { e.do(http.MethodPost, "/gone") },
		func() { e.get("/gone", "Cache-Control: no-cache", "X-New: 1") },
	} {
		e.get("/gone")
		u, _ = url.Parse(e.origin.srv.URL + "/gone")
		gone, ok := e.cache.Fresh(http.MethodGet, u, http.Header{})
		if !ok {
			t.Fatal("/gone: not fresh in the cache")
		}
		leave()
		before, _ := e.cache.Usage()
		gone.Memo(serializeHeader)
		if after, _ := e.cache.Usage(); after != before {
			t.Errorf("a memo of a response no longer stored changed the count from %d to %d", before, after)
		}
	}
	// A response replaced (revalidated with a 304, or a new 200) takes its
	// memo's bytes off with it.
	for _, field := range []string{"X-Old: 1", "X-New: 1"} {
		path := fmt.Sprintf("/big/%d", n-1)
		hitOnce := func() {
			u, _ := url.Parse(e.origin.srv.URL + path)
			if st, ok := e.cache.Fresh(http.MethodGet, u, http.Header{}); ok {
				st.Memo(serializeHeader)
			}
		}
		hitOnce()
		e.get(path, "Cache-Control: no-cache", field)
		hitOnce() // the new response's memo
		reported, _ := e.cache.Usage()
		if held, _ := recount(t, e.cache.store); reported != held {
			t.Errorf("%s replaced (%s): the store reports %d bytes, its objects hold %d", path, field, reported, held)
		}
	}
}

// TestMemoAccountingRace: hits building memos race with stores, variant
// replacements, evictions and invalidations; when everything has ended,
// the store's count is exactly what its objects hold (no memo counted
// twice, none left behind by an eviction) and within max_bytes. Run it
// with -race.
func TestMemoAccountingRace(t *testing.T) {
	t.Parallel()
	const maxBytes = 96 << 10
	e := newEnv(t, Options{MaxBytes: maxBytes}, bigHeaderOrigin)
	const workers, rounds, urls = 6, 300, 60
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 19))
			for range rounds {
				path := fmt.Sprintf("/race/%d", rng.IntN(urls))
				variant := fmt.Sprint(rng.IntN(3))
				method := http.MethodGet
				var extra []string
				switch r := rng.IntN(12); {
				case r < 4:
				case r == 4: // revalidated: a 304 replaces the response
					extra = []string{"Cache-Control: no-cache"}
				case r == 5: // replaced by a new 200
					extra = []string{"Cache-Control: no-cache", "X-New: 1"}
				case r < 11:
					u, _ := url.Parse(e.origin.srv.URL + path)
					if st, ok := e.cache.Fresh(http.MethodGet, u, http.Header{"X-V": {variant}}); ok {
						st.Memo(serializeHeader)
					}
					continue
				default:
					method = http.MethodPost // invalidates the URL
				}
				req, _ := http.NewRequest(method, e.origin.srv.URL+path, nil)
				req.Header.Set("X-V", variant)
				for _, f := range extra {
					k, v, _ := strings.Cut(f, ": ")
					req.Header.Set(k, v)
				}
				resp, err := e.client.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", method, path, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	e.cache.Close() // background work done
	reported, objects := e.cache.Usage()
	held, heldObjects := recount(t, e.cache.store)
	if reported != held || objects != heldObjects {
		t.Errorf("the store counts %d bytes in %d objects; they hold %d in %d", reported, objects, held, heldObjects)
	}
	if reported > maxBytes {
		t.Errorf("the store holds %d bytes, past max_bytes %d", reported, maxBytes)
	}
	if e.obs.evicted.Load() == 0 {
		t.Errorf("nothing was evicted: the race did not fill the store")
	}
	t.Logf("%d objects in %d bytes, %d evicted", objects, reported, e.obs.evicted.Load())
}
