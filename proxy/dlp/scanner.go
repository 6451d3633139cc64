package dlp

import (
	"slices"
)

// Matcher is the compiled detector set of one profile: immutable and safe
// for concurrent use. Each body gets its own Stream.
type Matcher struct {
	ac       *automaton
	pairs    [1 << 16 / 64]uint64 // bigrams that start a keyword (a bitset)
	kwDet    []int32              // keyword id -> index into dets
	kwLen    []int32
	dets     []detector
	cards    bool // card_number enabled
	ssn      bool // us_ssn enabled
	digits   bool // cards || ssn
	keepTail int  // bytes kept behind the scan position for keywords and digit runs that span writes
}

// newMatcher compiles detectors (keyword detectors; card numbers and SSNs
// are switched on by cards and ssn).
func newMatcher(dets []detector, cards, ssn bool) *Matcher {
	m := &Matcher{dets: dets, cards: cards, ssn: ssn, digits: cards || ssn}
	var kws []string
	for d, det := range dets {
		for _, kw := range det.keywords {
			kws = append(kws, kw)
			m.kwDet = append(m.kwDet, int32(d))
			m.kwLen = append(m.kwLen, int32(len(kw)))
			p := uint16(kw[0])<<8 | uint16(kw[1])
			m.pairs[p>>6] |= 1 << (p & 63)
		}
	}
	m.ac = newAutomaton(kws)
	m.keepTail = m.ac.maxLen + 2
	if m.digits {
		m.keepTail = max(m.keepTail, digitRegion+2)
	}
	return m
}

// maxFindings bounds what one stream remembers; the first finding is
// enough to block, the rest are for the log.
const maxFindings = 32

// Digit runs are found by sampling: a card number or an SSN is a token of
// at least 11 bytes of digits and single separators, so it holds a byte at
// an offset that is a multiple of digitStride, and that byte is a digit
// or a separator next to one. Around each such sample the scanner looks for
// the starts of digit runs, digitRegion bytes either way (a token is at
// most 23 bytes).
const (
	digitStride = 6
	digitRegion = 24
)

type candidate struct {
	start int64 // stream offset of the keyword (or the first digit)
	kw    int32 // keyword id; -1 for a digit run
}

// Stream scans one byte stream in pieces. Memory stays bounded: it keeps
// the unjudged candidates' bytes (a verifier's lookahead at most) and a few
// bytes of lookbehind.
type Stream struct {
	m     *Matcher
	win   []byte
	base  int64 // stream offset of win[0]
	state int32
	pend  []candidate
	found []Finding
	part  Part
	hdr   string
	hdrN  int // length of the header's "Name: " before its value

	sample    int64 // next sampled offset
	digitDone int64 // digit-run starts before this offset are queued
	digitTo   int64 // look for digit-run starts up to here
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
	s.win, s.base, s.state = s.win[:0], 0, 0
	s.pend, s.found = s.pend[:0], s.found[:0]
	s.part, s.hdr, s.hdrN = part, header, 0
	if part == PartHeader {
		s.hdrN = len(header) + 2
	}
	s.sample, s.digitDone, s.digitTo = 0, 0, 0
}

// Findings returns what the stream has found so far.
func (s *Stream) Findings() []Finding { return s.found }

// Offset is the number of bytes written so far.
func (s *Stream) Offset() int64 { return s.base + int64(len(s.win)) }

// Write scans p. It never fails.
func (s *Stream) Write(p []byte) (int, error) {
	from := len(s.win)
	s.win = append(s.win, p...)
	if len(s.m.kwLen) > 0 {
		s.feed(from)
	}
	if s.m.digits {
		s.feedDigits(false)
	}
	s.resolve(false)
	s.trim()
	return len(p), nil
}

// Close judges what is left as the end of the stream.
func (s *Stream) Close() {
	if s.m.digits {
		s.feedDigits(true)
	}
	s.resolve(true)
	s.win = s.win[:0]
}

// feed runs the automaton over win[from:] and queues candidates. At the
// root it skips every byte whose bigram starts no keyword: from such a
// byte the automaton would fall back to the root on the next byte anyway
// (a depth-one state fails to the root), so the skip changes nothing.
func (s *Stream) feed(from int) {
	a := s.m.ac
	pairs := &s.m.pairs
	w := s.win
	st := s.state
	nc := int32(a.nclass)
	n := len(w)
	for i := from; i < n; i++ {
		if st == 0 {
			for i+1 < n {
				p := uint16(w[i])<<8 | uint16(w[i+1])
				if pairs[p>>6]&(1<<(p&63)) != 0 {
					break
				}
				i++
			}
		}
		st = a.delta[st*nc+int32(a.class[w[i]])]
		if out := a.out[st]; out != nil {
			for _, kw := range out {
				s.pend = append(s.pend, candidate{start: s.base + int64(i+1) - int64(s.m.kwLen[kw]), kw: kw})
			}
		}
	}
	s.state = st
}

func isSep(b byte) bool { return b == ' ' || b == '-' }

// feedDigits samples the new bytes and queues the digit runs that start
// near a sample. Samples are at fixed stream offsets, so what is queued
// does not depend on how the stream was cut into writes.
func (s *Stream) feedDigits(eof bool) {
	w := s.win
	end := s.base + int64(len(w))
	s.queueDigits(min(s.digitTo, end)) // a region that reached past the last write
	for ; s.sample < end; s.sample += digitStride {
		b := w[s.sample-s.base]
		hit := isDigit(b)
		if !hit && isSep(b) {
			// A separator counts when a digit is next to it; past the
			// end of the window, assume one.
			prev := s.sample > s.base && isDigit(w[s.sample-s.base-1])
			next := s.sample+1 >= end || isDigit(w[s.sample-s.base+1])
			hit = prev || next
		}
		if hit {
			s.digitDone = max(s.digitDone, s.sample-digitRegion, 0)
			s.digitTo = max(s.digitTo, s.sample+digitRegion)
			s.queueDigits(min(s.digitTo, end))
		}
	}
}

// queueDigits queues the digit runs that start in [digitDone, stop).
func (s *Stream) queueDigits(stop int64) {
	w := s.win
	for off := s.digitDone; off < stop; off++ {
		i := int(off - s.base)
		if isDigit(w[i]) && (off == 0 || !isDigit(w[i-1])) {
			s.pend = append(s.pend, candidate{start: off, kw: -1})
		}
	}
	s.digitDone = max(s.digitDone, stop)
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
	cut := len(s.win) - s.m.keepTail
	for _, c := range s.pend {
		cut = min(cut, int(c.start-s.base)-2) // the verifiers' lookbehind
	}
	if s.digitTo > s.digitDone { // a digit region continues into the next write
		cut = min(cut, int(s.digitDone-s.base)-2)
	}
	if cut <= 0 {
		return
	}
	n := copy(s.win, s.win[cut:])
	s.win = s.win[:n]
	s.base += int64(cut)
}

// scanAll scans b as a whole stream and returns its findings (a copy).
func (m *Matcher) scanAll(b []byte, part Part, header string) []Finding {
	s := m.NewStream(part, header)
	s.Write(b)
	s.Close()
	return slices.Clone(s.found)
}
