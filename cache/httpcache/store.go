package httpcache

import (
	"math"
	"slices"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// maxVariants bounds the responses kept per URL (Vary): past it the least
// recently stored variant goes.
const maxVariants = 16

// store holds objects by URL in least-recently-used order, bounded by the
// bytes they hold: adding past maxBytes evicts from the cold end. A URL's
// variants are evicted together. What an object holds is its size plus
// what its memo was charged (held), both counted under mu: a memo built
// after its object left the store is never counted, one built before is
// taken off with it.
type store struct {
	mu       sync.Mutex
	lru      *simplelru.LRU[string, *entry]
	bytes    int64
	objects  int
	maxBytes int64
	obs      Observer
}

// entry is the variants of one URL, most recently stored last.
type entry struct {
	variants []*object
	size     int64
}

func newStore(maxBytes int64, obs Observer) *store {
	// The LRU's own bound is a count; the byte bound is ours.
	l, _ := simplelru.NewLRU[string, *entry](math.MaxInt, nil)
	return &store{lru: l, maxBytes: maxBytes, obs: obs}
}

// lookup returns the most recently stored variant for key that match
// accepts, or nil, and marks the URL recently used. match runs under the
// store's lock: it must not call back into the store.
func (s *store) lookup(key string, match func(*object) bool) *object {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Get(key)
	if !ok {
		return nil
	}
	for i := len(e.variants) - 1; i >= 0; i-- {
		if match(e.variants[i]) {
			return e.variants[i]
		}
	}
	return nil
}

// holds reports whether key has a stored variant, without marking it used.
func (s *store) holds(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Contains(key)
}

// put stores o, replacing old (the object it refreshes, or nil) and any
// variant with the same secondary key, then evicts until the store fits.
func (s *store) put(o *object, old *object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Get(o.key)
	if !ok {
		e = &entry{}
		s.lru.Add(o.key, e)
	}
	// slices.Delete and DeleteFunc clear the vacated tail, so dropped
	// objects can be collected.
	e.variants = slices.DeleteFunc(e.variants, func(v *object) bool {
		if v == old || v.varyKey == o.varyKey && slices.Equal(v.vary, o.vary) {
			s.account(e, -v.held(), -1)
			return true
		}
		return false
	})
	if len(e.variants) >= maxVariants {
		s.account(e, -e.variants[0].held(), -1)
		e.variants = slices.Delete(e.variants, 0, 1)
	}
	e.variants = append(e.variants, o)
	s.account(e, o.held(), 1)
	s.evict()
	s.obs.Stored(s.bytes, s.objects)
}

// charge adds bytes to what o holds (its memo, built once), if o is still
// stored, and evicts until the store fits again.
func (s *store) charge(o *object, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Peek(o.key)
	if !ok || !slices.Contains(e.variants, o) {
		return // gone: the memo goes with the last reference to o
	}
	o.memo.charged += bytes
	s.account(e, bytes, 0)
	s.evict()
	s.obs.Stored(s.bytes, s.objects)
}

// evict removes the least recently used URLs until the store fits.
func (s *store) evict() {
	evicted := 0
	for s.bytes > s.maxBytes {
		_, victim, ok := s.lru.RemoveOldest()
		if !ok {
			break
		}
		s.account(victim, -victim.size, -len(victim.variants))
		evicted += len(victim.variants)
	}
	if evicted > 0 {
		s.obs.Evicted(evicted)
	}
}

// remove drops o if it is still stored (a response found unusable).
func (s *store) remove(o *object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Peek(o.key)
	if !ok {
		return
	}
	if i := slices.Index(e.variants, o); i >= 0 {
		s.account(e, -o.held(), -1)
		e.variants = slices.Delete(e.variants, i, i+1)
	}
	if len(e.variants) == 0 {
		s.lru.Remove(o.key)
	}
	s.obs.Stored(s.bytes, s.objects)
}

// invalidate drops every variant stored for key (RFC 9111 section 4.4).
func (s *store) invalidate(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Peek(key)
	if !ok {
		return
	}
	s.lru.Remove(key)
	s.account(e, -e.size, -len(e.variants))
	s.obs.Stored(s.bytes, s.objects)
}

// usage returns the bytes and objects stored.
func (s *store) usage() (int64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.objects
}

// held is what o counts in the store: its size and its memo's charge. The
// store's lock must be held.
func (o *object) held() int64 {
	if o.memo == nil {
		return o.size
	}
	return o.size + o.memo.charged
}

func (s *store) account(e *entry, bytes int64, objects int) {
	e.size += bytes
	s.bytes += bytes
	s.objects += objects
}
