package dlp

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// tailReader forwards an oversize body under dlp.oversize: stream. The
// decoder runs over the whole body again (it needs the stream from the
// start), the scanner follows it, and raw bytes are released upstream only
// after the decoded output they produced has been scanned: at a finding
// the read fails with ErrCut and the bytes that made it are never sent.
type tailReader struct {
	gate    *gate
	dec     io.Reader
	s       *Stream
	seen    int // findings of the held part, judged already
	enforce bool
	client  io.Closer
	buf     []byte
	out     []byte
	err     error

	mu    sync.Mutex
	found []Finding
	cut   bool
}

// continueTail streams a plain body on from the held part's scanner,
// which stopped at max_scan_bytes with its candidates there still open:
// the held bytes go first (scanned already), then the rest, scanned as it
// comes. The held buffer is not returned to its pool (a Read may still
// copy from it when the transport closes the body); the collector takes it.
func continueTail(b *Body, rest io.Reader, client io.Closer, s *Stream, enforce bool) *tailReader {
	b.pooled = nil
	scanned := b.raw[:b.max:b.max]
	t := &tailReader{s: s, enforce: enforce, client: client, buf: make([]byte, 32<<10), seen: len(s.found)}
	t.gate = &gate{src: bufio.NewReaderSize(io.MultiReader(bytes.NewReader(b.raw[b.max:]), rest), 32<<10)}
	t.dec = t.gate
	t.out = scanned
	return t
}

func newTailReader(b *Body, rest io.Reader, client io.Closer, s *Stream, enforce bool) *tailReader {
	b.pooled = nil
	t := &tailReader{s: s, enforce: enforce, client: client, buf: make([]byte, 32<<10)}
	src := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(b.raw), rest), 32<<10)
	t.gate = &gate{src: src}
	if !b.codingOK {
		t.err = ErrCut
		t.record(Finding{Detector: FindingUndecodable, Part: PartBody})
		return t
	}
	var r io.Reader = t.gate
	for _, c := range b.codings {
		if c == "br" {
			// The brotli reader fills a 32 KiB buffer from its source:
			// feed it small pieces so little raw input runs ahead of
			// its output.
			t.gate.small = true
		}
	}
	if len(b.codings) > 0 {
		d, err := decodeCodings(r, b.codings)
		if err != nil {
			t.err = ErrCut
			t.record(Finding{Detector: FindingUndecodable, Part: PartBody})
			return t
		}
		r = d
	}
	t.dec = r
	return t
}

func (t *tailReader) record(f Finding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.found = append(t.found, f)
	if t.enforce {
		t.cut = true
	}
}

func (t *tailReader) findings() []Finding {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Finding(nil), t.found...)
}

func (t *tailReader) isCut() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cut
}

// check records the scanner's new findings; true when the upload must stop.
func (t *tailReader) check() bool {
	for ; t.seen < len(t.s.found); t.seen++ {
		t.record(t.s.found[t.seen])
	}
	return t.isCut()
}

func (t *tailReader) Read(p []byte) (int, error) {
	for len(t.out) == 0 {
		if t.err != nil {
			return 0, t.err
		}
		n, err := t.dec.Read(t.buf)
		t.s.Write(t.buf[:n])
		if err == io.EOF {
			t.s.Close()
			// Bytes after the end of a compressed stream were not
			// scanned: they must not pass.
			if extra, _ := t.gate.src.Peek(1); len(extra) > 0 {
				t.record(Finding{Detector: FindingUndecodable, Part: PartBody, Offset: t.s.Offset()})
			}
			t.err = io.EOF
		} else if err != nil {
			t.record(Finding{Detector: FindingUndecodable, Part: PartBody, Offset: t.s.Offset()})
		}
		if t.check() {
			t.err = ErrCut
			t.gate.pending = t.gate.pending[:0]
			return 0, ErrCut
		}
		// Scanned: release the raw bytes that produced it.
		t.out, t.gate.pending = t.gate.pending, t.out[:0]
	}
	n := copy(p, t.out)
	t.out = t.out[n:]
	return n, nil
}

func (t *tailReader) Close() error { return t.client.Close() }

// gate records the raw bytes the decoder consumed until they are released.
type gate struct {
	src     *bufio.Reader
	pending []byte
	small   bool
}

func (g *gate) Read(p []byte) (int, error) {
	if g.small && len(p) > 512 {
		p = p[:512]
	}
	n, err := g.src.Read(p)
	g.pending = append(g.pending, p[:n]...)
	return n, err
}

func (g *gate) ReadByte() (byte, error) {
	c, err := g.src.ReadByte()
	if err == nil {
		g.pending = append(g.pending, c)
	}
	return c, err
}
