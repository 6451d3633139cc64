package dlp

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Engine runs the chain of the profile a request's rule selects: the
// built-in detectors, then the ICAP service. It is safe for concurrent use;
// Store swaps the rules on reload.
type Engine struct {
	state atomic.Pointer[engineState]
	mu    sync.Mutex // serializes Store, Start and Close
	// OnICAPState is called when the ICAP service starts failing (up
	// false, with the error) and when it answers again (up true): once per
	// change, not per request. Nil: not reported.
	OnICAPState func(up bool, err error)
	icapDown    atomic.Bool
	started     bool
}

// engineState is one generation of rules with the ICAP inspector they use
// (nil when no profile asks ICAP).
type engineState struct {
	rules *Rules
	icap  *icapInspector
}

// NewEngine returns an engine serving r (nil: no inspection). It opens no
// connection before Start.
func NewEngine(r *Rules) *Engine {
	e := &Engine{}
	e.Store(r)
	return e
}

// Store swaps in new rules for new requests. The ICAP client (its pooled
// connections and the service's options) is kept when dlp.icap did not
// change; otherwise a new one serves new requests and the old one closes
// its idle connections (transactions under way finish).
func (e *Engine) Store(r *Rules) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.state.Load()
	st := &engineState{rules: r}
	if key := icapKey(r); key != "" {
		if old != nil && old.icap != nil && old.icap.key == key {
			st.icap = old.icap
		} else if in, err := newICAPInspector(r); err == nil {
			// Compile validated the URL and timeout: err is not expected;
			// without a client, ICAP profiles fail by dlp.icap.failure.
			st.icap = in
			if e.started {
				in.client.Start()
			}
		}
	}
	e.state.Store(st)
	if old != nil && old.icap != nil && old.icap != st.icap {
		old.icap.client.Close()
	}
}

// Start asks the ICAP service for its OPTIONS in the background, so that
// the first request finds them.
func (e *Engine) Start() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.started = true
	if st := e.state.Load(); st != nil && st.icap != nil {
		st.icap.client.Start()
	}
}

// Close closes the ICAP client's connections and waits for its
// background work.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := e.state.Load(); st != nil && st.icap != nil {
		st.icap.client.Close()
	}
}

// Rules returns the rules in force.
func (e *Engine) Rules() *Rules { return e.state.Load().rules }

// Active reports whether a request under a rule with this dlp field is
// inspected at all.
func (e *Engine) Active(profile string) bool {
	r := e.state.Load().rules
	return r != nil && r.pick(profile) != nil
}

// Inspect judges one request under the profile its rule names ("": the
// default profile). It reads the body's first max_scan_bytes (and no
// more) before it answers; nothing has been sent anywhere but to the ICAP
// service. A nil Outcome means the request is not inspected: forward it
// as it is. body may be nil.
func (e *Engine) Inspect(ctx context.Context, profileName string, r *Request, body io.ReadCloser) *Outcome {
	st := e.state.Load()
	rules := st.rules
	if rules == nil {
		return nil
	}
	p := rules.pick(profileName)
	if p == nil {
		return nil
	}
	out := &Outcome{Profile: p.name, Report: p.report}
	b, rest, err := hold(body, rules, r.Header, r.ContentLength)
	r.Body = b
	if err != nil {
		// The client's body broke off: nothing can be forwarded.
		b.release()
		closeQuiet(body)
		out.Action = Unavailable
		return out
	}
	block := false
	// A plain body past max_scan_bytes streamed on (dlp.oversize: stream)
	// keeps its scanner open: the tail continues it, with no second pass
	// over the held part.
	streamOn := rules.oversize == OversizeStream && p.matcher != nil && b.plain() && !b.complete
	var bodyScan *Stream
	if p.matcher != nil {
		var fs []Finding
		fs, bodyScan = scanRequest(p.matcher, r, streamOn)
		out.Findings = append(out.Findings, fs...)
	}
	if st := b.stat(); st.bomb {
		out.Findings = append(out.Findings, Finding{Detector: FindingBomb, Part: PartBody, Offset: st.decoded})
	} else if st.undecodable {
		out.Findings = append(out.Findings, Finding{Detector: FindingUndecodable, Part: PartBody, Offset: st.decoded})
	}
	if b.oversize() && rules.oversize == OversizeBlock {
		out.Findings = append(out.Findings, Finding{Detector: FindingOversize, Part: PartBody, Offset: rules.maxScan})
	}
	block = len(out.Findings) > 0
	if p.icap && !block {
		v, err := e.askICAP(ctx, st, r)
		switch {
		case err != nil:
			out.ICAP = ICAPError
			if rules.icap.Failure == FailureClosed {
				out.Action = Unavailable
			}
		case v.Block:
			out.ICAP = ICAPBlock
			out.Findings = append(out.Findings, v.Findings...)
			out.Response = v.Response
			block = true
		case v.Replace != nil:
			out.ICAP = ICAPModify
			out.Replace = v.Replace
		default:
			out.ICAP = ICAPAllow
		}
	}
	if block {
		out.Action = Block
	}
	if out.Action != Forward && !p.report {
		b.release()
		closeQuiet(body)
		return out
	}
	// Forward: report mode forwards whatever was found, as it was sent.
	out.Action = Forward
	if out.Response != nil {
		out.Response.Body.Close()
		out.Response = nil
	}
	if p.report {
		out.Replace = nil
	}
	if out.Replace != nil {
		b.release()
		closeQuiet(body)
		out.Body = io.NopCloser(bytes.NewReader(out.Replace.Body))
		return out
	}
	if body == nil || body == http.NoBody {
		b.release()
		return out
	}
	switch {
	case !b.oversize():
		out.Body = &heldBody{held: b, c: body}
	case rules.oversize == OversizeStream && p.matcher != nil:
		if bodyScan != nil {
			out.tail = continueTail(b, rest, body, bodyScan, !p.report)
		} else {
			out.tail = newTailReader(b, rest, body, p.matcher.NewStream(PartBody, ""), !p.report)
		}
		out.Body = out.tail
	default:
		out.Body = &heldBody{held: b, rest: rest, c: body}
	}
	return out
}

func (e *Engine) askICAP(ctx context.Context, st *engineState, r *Request) (Verdict, error) {
	if st.icap == nil {
		return Verdict{}, errNoICAP
	}
	v, err := st.icap.Inspect(ctx, r)
	if err != nil {
		if e.icapDown.CompareAndSwap(false, true) && e.OnICAPState != nil {
			e.OnICAPState(false, err)
		}
	} else if e.icapDown.CompareAndSwap(true, false) && e.OnICAPState != nil {
		e.OnICAPState(true, nil)
	}
	return v, err
}

var errNoICAP = errors.New("dlp: no ICAP client")

func closeQuiet(c io.Closer) {
	if c != nil {
		c.Close()
	}
}

// hold reads up to max_scan_bytes of body (and one more byte, to know
// whether there is more) into one buffer: an exact one for a small
// declared length, else one of the rules' pooled buffers. rest reads what
// follows.
func hold(body io.ReadCloser, rules *Rules, h http.Header, contentLength int64) (*Body, io.Reader, error) {
	max := rules.maxScan
	codings, ok := contentCodings(h.Values("Content-Encoding"))
	media, boundary := mediaOf(h.Get("Content-Type"))
	b := &Body{codings: codings, codingOK: ok, media: media, boundary: boundary, max: max, complete: true}
	if body == nil || body == http.NoBody {
		return b, nil, nil
	}
	var buf []byte
	if contentLength >= 0 && contentLength < min(max, 64<<10) {
		buf = make([]byte, contentLength+1)
	} else {
		b.pooled = rules.holdBufs.Get().(*[]byte)
		b.pool = rules.holdBufs
		buf = *b.pooled
	}
	n, err := io.ReadFull(body, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	b.raw = buf[:n]
	if err != nil {
		return b, nil, err
	}
	b.complete = int64(n) <= max
	return b, body, nil
}

// heldBody forwards the held bytes, then (past max_scan_bytes, with
// dlp.oversize: allow) the rest unscanned, and closes the client's body.
// Close may come while a Read runs (http.Transport closes a request body
// from another goroutine): the held buffer goes back to its pool only when
// no Read is copying from it.
type heldBody struct {
	mu      sync.Mutex
	held    *Body
	off     int
	rest    io.Reader // nil: the held bytes are the whole body
	c       io.Closer
	closed  bool
	writing bool // WriteTo is writing from the held buffer
}

// heldWriteChunk bounds each write WriteTo makes from the held buffer:
// the upstream connection moves its idle deadline at each write, so a
// stalled origin is still noticed within timeouts.idle of a write.
const heldWriteChunk = 256 << 10

func (h *heldBody) Read(p []byte) (int, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return 0, errBodyClosed
	}
	if raw := h.held.raw; h.off < len(raw) {
		n := copy(p, raw[h.off:])
		h.off += n
		h.mu.Unlock()
		return n, nil
	}
	h.mu.Unlock()
	if h.rest == nil {
		return 0, io.EOF
	}
	return h.rest.Read(p)
}

// WriteTo writes the held bytes to w from the held buffer itself (no copy
// through a caller's buffer, a few large writes), then the rest. A Close
// during a write stops it after that write; the buffer goes back to its
// pool only when no write reads it.
func (h *heldBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return n, errBodyClosed
		}
		raw := h.held.raw
		if h.off >= len(raw) {
			h.mu.Unlock()
			break
		}
		p := raw[h.off:min(len(raw), h.off+heldWriteChunk)]
		h.writing = true
		h.mu.Unlock()
		m, err := w.Write(p)
		h.mu.Lock()
		h.writing = false
		h.off += m
		if h.closed {
			h.held.release()
		}
		h.mu.Unlock()
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	if h.rest == nil {
		return n, nil
	}
	m, err := io.Copy(w, h.rest)
	return n + m, err
}

func (h *heldBody) Close() error {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		if !h.writing {
			h.held.release()
		}
	}
	h.mu.Unlock()
	return h.c.Close()
}

var errBodyClosed = errors.New("dlp: read of a closed request body")

// scanRequest runs the built-in detectors over the request target, the
// headers and the decoded body. With open, a plain body's scanner is left
// open (its pending candidates unjudged) and returned, for the tail of a
// streamed body to continue.
func scanRequest(m *Matcher, r *Request, open bool) ([]Finding, *Stream) {
	var out []Finding
	var bodyScan *Stream
	s := m.streams.Get().(*Stream)
	s.Reset(PartURL, "")
	if r.URL != nil {
		target := r.URL.RequestURI()
		s.Write([]byte(target))
		s.Close()
		out = append(out, s.found...)
		if strings.ContainsAny(target, "%+") {
			// Percent-encoding must not hide a secret: scan the decoded
			// path and query too.
			q := r.URL.Query()
			var b bytes.Buffer
			b.WriteString(r.URL.Path)
			for k, vs := range q {
				b.WriteString(" " + k)
				for _, v := range vs {
					b.WriteString("=" + v)
				}
			}
			s.Reset(PartURL, "")
			s.Write(b.Bytes())
			s.Close()
			out = appendNew(out, s.found)
		}
	}
	var line []byte
	for k, vs := range r.Header {
		for _, v := range vs {
			// Name and value are scanned together (a secret may sit in
			// either); a match in the value is located by the name.
			line = append(append(append(line[:0], k...), ": "...), v...)
			s.Reset(PartHeader, k)
			s.Write(line)
			s.Close()
			for _, f := range s.found {
				out = appendNew(out, []Finding{f})
			}
		}
	}
	if b := r.Body; b != nil && b.Len() > 0 {
		s.Reset(PartBody, "")
		if b.plain() {
			// Nothing to decode: scan the held bytes where they are.
			s.Write(b.raw[:min(int64(len(b.raw)), b.max)])
		} else {
			d := b.Decoded()
			buf := scanBufs.Get().(*[]byte)
			for {
				n, err := d.Read(*buf)
				s.Write((*buf)[:n])
				if err != nil {
					break
				}
			}
			scanBufs.Put(buf)
		}
		if open {
			// The tail owns the scanner from now on.
			bodyScan = s
			out = append(out, s.found...)
		} else {
			s.Close()
			out = append(out, s.found...)
		}
	}
	// The log lists findings in request order: target, headers, body.
	if bodyScan == nil {
		m.streams.Put(s)
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.Part != b.Part {
			return partOrder[a.Part] - partOrder[b.Part]
		}
		return cmp.Compare(a.Offset, b.Offset)
	})
	return out, bodyScan
}

var partOrder = map[Part]int{PartURL: 0, PartHeader: 1, PartBody: 2, PartICAP: 3}

var scanBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func appendNew(out, add []Finding) []Finding {
	for _, f := range add {
		dup := false
		for _, g := range out {
			if g == f {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, f)
		}
	}
	return out
}
