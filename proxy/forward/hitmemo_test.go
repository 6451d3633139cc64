package forward

import (
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestHitPathMemoCounted: the header block the hit path keeps with each
// stored response it serves counts in cache.http.max_bytes. Responses whose
// header fields (about 8 KiB) dwarf their bodies (16 bytes) are fetched
// (a miss) and then hit on the hit path, which builds each one's block,
// until the cache has evicted for many times what it holds: the bytes the
// cache reports never pass max_bytes, and the heap (what the cache really
// holds) grows by no more than max_bytes plus a constant. Without the
// blocks in the count the store keeps about twice as many responses and
// the heap grows past it.
func TestHitPathMemoCounted(t *testing.T) {
	const maxBytes = 4 << 20
	// What the connections, the origin, the policy engine, the access log
	// and the runtime may grow by besides the cache.
	const slack = 1 << 20
	e := newHitEnvCache(t, nil, 0, maxBytes)
	cache := e.h.o.Cache
	miss, hits := e.dial(), e.dial()
	fetch := func(i int) {
		t.Helper()
		path := fmt.Sprintf("/bighead/%d", i)
		head := e.head("GET", path, "")
		if h, _ := miss.get(head); !strings.Contains(h, "X-Cache: MISS\r\n") {
			t.Fatalf("%s: first fetch answered\n%s", path, h)
		}
		// Stored once the origin's body has ended, maybe after the
		// client has it.
		u, _ := url.Parse(e.url(path))
		for start := time.Now(); ; time.Sleep(time.Millisecond) {
			if _, ok := cache.Fresh(http.MethodGet, u, http.Header{}); ok {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s not stored", path)
			}
		}
		f0 := e.h.fastHits.Load()
		if h, body := hits.get(head); !strings.Contains(h, "X-Cache: HIT\r\n") || body != "sixteen bytes ok" {
			t.Fatalf("%s: hit answered\n%s%q", path, h, body)
		}
		if e.h.fastHits.Load() != f0+1 {
			t.Fatalf("%s: the hit did not take the hit path", path)
		}
		if stored, _ := cache.Usage(); stored > maxBytes {
			t.Fatalf("after %s: the cache reports %d bytes, past max_bytes %d", path, stored, maxBytes)
		}
		if i%50 == 0 {
			e.access.TakeAll() // the observed access lines are the test's, not the cache's
		}
	}
	for i := range 20 { // warm up the connections, the origin and the runtime
		fetch(i)
	}
	base := heapInUse()
	const n = 1000
	for i := 20; i < n; i++ {
		fetch(i)
	}
	e.access.TakeAll()
	grown := heapInUse() - base
	stored, objects := cache.Usage()
	t.Logf("%d responses fetched and hit; %d stored in %d counted bytes; the heap grew %d bytes (%.0f per stored response)",
		n, objects, stored, grown, float64(grown)/float64(objects))
	if objects >= n/2 {
		t.Fatalf("%d of %d responses stored: the cache did not fill", objects, n)
	}
	if grown > maxBytes+slack {
		t.Errorf("the heap grew by %d bytes, past max_bytes %d plus %d", grown, maxBytes, slack)
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
