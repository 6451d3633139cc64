package dlp

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"sync"
)

// Matcher is the compiled detector set of one profile: immutable and safe
// for concurrent use. Each body gets its own Stream.
type Matcher struct {
	ac *automaton
	// The keyword prefilter samples one bigram every stride bytes (at
	// stream offsets that are multiples of stride). Each keyword has a
	// window of stride+1 bytes whose stride bigrams are in grams, so every
	// occurrence puts one of them on a sample; back[bigram] is how far
	// before the sample the keyword can start. Only a hit runs the
	// automaton, from that far back.
	stride int
	grams  [1 << 16 / 64]uint64
	gramB  *[1 << 16]uint8 // grams as one byte each (1: sampled), for the block loop
	back   []uint8         // 1<<16 entries
	// quads holds a hash of every keyword window (4 bytes at a sample's
	// place in its window): a sampled bigram is looked at further only
	// when one of the windows it can sit in is there.
	quads    [1 << 16 / 64]uint64
	quadOffs []uint8 // 1<<16 entries: bit o set when the bigram sits at window offset o
	kwDet    []int32 // keyword id -> index into dets
	kwLen    []int32
	dets     []detector
	cards    bool // card_number enabled
	ssn      bool // us_ssn enabled
	digits   bool // cards || ssn
	keepTail int  // bytes kept behind the scan position for keywords and digit runs that span writes
	// vec, when set, scans instead of the samplers (vecscan.go).
	vec *vecPlan
	// streams keeps scanners (and their window buffers) between requests.
	streams sync.Pool
}

// newMatcher compiles detectors (keyword detectors; card numbers and SSNs
// are switched on by cards and ssn).
func newMatcher(dets []detector, cards, ssn bool) *Matcher {
	var kernel func(*vecTables, []byte, int, int) (int, uint32, uint32)
	if haveVecKernel {
		kernel = vecKernel
	}
	return newMatcherKernel(dets, cards, ssn, kernel)
}

// newMatcherKernel compiles detectors to scan with the vector kernel, or
// with the samplers when kernel is nil.
func newMatcherKernel(dets []detector, cards, ssn bool, kernel func(*vecTables, []byte, int, int) (int, uint32, uint32)) *Matcher {
	m := &Matcher{dets: dets, cards: cards, ssn: ssn, digits: cards || ssn, stride: 3}
	var kws []string
	for d, det := range dets {
		for _, kw := range det.keywords {
			kws = append(kws, kw)
			m.kwDet = append(m.kwDet, int32(d))
			m.kwLen = append(m.kwLen, int32(len(kw)))
			if len(kw) < 4 && kw != "A3T" {
				m.stride = min(m.stride, len(kw)-1)
			}
		}
	}
	m.streams.New = func() any { return m.NewStream(PartBody, "") }
	m.ac = newAutomaton(kws)
	m.back = make([]uint8, 1<<16)
	m.gramB = new([1 << 16]uint8)
	m.quadOffs = make([]uint8, 1<<16)
	maxBack := 0
	for _, kw := range kws {
		maxBack = max(maxBack, m.addWindow(kw))
	}
	m.keepTail = max(m.ac.maxLen, maxBack+m.stride) + 2
	if m.digits {
		// A sample not yet judged needs digitSpan bytes on each side.
		m.keepTail = max(m.keepTail, 2*digitSpan+digitStride+2)
	}
	if kernel != nil {
		m.vec = newVecPlan(kws, m.digits, kernel)
	}
	return m
}

// addWindow picks the keyword's window of stride+1 bytes whose bigrams are
// rarest in the traffic egressd sees (lower-case letters and spaces are
// common, upper case and digits less, punctuation rare) and adds them to
// the sampled set. It returns how far back of a sample the keyword can
// start.
func (m *Matcher) addWindow(kw string) int {
	ext := [][]byte{[]byte(kw)}
	if kw == "A3T" {
		// AWS's A3T ids go on with [A-Z0-9]: the window is A3T and that byte.
		ext = nil
		for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" {
			ext = append(ext, []byte(kw+string(c)))
		}
	}
	w := m.stride + 1
	best, bestScore := 0, -1
	for q := 0; q+w <= len(ext[0]); q++ {
		score := 0
		for o := q; o < q+m.stride; o++ {
			score += commonness(ext[0][o]) * commonness(ext[0][o+1])
		}
		if bestScore < 0 || score < bestScore {
			best, bestScore = q, score
		}
	}
	back := best + m.stride - 1
	for _, k := range ext {
		for o := best; o < best+m.stride; o++ {
			g := uint16(k[o]) | uint16(k[o+1])<<8
			m.grams[g>>6] |= 1 << (g & 63)
			m.gramB[g] = 1
			m.back[g] = max(m.back[g], uint8(back))
			m.quadOffs[g] |= 1 << (o - best)
		}
		if m.stride+1 == 4 {
			h := quadHash(k[best:])
			m.quads[h>>6] |= 1 << (h & 63)
		}
	}
	return back
}

// quadHash hashes the 4 bytes at b (a keyword window).
func quadHash(b []byte) uint16 {
	v := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	return uint16((v * 0x9E3779B1) >> 16)
}

// quadHit reports whether a keyword window can hold the sampled bigram at
// w[i]: one of the 4-byte windows around it, at the offsets the bigram
// has in some keyword's window, hashes into quads. Near the window's edges
// it answers yes.
func (m *Matcher) quadHit(w []byte, i int, g uint16) bool {
	if m.stride != 3 {
		return true
	}
	offs := m.quadOffs[g]
	for o := 0; o < 3; o++ {
		if offs&(1<<o) == 0 {
			continue
		}
		j := i - o
		if j < 0 || j+4 > len(w) {
			return true
		}
		h := quadHash(w[j : j+4])
		if m.quads[h>>6]&(1<<(h&63)) != 0 {
			return true
		}
	}
	return false
}

// commonness is a rough weight of how often a byte occurs in text, JSON
// and code: English letter frequencies (per mille) for lower case, a fifth
// of that for upper case, and fixed weights for the rest.
func commonness(c byte) int {
	switch {
	case isLower(c):
		return letterFreq[c-'a']
	case isUpper(c):
		return max(letterFreq[c-'A']/5, 1)
	}
	switch c {
	case ' ':
		return 150
	case '.', '"', ',':
		return 50
	case ':', '\n', '/', '-':
		return 30
	case '_', '=':
		return 15
	}
	if isDigit(c) {
		return 25
	}
	return 3
}

var letterFreq = [26]int{82, 15, 28, 43, 127, 22, 20, 61, 70, 2, 8, 40, 24, 67, 75, 19, 1, 60, 63, 91, 28, 10, 24, 2, 20, 1}

// maxFindings bounds what one stream remembers; the first finding is
// enough to block, the rest are for the log.
const maxFindings = 32

// Digit tokens (card numbers, SSNs) are found by sampling. A token the
// verifier can accept is digits joined by single separators, 11 to 23
// bytes long (an SSN with its dashes to a 19-digit card in groups), so it
// holds exactly one or more bytes at offsets that are multiples of
// digitStride. From each sample that is a digit (or a separator between
// two), the scanner measures the stretch of digits and single separators
// around it, at most digitSpan bytes: a stretch that is long enough and
// digit-rich enough is one candidate, at its first digit. Everything else
// (short numbers, hex, base64, prose) costs one byte test per stride.
const (
	digitStride = 11
	digitSpan   = 23 // the longest token: 19 digits and 4 separators
	digitMin    = 11 // the shortest: AAA-GG-SSSS
)

type candidate struct {
	start int64 // stream offset of the keyword (or the first digit)
	kw    int32 // keyword id; -1 for a digit run
}

// Stream scans one byte stream in pieces. Memory stays bounded: it keeps
// the unjudged candidates' bytes (a verifier's lookahead at most) and a few
// bytes of lookbehind.
type Stream struct {
	m      *Matcher
	win    []byte
	base   int64 // stream offset of win[0]
	state  int32 // the automaton's state before acPos
	acPos  int64 // stream offset of the next byte the automaton reads
	acFrom int64 // where the automaton's current run began (it read every byte since)
	gram   int64 // stream offset of the next sampled bigram
	pend   []candidate
	found  []Finding
	part   Part
	hdr    string
	hdrN   int // length of the header's "Name: " before its value

	sample   int64 // next sampled offset
	lastSpan int64 // start of the last digit stretch queued (-1: none)
	vpos     int64 // the vector scan's next position (stream offset)
}

// NewStream starts scanning a stream whose findings are reported at part
// (header: the header's name).
func (m *Matcher) NewStream(part Part, header string) *Stream {
	s := &Stream{m: m}
	s.Reset(part, header)
	return s
}

// Reset makes s scan a new stream, keeping its buffers.
func (s *Stream) Reset(part Part, header string) {
	s.win, s.base, s.state, s.acPos, s.acFrom, s.gram = s.win[:0], 0, 0, 0, 0, 0
	s.pend, s.found = s.pend[:0], s.found[:0]
	s.part, s.hdr, s.hdrN = part, header, 0
	if part == PartHeader {
		s.hdrN = len(header) + 2
	}
	s.sample, s.lastSpan, s.vpos = 0, -1, 0
}

// Findings returns what the stream has found so far.
func (s *Stream) Findings() []Finding { return s.found }

// Offset is the number of bytes written so far.
func (s *Stream) Offset() int64 { return s.base + int64(len(s.win)) }

// Write scans p. It never fails.
func (s *Stream) Write(p []byte) (int, error) {
	if len(s.win) == 0 && len(p) >= 4<<10 {
		// Nothing held from before: scan p where it is and keep only
		// the tail the next write needs.
		own := s.win
		s.win = p
		s.scan()
		s.win = append(own, s.win[s.cut():]...)
		s.base += int64(len(p) - len(s.win))
		return len(p), nil
	}
	s.win = append(s.win, p...)
	s.scan()
	s.trim()
	return len(p), nil
}

func (s *Stream) scan() {
	if s.m.vec != nil {
		s.feedVec(false)
		s.resolve(false)
		return
	}
	if len(s.m.kwLen) > 0 {
		s.feed()
	}
	if s.m.digits {
		s.feedDigits(false)
	}
	s.resolve(false)
}

// Close judges what is left as the end of the stream.
func (s *Stream) Close() {
	if s.m.vec != nil {
		s.feedVec(true)
	} else if s.m.digits {
		s.feedDigits(true)
	}
	s.resolve(true)
	s.win = s.win[:0]
}

// feed samples the bigrams of the new bytes and runs the automaton where
// one is in the keywords' windows, queueing what it finds. A sample needs
// the byte after it: the last byte waits for the next write (a keyword
// ends no earlier than two bytes past its window's last sample).
func (s *Stream) feed() {
	m := s.m
	w := s.win
	n := len(w)
	if s.state != 0 {
		// A keyword in progress at the end of the last write.
		s.runAC(int(s.acPos-s.base), 0)
	}
	stride := m.stride
	gb := m.gramB
	i := int(s.gram - s.base)
	if stride == 3 {
		// Eight samples at a time, one branch for all eight: nearly
		// every block holds no sampled bigram.
		for ; i+24 < n; i += 24 {
			b := (*[25]byte)(w[i : i+25])
			g0 := binary.LittleEndian.Uint16(b[0:])
			g1 := binary.LittleEndian.Uint16(b[3:])
			g2 := binary.LittleEndian.Uint16(b[6:])
			g3 := binary.LittleEndian.Uint16(b[9:])
			g4 := binary.LittleEndian.Uint16(b[12:])
			g5 := binary.LittleEndian.Uint16(b[15:])
			g6 := binary.LittleEndian.Uint16(b[18:])
			g7 := binary.LittleEndian.Uint16(b[21:])
			hit := uint64(gb[g0]) | uint64(gb[g1])<<1 | uint64(gb[g2])<<2 | uint64(gb[g3])<<3 |
				uint64(gb[g4])<<4 | uint64(gb[g5])<<5 | uint64(gb[g6])<<6 | uint64(gb[g7])<<7
			for ; hit != 0; hit &= hit - 1 {
				k := i + 3*bits.TrailingZeros64(hit)
				g := uint16(w[k]) | uint16(w[k+1])<<8
				if m.quadHit(w, k, g) {
					s.runAC(k-int(m.back[g]), k+2)
				}
			}
		}
	}
	for ; i+1 < n; i += stride {
		s.sampleAt(i)
	}
	s.gram = s.base + int64(i)
}

// sampleAt looks at the bigram sampled at w[i] and runs the automaton
// when a keyword window can hold it.
func (s *Stream) sampleAt(i int) {
	m := s.m
	w := s.win
	g := uint16(w[i]) | uint16(w[i+1])<<8
	if m.grams[g>>6]&(1<<(g&63)) == 0 || !m.quadHit(w, i, g) {
		return
	}
	s.runAC(i-int(m.back[g]), i+2)
}

// runAC runs the automaton from w[from] (or where it stopped, if it has
// read every byte since from) until it has read w[to-1] and is back at its
// root, or the window ends.
func (s *Stream) runAC(from, to int) {
	a := s.m.ac
	w := s.win
	from = max(from, 0)
	i := int(s.acPos - s.base)
	st := s.state
	if from > i || from < int(s.acFrom-s.base) {
		// Past where it stopped (at its root: no keyword in progress), or
		// before the run it made: a run from here. A keyword found twice
		// is one finding.
		i, st = from, 0
		s.acFrom = s.base + int64(from)
	}
	nc := int32(a.nclass)
	for ; i < len(w) && (i < to || st != 0); i++ {
		st = a.delta[st*nc+int32(a.class[w[i]])]
		if out := a.out[st]; out != nil {
			for _, kw := range out {
				s.pend = append(s.pend, candidate{start: s.base + int64(i+1) - int64(s.m.kwLen[kw]), kw: kw})
			}
		}
	}
	s.acPos, s.state = s.base+int64(i), st
}

func isSep(b byte) bool { return b == ' ' || b == '-' }

// feedDigits judges the samples whose surroundings are in the window (all
// of them at eof) and queues the digit stretches they sit in. Samples are
// at fixed stream offsets, so what is queued does not depend on how the
// stream was cut into writes.
func (s *Stream) feedDigits(eof bool) {
	w := s.win
	end := s.base + int64(len(w))
	stop := end - digitSpan - 1 // a sample past this may continue in the next write
	if eof {
		stop = end
	}
	// Four samples at a time, without branches: a sample is worth a look
	// when it is a digit (or a separator followed by one) and a stretch of
	// 11 bytes or more can hold it, which needs a token byte at w[i-5] or
	// w[i+6].
	const block = 4 * digitStride
	for s.sample < stop {
		i := int(s.sample - s.base)
		if i >= 5 && s.sample+block+6 < stop {
			b := (*[block + 11]byte)(w[i-5 : i+block+6])
			const j0, j1, j2, j3 = 5, 5 + digitStride, 5 + 2*digitStride, 5 + 3*digitStride
			mask := uint((digitB[b[j0]]|sepB[b[j0]]&digitB[b[j0+1]])&(tokenB[b[j0-5]]|tokenB[b[j0+6]])) |
				uint((digitB[b[j1]]|sepB[b[j1]]&digitB[b[j1+1]])&(tokenB[b[j1-5]]|tokenB[b[j1+6]]))<<1 |
				uint((digitB[b[j2]]|sepB[b[j2]]&digitB[b[j2+1]])&(tokenB[b[j2-5]]|tokenB[b[j2+6]]))<<2 |
				uint((digitB[b[j3]]|sepB[b[j3]]&digitB[b[j3+1]])&(tokenB[b[j3-5]]|tokenB[b[j3+6]]))<<3
			for ; mask != 0; mask &= mask - 1 {
				s.queueStretch(i + digitStride*bits.TrailingZeros(mask))
			}
			s.sample += block
			continue
		}
		s.sampleDigit(i)
		s.sample += digitStride
	}
}

// sampleDigit is one sample of feedDigits near the window's edges.
func (s *Stream) sampleDigit(i int) {
	w := s.win
	if !isDigit(w[i]) && !(isSep(w[i]) && i+1 < len(w) && isDigit(w[i+1])) {
		return
	}
	if i >= 5 && i+6 < len(w) && !tokenByte[w[i-5]] && !tokenByte[w[i+6]] {
		return
	}
	s.queueStretch(i)
}

// Byte classes as 0 or 1, for branch-free tests.
var digitB, sepB, tokenB = func() (d, s, t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		d[c], t[c] = 1, 1
	}
	s[' '], s['-'], t[' '], t['-'] = 1, 1, 1, 1
	return
}()

// digitByte marks digits.
var digitByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	return t
}()

// tokenByte marks the bytes of digit tokens: digits and separators.
var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t[' '], t['-'] = true, true
	return t
}()

// queueStretch measures the stretch of digits joined by single separators
// around w[i] and queues its first digit when it could be a token.
func (s *Stream) queueStretch(i int) {
	w := s.win
	if i >= 5 && i+7 <= len(w) {
		// The stretch covers w[i-5..i] or w[i..i+6], all token bytes.
		t := (*[13]byte)(w[i-5 : i+8])
		left := tokenB[t[0]] & tokenB[t[1]] & tokenB[t[2]] & tokenB[t[3]] & tokenB[t[4]] & tokenB[t[5]]
		right := tokenB[t[5]] & tokenB[t[6]] & tokenB[t[7]] & tokenB[t[8]] & tokenB[t[9]] & tokenB[t[10]] & tokenB[t[11]]
		if left|right == 0 {
			return
		}
	}
	lo, hi := i, i+1
	if !isDigit(w[i]) {
		lo = i + 1
		hi = i + 2
	}
	digits := 0
	for ; lo > 0 && i-lo < digitSpan; lo-- {
		if isDigit(w[lo-1]) {
			continue
		}
		if isSep(w[lo-1]) && lo > 1 && isDigit(w[lo-2]) {
			continue
		}
		break
	}
	for ; hi < len(w) && hi-i <= digitSpan; hi++ {
		if isDigit(w[hi]) {
			continue
		}
		if isSep(w[hi]) && hi+1 < len(w) && isDigit(w[hi+1]) {
			continue
		}
		break
	}
	if hi-lo < digitMin || hi-lo > digitSpan {
		return // too short, or part of a longer run: no token
	}
	for _, c := range w[lo:hi] {
		if isDigit(c) {
			digits++
		}
	}
	// A token the verifier accepts is the whole stretch (it ends where
	// the separators change or stop): 9 digits in 11 bytes (an SSN) or
	// 13 to 19 digits (a card). Phone numbers and the like end here.
	if !(digits == 9 && hi-lo == 11 || digits >= 13 && digits <= 19) {
		return
	}
	start := s.base + int64(lo)
	if start == s.lastSpan {
		return
	}
	s.lastSpan = start
	s.pend = append(s.pend, candidate{start: start, kw: -1})
}

// resolve judges the candidates whose verdict is known.
func (s *Stream) resolve(eof bool) {
	keep := s.pend[:0]
	for _, c := range s.pend {
		i := int(c.start - s.base)
		var name string
		var start int
		var r result
		if c.kw < 0 {
			name, r = verifyDigits(s.win, i, eof)
			start = i
			if r == matched && (name == DetectorCardNumber && !s.m.cards || name == DetectorUSSSN && !s.m.ssn) {
				r = noMatch
			}
		} else {
			d := &s.m.dets[s.m.kwDet[c.kw]]
			name = d.name
			start, r = d.verify(s.win, i, int(s.m.kwLen[c.kw]), eof)
		}
		switch r {
		case needMore:
			keep = append(keep, c)
		case matched:
			s.add(name, s.base+int64(start))
		}
	}
	s.pend = keep
}

func (s *Stream) add(name string, off int64) {
	f := Finding{Detector: name, Part: s.part, Header: s.hdr}
	switch s.part {
	case PartBody:
		f.Offset = off
	case PartHeader:
		if off < int64(s.hdrN) {
			f.Header = "" // the match touches the name: do not log it
		}
	}
	for _, g := range s.found {
		if g.Detector == name && g.Offset == f.Offset && (s.part == PartBody || g == f) {
			return
		}
	}
	if len(s.found) < maxFindings {
		s.found = append(s.found, f)
	}
}

// trim drops bytes no candidate needs, keeping a short tail for keywords
// and digit runs that continue in the next write.
func (s *Stream) trim() {
	cut := s.cut()
	if cut <= 0 {
		return
	}
	n := copy(s.win, s.win[cut:])
	s.win = s.win[:n]
	s.base += int64(cut)
}

// cut is how many bytes at the window's start nothing needs any more.
func (s *Stream) cut() int {
	cut := len(s.win) - s.m.keepTail
	for _, c := range s.pend {
		cut = min(cut, int(c.start-s.base)-2) // the verifiers' lookbehind
	}
	if s.m.vec != nil { // positions not yet judged, their lookbehind and keywords' back
		return max(min(cut, int(s.vpos-s.base)-s.m.keepTail), 0)
	}
	if s.m.digits { // samples not yet judged look digitSpan bytes back
		cut = min(cut, int(s.sample-s.base)-digitSpan-2)
	}
	if len(s.m.kwLen) > 0 { // nor do keyword samples, their back and the verifiers' lookbehind
		cut = min(cut, int(s.gram-s.base)-s.m.keepTail)
	}
	return max(cut, 0)
}

// scanAll scans b as a whole stream and returns its findings (a copy).
func (m *Matcher) scanAll(b []byte, part Part, header string) []Finding {
	s := m.NewStream(part, header)
	s.Write(b)
	s.Close()
	return slices.Clone(s.found)
}
