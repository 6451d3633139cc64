package dlp

import (
	"math/bits"
	"slices"
)

// The vector scan finds the same candidates as the samplers (scanner.go)
// with 32-byte vector instructions where the CPU has them (AVX2 on amd64;
// vecscan_amd64.s), in one pass over the data:
//
//   - keywords: a Teddy-style prefilter. Each keyword has a 3-byte window
//     (its rarest, by commonness); the windows are grouped into 8 buckets,
//     and for each of the 3 bytes two 16-entry tables, indexed by the low
//     and the high nibble, give the buckets whose windows can have that
//     byte there. A position where some bucket survives all six lookups is
//     a hit: the automaton runs from as far back as that bucket's keywords
//     can start.
//   - digits: a candidate is the start of a stretch of digits joined by
//     single separators (the token verifyDigits reads) whose first 11
//     bytes are digits or separators with two digits on each side. Every
//     token the verifier accepts is such a stretch: an SSN is 3-2-4 digits
//     in 11 bytes, a card 13 to 19 digits in groups of 3 or more.
//
// A position i is judged from w[i-2] to w[i+vecAhead]. vecHit is the
// definition, one position at a time; the kernel computes it 32 positions
// at once and must agree with it on every position (FuzzVecKernel).

// vecAhead is how many bytes past a position its verdict reads.
const vecAhead = 12

// vecReach is how many bytes from a block's start the kernel reads (its
// digit masks run 30 bytes past the block's 32 positions).
const vecReach = 62

// vecTables is what the kernel reads: the nibble tables of the three
// window bytes, each 16 entries repeated for both 128-bit lanes. The
// layout is the assembly's.
type vecTables struct {
	lo   [3][32]uint8
	hi   [3][32]uint8
	digs uint64 // all ones when card numbers or SSNs are on, else 0
}

// vecPlan is a profile's compiled vector scan.
type vecPlan struct {
	tab    vecTables
	backOf [256]uint8 // bucket set -> how far before the window a keyword can start
	// kernel examines positions [from, to) of b in blocks of 32 (to-from a
	// multiple of 32, b[from-2:to+vecReach-32] readable) and returns the
	// first block with a hit, its keyword-hit and digit-hit masks (bit k:
	// position off+k); off == to when none.
	kernel func(t *vecTables, b []byte, from, to int) (off int, kw, dig uint32)
}

// newVecPlan builds the prefilter of the keywords; nil if one is shorter
// than a window.
func newVecPlan(kws []string, digits bool, kernel func(*vecTables, []byte, int, int) (int, uint32, uint32)) *vecPlan {
	p := &vecPlan{kernel: kernel}
	if digits {
		p.tab.digs = ^uint64(0)
	}
	back := map[string]int{} // window -> the furthest offset it has in a keyword
	for _, kw := range kws {
		if len(kw) < 3 {
			return nil
		}
		best, bestScore := 0, -1
		for q := 0; q+3 <= len(kw); q++ {
			score := commonness(kw[q]) * commonness(kw[q+1]) * commonness(kw[q+2])
			if bestScore < 0 || score < bestScore {
				best, bestScore = q, score
			}
		}
		w := kw[best : best+3]
		back[w] = max(back[w], best)
	}
	windows := make([]string, 0, len(back))
	for w := range back {
		windows = append(windows, w)
	}
	slices.Sort(windows)
	var buckets [8]uint8
	for b, group := range bucketWindows(windows) {
		for _, w := range group {
			for k := 0; k < 3; k++ {
				p.tab.lo[k][w[k]&15] |= 1 << b
				p.tab.hi[k][w[k]>>4] |= 1 << b
			}
			buckets[b] = max(buckets[b], uint8(back[w]))
		}
	}
	for k := 0; k < 3; k++ {
		copy(p.tab.lo[k][16:], p.tab.lo[k][:16])
		copy(p.tab.hi[k][16:], p.tab.hi[k][:16])
	}
	for set := 1; set < 256; set++ {
		for b := 0; b < 8; b++ {
			if set&(1<<b) != 0 {
				p.backOf[set] = max(p.backOf[set], buckets[b])
			}
		}
	}
	return p
}

// bucketWindows groups the windows into at most 8 buckets. A bucket lets
// through every byte whose low nibble one of its windows has at that place
// and whose high nibble one has: merging windows that share nibbles costs
// little, merging unlike ones lets many bytes through. Greedy: the pair
// whose merge adds least expected traffic (commonness) merges first.
func bucketWindows(windows []string) [][]string {
	type group struct {
		ws     []string
		lo, hi [3]uint16
		cost   float64
	}
	cost := func(lo, hi [3]uint16) float64 {
		c := 1.0
		for k := 0; k < 3; k++ {
			s := 0
			for l := lo[k]; l != 0; l &= l - 1 {
				for h := hi[k]; h != 0; h &= h - 1 {
					s += commonness(byte(bits.TrailingZeros16(h)<<4 | bits.TrailingZeros16(l)))
				}
			}
			c *= float64(s) / 1000
		}
		return c
	}
	gs := make([]group, len(windows))
	for i, w := range windows {
		g := &gs[i]
		g.ws = []string{w}
		for k := 0; k < 3; k++ {
			g.lo[k], g.hi[k] = 1<<(w[k]&15), 1<<(w[k]>>4)
		}
		g.cost = cost(g.lo, g.hi)
	}
	merged := func(a, b *group) (lo, hi [3]uint16) {
		for k := 0; k < 3; k++ {
			lo[k], hi[k] = a.lo[k]|b.lo[k], a.hi[k]|b.hi[k]
		}
		return
	}
	for len(gs) > 8 {
		bi, bj, best := 0, 1, -1.0
		for i := range gs {
			for j := i + 1; j < len(gs); j++ {
				lo, hi := merged(&gs[i], &gs[j])
				if d := cost(lo, hi) - gs[i].cost - gs[j].cost; best < 0 || d < best {
					bi, bj, best = i, j, d
				}
			}
		}
		a, b := &gs[bi], &gs[bj]
		a.lo, a.hi = merged(a, b)
		a.ws = append(a.ws, b.ws...)
		a.cost = cost(a.lo, a.hi)
		gs = slices.Delete(gs, bj, bj+1)
	}
	// Then single windows move to the bucket where they cost least, while
	// that lowers the total (greedy merging can go down a poor path).
	setsOf := func(ws []string) (lo, hi [3]uint16) {
		for _, w := range ws {
			for k := 0; k < 3; k++ {
				lo[k] |= 1 << (w[k] & 15)
				hi[k] |= 1 << (w[k] >> 4)
			}
		}
		return
	}
	for pass := 0; pass < 20; pass++ {
		moved := false
		for a := range gs {
			for wi := 0; wi < len(gs[a].ws) && len(gs[a].ws) > 1; wi++ {
				w := gs[a].ws[wi]
				rest := slices.Delete(slices.Clone(gs[a].ws), wi, wi+1)
				restLo, restHi := setsOf(rest)
				restCost := cost(restLo, restHi)
				best, bestGain := -1, 1e-12
				for b := range gs {
					if b == a {
						continue
					}
					lo, hi := setsOf(append(slices.Clone(gs[b].ws), w))
					gain := gs[a].cost + gs[b].cost - restCost - cost(lo, hi)
					if gain > bestGain {
						best, bestGain = b, gain
					}
				}
				if best < 0 {
					continue
				}
				gs[a].ws = rest
				gs[a].lo, gs[a].hi, gs[a].cost = restLo, restHi, restCost
				b := &gs[best]
				b.ws = append(b.ws, w)
				b.lo, b.hi = setsOf(b.ws)
				b.cost = cost(b.lo, b.hi)
				moved = true
				wi--
			}
		}
		if !moved {
			break
		}
	}
	out := make([][]string, len(gs))
	for i := range gs {
		out[i] = gs[i].ws
	}
	return out
}

// buckets returns the buckets whose windows can sit at w[i:i+3].
func (t *vecTables) buckets(w []byte, i int) uint8 {
	if i < 0 || i+3 > len(w) {
		return 0
	}
	m := uint8(0xff)
	for k := 0; k < 3; k++ {
		c := w[i+k]
		m &= t.lo[k][c&15] & t.hi[k][c>>4]
	}
	return m
}

// vecHit is the definition of the vector scan's verdict on position i of
// w: the buckets whose window can sit there, and whether a digit stretch
// that can be a token starts there. Bytes outside w are absent (not
// digits, not separators): before w only at the stream's start, past it
// only at its end.
func (t *vecTables) vecHit(w []byte, i int) (buckets uint8, digit bool) {
	buckets = t.buckets(w, i)
	if t.digs == 0 {
		return buckets, false
	}
	d := func(j int) bool { return j >= 0 && j < len(w) && isDigit(w[j]) }
	sep := func(j int) bool { return j >= 0 && j < len(w) && isSep(w[j]) }
	tok := func(j int) bool { return d(j) || sep(j) && d(j-1) && d(j+1) }
	strict := func(j int) bool { return d(j) || sep(j) && d(j-2) && d(j-1) && d(j+1) && d(j+2) }
	if !tok(i) || tok(i-1) {
		return buckets, false
	}
	for j := i; j < i+11; j++ {
		if !strict(j) {
			return buckets, false
		}
	}
	return buckets, true
}

// vecScanRef is the kernel's contract computed with vecHit (the kernel on
// CPUs without one, and its reference in tests).
func vecScanRef(t *vecTables, b []byte, from, to int) (int, uint32, uint32) {
	for off := from; off < to; off += 32 {
		var kw, dig uint32
		for k := 0; k < 32; k++ {
			bk, d := t.vecHit(b, off+k)
			if bk != 0 {
				kw |= 1 << k
			}
			if d {
				dig |= 1 << k
			}
		}
		if kw|dig != 0 {
			return off, kw, dig
		}
	}
	return to, 0, 0
}

// feedVec judges the positions whose bytes are all in the window (every
// position at eof), runs the automaton at keyword hits and queues digit
// candidates.
func (s *Stream) feedVec(eof bool) {
	v := s.m.vec
	w := s.win
	if s.state != 0 {
		// A keyword in progress at the end of the last write.
		s.runAC(int(s.acPos-s.base), 0)
	}
	i := int(s.vpos - s.base)
	limit := len(w) - vecAhead
	if eof {
		limit = len(w)
	}
	// The stream's first two positions have nothing before them: the
	// kernel needs two bytes of lookbehind.
	for ; i < min(2, limit); i++ {
		s.vecOne(i)
	}
	if kend := i + max(min(limit, len(w)-vecReach+32)-i, 0)/32*32; kend > i {
		for i < kend {
			off, kw, dig := v.kernel(&v.tab, w, i, kend)
			if off >= kend {
				break
			}
			for ; kw != 0; kw &= kw - 1 {
				s.vecKeyword(off + bits.TrailingZeros32(kw))
			}
			for ; dig != 0; dig &= dig - 1 {
				s.pend = append(s.pend, candidate{start: s.base + int64(off+bits.TrailingZeros32(dig)), kw: -1})
			}
			i = off + 32
		}
		i = kend
	}
	for ; i < limit; i++ {
		s.vecOne(i)
	}
	s.vpos = s.base + int64(i)
}

// vecOne judges position i with the definition (near the window's edges).
func (s *Stream) vecOne(i int) {
	bk, d := s.m.vec.tab.vecHit(s.win, i)
	if bk != 0 {
		s.vecKeyword(i)
	}
	if d {
		s.pend = append(s.pend, candidate{start: s.base + int64(i), kw: -1})
	}
}

// vecKeyword runs the automaton over what a keyword whose window is at
// w[i] can span.
func (s *Stream) vecKeyword(i int) {
	v := s.m.vec
	s.runAC(i-int(v.backOf[v.tab.buckets(s.win, i)]), i+3)
}
