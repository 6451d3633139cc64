package rollout

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/egressd/egressd/proxy/accesslog"
)

// maxLine bounds one log line; longer lines are not egressd's and are
// skipped (counted in Counts.Malformed).
const maxLine = 256 << 10

// Counts says what a pass over the logs read.
type Counts struct {
	Lines     int64 // lines read, every kind
	Access    int64 // access lines used
	Malformed int64 // not a JSON object, or too long
	Other     int64 // JSON, but not an access line (no host or decision), or a tunnel's open line
	Old       int64 // before --since, or without a readable ts when --since is set
	Files     int
}

// Source is one log to read: a path, or "-" for Stdin.
type Source struct {
	Path  string
	Stdin io.Reader // read when Path is "-"
}

// Progress reports how far a pass got; nil reports nothing.
type Progress func(c Counts, file string, done bool)

// scan reads every source in turn, plain or gzip (by its magic bytes), and
// calls fn for each line that parses as an access line. The *Line is reused.
func scan(sources []Source, progress Progress, fn func(*Line), c *Counts) error {
	var l Line
	lastReport := time.Now()
	br := bufio.NewReaderSize(nil, 1<<20)
	var long []byte
	for _, src := range sources {
		name := src.Path
		var r io.Reader
		var closer io.Closer
		if src.Path == "-" {
			name, r = "stdin", src.Stdin
			if r == nil {
				return errors.New("-: no standard input")
			}
		} else {
			f, err := os.Open(src.Path)
			if err != nil {
				return err
			}
			r, closer = f, f
		}
		br.Reset(r)
		if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
			zr, err := gzip.NewReader(br)
			if err != nil {
				closeQuietly(closer)
				return fmt.Errorf("%s: %w", name, err)
			}
			zr.Multistream(true)
			br2 := bufio.NewReaderSize(zr, 1<<20)
			err = scanLines(br2, &l, &long, c, fn, func() {
				if progress != nil && c.Lines&0xffff == 0 && time.Since(lastReport) > 250*time.Millisecond {
					lastReport = time.Now()
					progress(*c, name, false)
				}
			})
			closeQuietly(closer)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		} else {
			err := scanLines(br, &l, &long, c, fn, func() {
				if progress != nil && c.Lines&0xffff == 0 && time.Since(lastReport) > 250*time.Millisecond {
					lastReport = time.Now()
					progress(*c, name, false)
				}
			})
			closeQuietly(closer)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		c.Files++
	}
	if progress != nil {
		progress(*c, "", true)
	}
	return nil
}

func closeQuietly(c io.Closer) {
	if c != nil {
		c.Close()
	}
}

func scanLines(br *bufio.Reader, l *Line, long *[]byte, c *Counts, fn func(*Line), tick func()) error {
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it, up to maxLine.
			*long = append((*long)[:0], b...)
			for errors.Is(err, bufio.ErrBufferFull) {
				b, err = br.ReadSlice('\n')
				if len(*long) < maxLine {
					*long = append(*long, b...)
				}
			}
			b = *long
			if len(b) >= maxLine {
				c.Lines++
				c.Malformed++
				if err != nil {
					return eofOK(err)
				}
				continue
			}
		}
		if len(b) > 0 {
			c.Lines++
			tick()
			if perr := l.Parse(b); perr != nil {
				if len(bytes.TrimSpace(b)) > 0 {
					c.Malformed++
				} else {
					c.Lines--
				}
			} else if len(l.Host) == 0 || !knownDecision(l.Decision) || string(l.Event) == accesslog.EventOpen {
				// An open line (log.tunnel_open) is followed by its
				// tunnel's close line, which is the one that counts.
				c.Other++
			} else {
				fn(l)
			}
		}
		if err != nil {
			return eofOK(err)
		}
	}
}

func eofOK(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func knownDecision(d []byte) bool {
	switch string(d) {
	case "allow", "deny", "report":
		return true
	}
	return false
}
