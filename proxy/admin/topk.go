package admin

import (
	"cmp"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Sketch dimensions: 4 rows of 2048 counters (64 KiB). A count's
// overestimate is at most about 2/2048 of all the counts added, with
// probability 1-2^-4 (Cormode and Muthukrishnan's count-min bound).
const (
	sketchDepth = 4
	sketchBits  = 11 // sketchWidth = 2^sketchBits; sketchDepth*sketchBits <= 64
	sketchWidth = 1 << sketchBits
)

// maxText is the longest host, user or SNI the page keeps: a DNS name is
// at most 253 bytes, so only hostile or malformed input is cut.
const maxText = 256

// TopK estimates the most frequent strings of a stream in bounded memory: a
// count-min sketch counts every string, and a small candidate set, swapped
// atomically, holds the strings whose estimates are the highest. Add is
// lock-free unless a string's estimate passes the weakest candidate's, which
// after warm-up is rare; memory does not grow with the number of distinct
// strings. Counts are upper bounds: strings that share counters with busier
// ones are overestimated.
type TopK struct {
	keep int // candidates tracked: more than shown, so the shown ones are stable
	seed maphash.Seed
	rows [sketchDepth][sketchWidth]atomic.Uint64

	mu  sync.Mutex // serializes candidate updates; Add reads top without it
	top atomic.Pointer[candidates]
}

// candidates is an immutable snapshot of the tracked strings.
type candidates struct {
	names  []string
	hashes []uint64
	min    uint64 // the weakest candidate's estimate when the set is full
}

// Entry is one string and its estimated count.
type Entry struct {
	Name  string
	Count uint64
}

// NewTopK returns a sketch whose Top can return up to k entries.
func NewTopK(k int) *TopK {
	t := &TopK{keep: 2 * k, seed: maphash.MakeSeed()}
	t.top.Store(&candidates{})
	return t
}

// Add counts one occurrence of s.
func (t *TopK) Add(s string) {
	h := maphash.String(t.seed, s)
	est := ^uint64(0)
	for i := range sketchDepth {
		est = min(est, t.rows[i][index(h, i)].Add(1))
	}
	c := t.top.Load()
	// A string enters a full set only when it beats the weakest candidate by
	// an eighth: strings of about equal frequency do not swap places (and
	// take the lock) on every request.
	if len(c.names) == t.keep && est <= c.min+c.min/8 {
		return
	}
	if slices.Contains(c.hashes, h) {
		return
	}
	t.promote(s, h)
}

// index is the column of hash h in row i: row i takes its own bits of h, so
// two strings share a counter in every row only if 44 bits of their hashes
// agree (with double hashing, lo+i*hi, 22 bits did: a rare name could take
// a leader's count).
func index(h uint64, i int) uint32 {
	return uint32(h>>(i*sketchBits)) & (sketchWidth - 1)
}

func (t *TopK) estimate(h uint64) uint64 {
	est := ^uint64(0)
	for i := range sketchDepth {
		est = min(est, t.rows[i][index(h, i)].Load())
	}
	return est
}

// promote adds s to the candidates, dropping the weakest if the set is full.
func (t *TopK) promote(s string, h uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.top.Load()
	if slices.Contains(old.hashes, h) {
		return
	}
	type cand struct {
		name string
		hash uint64
		est  uint64
	}
	all := make([]cand, 0, len(old.names)+1)
	for i, n := range old.names {
		all = append(all, cand{n, old.hashes[i], t.estimate(old.hashes[i])})
	}
	// The candidate keeps its own copy, at most maxText bytes: s may point
	// into a larger buffer the exchange is done with.
	all = append(all, cand{clip(s), h, t.estimate(h)})
	slices.SortStableFunc(all, func(a, b cand) int { return cmp.Compare(b.est, a.est) })
	all = all[:min(len(all), t.keep)]
	c := &candidates{names: make([]string, len(all)), hashes: make([]uint64, len(all))}
	for i, x := range all {
		c.names[i], c.hashes[i] = x.name, x.hash
	}
	if len(all) == t.keep {
		c.min = all[len(all)-1].est
	}
	t.top.Store(c)
}

// Top returns up to n entries, highest estimate first.
func (t *TopK) Top(n int) []Entry {
	c := t.top.Load()
	out := make([]Entry, len(c.names))
	for i, name := range c.names {
		out[i] = Entry{name, t.estimate(c.hashes[i])}
	}
	slices.SortStableFunc(out, func(a, b Entry) int { return cmp.Compare(b.Count, a.Count) })
	return out[:min(n, len(out))]
}

// clip returns a copy of s cut to maxText bytes (at a rune boundary, with
// "…" appended when cut).
func clip(s string) string {
	if len(s) <= maxText {
		return strings.Clone(s)
	}
	cut := maxText
	for cut > 0 && !runeStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func runeStart(b byte) bool { return b&0xC0 != 0x80 }
