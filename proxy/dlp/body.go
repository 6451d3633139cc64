package dlp

import (
	"bytes"
	"io"
	"sync"
)

// Body is a request body as the inspectors see it: the first bytes of it,
// held in memory until the verdict (at most max_scan_bytes), and a way to
// read them decoded as a stream. Inspectors must not keep it past Inspect.
type Body struct {
	raw      []byte
	complete bool // raw is the whole body
	codings  []string
	codingOK bool
	media    mediaKind
	boundary string
	max      int64

	once   sync.Once
	status bodyStatus
	// plainness is plain's answer once known: 0 not yet, 1 yes, 2 no (a
	// JSON body is searched for escapes once).
	plainness uint8

	pooled *[]byte // raw's buffer, from pool; nil when allocated for this body
	pool   *sync.Pool
}

// plain reports whether the body needs no decoding: no content coding, no
// form or multipart encoding, and (JSON) no escape.
func (b *Body) plain() bool {
	if b.plainness == 0 {
		b.plainness = 2
		if b.codingOK && len(b.codings) == 0 && (b.media == mediaPlain || b.media == mediaJSON && bytes.IndexByte(b.raw, '\\') < 0) {
			b.plainness = 1
		}
	}
	return b.plainness == 1
}

// release returns the held buffer to its pool. Nothing may read raw after.
func (b *Body) release() {
	if b != nil && b.pooled != nil {
		b.pool.Put(b.pooled)
		b.pooled, b.raw = nil, nil
	}
}

// bodyStatus is what decoding the held bytes showed.
type bodyStatus struct {
	decoded     int64 // decoded bytes read (at most max)
	overflow    bool  // decoding went past max
	bomb        bool
	undecodable bool
}

// Raw returns the held bytes, exactly as they will be forwarded.
func (b *Body) Raw() []byte { return b.raw }

// Complete reports whether Raw is the whole body.
func (b *Body) Complete() bool { return b.complete }

// Len is the number of held bytes.
func (b *Body) Len() int { return len(b.raw) }

// Decoded returns a reader of the held body decoded: content codings
// undone, then form fields percent-decoded or multipart parts taken apart.
// It stops after max_scan_bytes of decoded output. Reading it to the end
// records what decoding showed (see Status); a read error means the body
// could not be decoded.
func (b *Body) Decoded() io.Reader {
	return b.decoder(true)
}

func (b *Body) decoder(record bool) io.Reader {
	src := &countReader{r: bytes.NewReader(b.raw)}
	d := &decodedReader{b: b, src: src, record: record}
	if !b.codingOK {
		d.err, d.st.undecodable = errUndecodable, true
		return d
	}
	r, err := decodeCodings(src, b.codings)
	if err != nil {
		if b.complete || len(b.raw) > 64 {
			d.err, d.st.undecodable = errUndecodable, true
		} else {
			d.err = io.EOF
		}
		return d
	}
	switch b.media {
	case mediaForm:
		r = newFormReader(r)
	case mediaMultipart:
		r = newMultipartReader(r, b.boundary)
	case mediaJSON:
		r = newJSONReader(r)
	}
	d.r = r
	return d
}

// status decodes the held bytes once (unless a full read of Decoded
// already did) and returns what it showed.
func (b *Body) stat() bodyStatus {
	b.once.Do(func() {
		if len(b.raw) == 0 {
			return
		}
		if b.plain() {
			b.status = bodyStatus{decoded: int64(len(b.raw))}
			return
		}
		d := b.decoder(false).(*decodedReader)
		buf := make([]byte, 32<<10)
		for {
			if _, err := d.Read(buf); err != nil {
				break
			}
		}
		b.status = d.result()
	})
	return b.status
}

func (b *Body) setStatus(s bodyStatus) {
	b.once.Do(func() { b.status = s })
}

// oversize reports whether the scan saw less than the whole body.
func (b *Body) oversize() bool {
	return !b.complete || b.stat().overflow
}

type countReader struct {
	r *bytes.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// decodedReader bounds decoded output and classifies decoding failures.
type decodedReader struct {
	b      *Body
	src    *countReader
	r      io.Reader
	n      int64
	err    error
	record bool
	st     bodyStatus
	done   bool
}

func (d *decodedReader) Read(p []byte) (int, error) {
	if d.err != nil {
		d.finish()
		return 0, d.errOut()
	}
	if rem := d.b.max - d.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	if len(p) == 0 {
		// One more byte tells a body of exactly max from a longer one.
		var one [1]byte
		if n, _ := io.ReadFull(d.r, one[:]); n > 0 {
			d.st.overflow = true
			if d.src.n > 0 && d.n/d.src.n >= bombRatio || d.src.n == 0 {
				d.st.bomb = true
			}
		}
		d.err = io.EOF
		d.finish()
		return 0, d.errOut()
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	if err != nil {
		if err == io.EOF || !d.b.complete {
			// A held prefix ends mid-stream: what follows is the
			// oversize policy's business, not a decoding error.
			d.err = io.EOF
		} else {
			d.err = errUndecodable
			d.st.undecodable = true
		}
		if n > 0 {
			return n, nil
		}
		d.finish()
		return 0, d.errOut()
	}
	return n, nil
}

func (d *decodedReader) errOut() error {
	if d.st.undecodable || d.st.bomb {
		return d.err
	}
	return io.EOF
}

func (d *decodedReader) result() bodyStatus {
	st := d.st
	st.decoded = d.n
	if d.err != nil && d.err != io.EOF {
		st.undecodable = st.undecodable || !st.bomb
	}
	return st
}

func (d *decodedReader) finish() {
	if d.done {
		return
	}
	d.done = true
	if d.record {
		d.b.setStatus(d.result())
	}
}
