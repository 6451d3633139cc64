package dlp

import (
	"bytes"
	"cmp"
	"context"
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
	rules atomic.Pointer[Rules]
	// ICAP returns the inspector that asks the ICAP service of rules, or
	// nil when ICAP is not configured. Nil: ICAP profiles fail (closed).
	ICAP func(r *Rules) Inspector
}

// NewEngine returns an engine serving r (nil: no inspection).
func NewEngine(r *Rules) *Engine {
	e := &Engine{}
	e.rules.Store(r)
	return e
}

// Store swaps in new rules for new requests.
func (e *Engine) Store(r *Rules) { e.rules.Store(r) }

// Rules returns the rules in force.
func (e *Engine) Rules() *Rules { return e.rules.Load() }

// Active reports whether a request under a rule with this dlp field is
// inspected at all.
func (e *Engine) Active(profile string) bool {
	r := e.rules.Load()
	return r != nil && r.pick(profile) != nil
}

// Inspect judges one request under the profile its rule names ("": the
// default profile). It reads the body's first max_scan_bytes (and no
// more) before it answers; nothing has been sent anywhere but to the ICAP
// service. A nil Outcome means the request is not inspected: forward it
// as it is. body may be nil.
func (e *Engine) Inspect(ctx context.Context, profileName string, r *Request, body io.ReadCloser) *Outcome {
	rules := e.rules.Load()
	if rules == nil {
		return nil
	}
	p := rules.pick(profileName)
	if p == nil {
		return nil
	}
	out := &Outcome{Profile: p.name, Report: p.report}
	b, rest, err := hold(body, rules.maxScan, r.Header, r.ContentLength)
	r.Body = b
	if err != nil {
		// The client's body broke off: nothing can be forwarded.
		closeQuiet(body)
		out.Action = Unavailable
		return out
	}
	block := false
	if p.matcher != nil {
		out.Findings = append(out.Findings, scanRequest(p.matcher, r)...)
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
		v, err := e.askICAP(ctx, rules, r)
		switch {
		case err != nil:
			out.Action = Unavailable
		case v.Block:
			out.Findings = append(out.Findings, v.Findings...)
			out.Response = v.Response
			block = true
		case v.Replace != nil:
			out.Replace = v.Replace
		}
	}
	if block {
		out.Action = Block
	}
	if out.Action != Forward && !p.report {
		closeQuiet(body)
		return out
	}
	// Forward: report mode forwards whatever was found.
	out.Action = Forward
	if out.Response != nil {
		out.Response.Body.Close()
		out.Response = nil
	}
	if out.Replace != nil {
		closeQuiet(body)
		out.Body = io.NopCloser(bytes.NewReader(out.Replace.Body))
		return out
	}
	if body == nil || body == http.NoBody {
		return out
	}
	switch {
	case !b.oversize():
		out.Body = &heldBody{r: bytes.NewReader(b.raw), c: body}
	case rules.oversize == OversizeStream && p.matcher != nil:
		out.tail = newTailReader(b, rest, body, p.matcher.NewStream(PartBody, ""), !p.report)
		out.Body = out.tail
	default:
		out.Body = &heldBody{r: io.MultiReader(bytes.NewReader(b.raw), rest), c: body}
	}
	return out
}

func (e *Engine) askICAP(ctx context.Context, rules *Rules, r *Request) (Verdict, error) {
	if e.ICAP == nil {
		return Verdict{}, errNoICAP
	}
	in := e.ICAP(rules)
	if in == nil {
		return Verdict{}, errNoICAP
	}
	return in.Inspect(ctx, r)
}

var errNoICAP = &FieldError{Path: "icap", Msg: "no ICAP client"}

func closeQuiet(c io.Closer) {
	if c != nil {
		c.Close()
	}
}

// hold reads up to max bytes of body (and one more, to know whether there
// is more). rest reads what follows.
func hold(body io.ReadCloser, max int64, h http.Header, contentLength int64) (*Body, io.Reader, error) {
	codings, ok := contentCodings(h.Values("Content-Encoding"))
	media, boundary := mediaOf(h.Get("Content-Type"))
	b := &Body{codings: codings, codingOK: ok, media: media, boundary: boundary, max: max, complete: true}
	if body == nil || body == http.NoBody {
		return b, nil, nil
	}
	capHint := int64(32 << 10)
	if contentLength >= 0 {
		capHint = min(contentLength+1, max+1)
	}
	buf := bytes.NewBuffer(make([]byte, 0, capHint))
	n, err := io.CopyN(buf, body, max+1)
	if err != nil && err != io.EOF {
		return b, nil, err
	}
	b.raw = buf.Bytes()
	b.complete = n <= max
	return b, body, nil
}

// heldBody forwards the held bytes (and the rest, unscanned) and closes
// the client's body.
type heldBody struct {
	r io.Reader
	c io.Closer
}

func (h *heldBody) Read(p []byte) (int, error) { return h.r.Read(p) }
func (h *heldBody) Close() error               { return h.c.Close() }

// scanRequest runs the built-in detectors over the request target, the
// headers and the decoded body.
func scanRequest(m *Matcher, r *Request) []Finding {
	var out []Finding
	s := m.NewStream(PartURL, "")
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
	if r.Body != nil && r.Body.Len() > 0 {
		s.Reset(PartBody, "")
		d := r.Body.Decoded()
		buf := scanBufs.Get().(*[]byte)
		for {
			n, err := d.Read(*buf)
			s.Write((*buf)[:n])
			if err != nil {
				break
			}
		}
		scanBufs.Put(buf)
		s.Close()
		out = append(out, s.found...)
	}
	// The log lists findings in request order: target, headers, body.
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.Part != b.Part {
			return partOrder[a.Part] - partOrder[b.Part]
		}
		return cmp.Compare(a.Offset, b.Offset)
	})
	return out
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
