// Package icaptest is an in-process ICAP (RFC 3507) server for tests: it
// answers OPTIONS from settable options, reads REQMOD requests (preview,
// 100 Continue, the rest) and answers what a handler says: 204, a
// modified request, a response, or misbehaviour (stall, drop, garbage).
// It records what it saw, so tests can assert on the client's wire
// behaviour (preview sizes, Allow: 204, connection reuse and bounds).
package icaptest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Options is what the server answers to OPTIONS.
type Options struct {
	ISTag          string // default "T1"
	Methods        string // default "REQMOD"
	Preview        int    // bytes of preview wanted; -1: no Preview header
	Allow204       bool
	MaxConnections int // 0: no Max-Connections header
	TTL            int // Options-TTL in seconds; 0: no header
}

// Request is one ICAP request the server read.
type Request struct {
	Method string // OPTIONS or REQMOD
	Header textproto.MIMEHeader
	// HTTP is the encapsulated request head (REQMOD).
	HTTP *http.Request
	// Body is the encapsulated body read so far: the preview, then the
	// rest when the server asked for it.
	Body []byte
	// Preview is the preview's length, -1 without a preview; IEOF
	// reports whether the preview ended the body.
	Preview int
	IEOF    bool
	Conn    int // the connection it came on (1 is the first accepted)
}

// Answer is what the handler wants sent back.
type Answer struct {
	// NoContent: 204, forward unmodified.
	NoContent bool
	// Request (with RequestBody): 200 with this modified request.
	Request     *http.Request
	RequestBody []byte
	// Response (with ResponseBody): 200 with this HTTP response.
	Response     *http.Response
	ResponseBody []byte
	// Status: an ICAP error status (e.g. 500) with no encapsulated message.
	Status int
	// Raw is written as is instead of a response.
	Raw []byte
	// Stall answers nothing and holds the connection until the client
	// closes it or the server shuts down.
	Stall bool
	// Drop closes the connection without an answer.
	Drop bool
	// Close sends "Connection: close" and closes after the answer.
	Close bool
	// Hangup closes after the answer without saying so, as a service
	// whose keep-alive timer ran out does.
	Hangup bool
	// ISTag overrides the options' ISTag on this answer.
	ISTag string
}

// Handler decides on one REQMOD request.
type Handler func(*Request) Answer

// Server is a running test ICAP server.
type Server struct {
	// Addr is host:port; URL is icap://Addr/reqmod.
	Addr, URL string
	// DecideOnPreview calls the handler after the preview (Body holds
	// the preview only) instead of asking for the rest first.
	DecideOnPreview bool

	ln      net.Listener
	handler Handler
	mu      sync.Mutex
	opts    Options
	reqs    []*Request
	conns   map[net.Conn]bool
	accepts int
	active  int
	peak    int
	options int
	closing bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

// New serves on 127.0.0.1 until the test ends.
func New(t testing.TB, opts Options, h Handler) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("icaptest: listen: %v", err)
	}
	return Serve(t, ln, opts, h)
}

// Serve serves on ln until the test ends.
func Serve(t testing.TB, ln net.Listener, opts Options, h Handler) *Server {
	s := &Server{Addr: ln.Addr().String(), ln: ln, handler: h, opts: opts, conns: map[net.Conn]bool{}, stop: make(chan struct{})}
	s.URL = "icap://" + s.Addr + "/reqmod"
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	close(s.stop)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// SetOptions changes what later OPTIONS (and answers' ISTag) say.
func (s *Server) SetOptions(o Options) {
	s.mu.Lock()
	s.opts = o
	s.mu.Unlock()
}

// Requests returns the REQMOD requests read so far.
func (s *Server) Requests() []*Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Request(nil), s.reqs...)
}

// OptionsCount is the number of OPTIONS requests answered.
func (s *Server) OptionsCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.options
}

// Accepted is the number of connections accepted; Peak the most open at
// once.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepts
}

// Peak is the most connections open at once.
func (s *Server) Peak() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.accepts++
		s.active++
		s.peak = max(s.peak, s.active)
		s.conns[c] = true
		id := s.accepts
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c, id)
			c.Close()
			s.mu.Lock()
			s.active--
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) serve(c net.Conn, id int) {
	br := bufio.NewReader(c)
	for {
		req, err := readRequest(br)
		if err != nil {
			return
		}
		req.Conn = id
		s.mu.Lock()
		opts := s.opts
		if req.Method == "OPTIONS" {
			s.options++
		}
		s.mu.Unlock()
		if req.Method == "OPTIONS" {
			if _, err := c.Write(optionsResponse(opts)); err != nil {
				return
			}
			continue
		}
		if req.Preview >= 0 && !req.IEOF && !s.DecideOnPreview {
			if _, err := io.WriteString(c, "ICAP/1.0 100 Continue\r\n\r\n"); err != nil {
				return
			}
			rest, err := readChunks(br)
			if err != nil {
				return
			}
			req.Body = append(req.Body, rest...)
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, req)
		s.mu.Unlock()
		a := s.handler(req)
		switch {
		case a.Stall:
			// Hold until the client gives up or the server stops.
			done := make(chan struct{})
			go func() {
				io.Copy(io.Discard, c)
				close(done)
			}()
			select {
			case <-done:
			case <-s.stop:
				c.Close()
				<-done
			}
			return
		case a.Drop:
			return
		case a.Raw != nil:
			c.Write(a.Raw)
			return
		}
		if a.ISTag == "" {
			a.ISTag = opts.ISTag
		}
		if _, err := c.Write(answerBytes(a)); err != nil || a.Close || a.Hangup {
			return
		}
		if req.Preview >= 0 && !req.IEOF && s.DecideOnPreview {
			// Answered on the preview: the client sends nothing more.
			continue
		}
	}
}

func optionsResponse(o Options) []byte {
	var b bytes.Buffer
	b.WriteString("ICAP/1.0 200 OK\r\n")
	methods := o.Methods
	if methods == "" {
		methods = "REQMOD"
	}
	fmt.Fprintf(&b, "Methods: %s\r\nService: egressd icaptest\r\nISTag: %q\r\n", methods, istag(o.ISTag))
	if o.Preview >= 0 {
		fmt.Fprintf(&b, "Preview: %d\r\n", o.Preview)
	}
	if o.Allow204 {
		b.WriteString("Allow: 204\r\n")
	}
	if o.MaxConnections > 0 {
		fmt.Fprintf(&b, "Max-Connections: %d\r\n", o.MaxConnections)
	}
	if o.TTL > 0 {
		fmt.Fprintf(&b, "Options-TTL: %d\r\n", o.TTL)
	}
	b.WriteString("Encapsulated: null-body=0\r\n\r\n")
	return b.Bytes()
}

func istag(t string) string {
	if t == "" {
		return "T1"
	}
	return t
}

// answerBytes renders an answer as an ICAP response.
func answerBytes(a Answer) []byte {
	var b bytes.Buffer
	hdr := func(status int, text string) {
		fmt.Fprintf(&b, "ICAP/1.0 %d %s\r\nISTag: %q\r\n", status, text, istag(a.ISTag))
		if a.Close {
			b.WriteString("Connection: close\r\n")
		}
	}
	switch {
	case a.Status != 0:
		hdr(a.Status, "Error")
		b.WriteString("\r\n")
	case a.NoContent:
		hdr(204, "No Content")
		b.WriteString("Encapsulated: null-body=0\r\n\r\n")
	case a.Request != nil:
		var h bytes.Buffer
		fmt.Fprintf(&h, "%s %s HTTP/1.1\r\nHost: %s\r\n", a.Request.Method, a.Request.URL.String(), a.Request.URL.Host)
		a.Request.Header.WriteSubset(&h, map[string]bool{"Host": true})
		h.WriteString("\r\n")
		hdr(200, "OK")
		writeEncapsulated(&b, "req", h.Bytes(), a.RequestBody)
	case a.Response != nil:
		var h bytes.Buffer
		fmt.Fprintf(&h, "HTTP/1.1 %d %s\r\n", a.Response.StatusCode, http.StatusText(a.Response.StatusCode))
		a.Response.Header.Write(&h)
		h.WriteString("\r\n")
		hdr(200, "OK")
		writeEncapsulated(&b, "res", h.Bytes(), a.ResponseBody)
	default:
		hdr(204, "No Content")
		b.WriteString("Encapsulated: null-body=0\r\n\r\n")
	}
	return b.Bytes()
}

func writeEncapsulated(b *bytes.Buffer, kind string, head, body []byte) {
	if body == nil {
		fmt.Fprintf(b, "Encapsulated: %s-hdr=0, null-body=%d\r\n\r\n", kind, len(head))
		b.Write(head)
		return
	}
	fmt.Fprintf(b, "Encapsulated: %s-hdr=0, %s-body=%d\r\n\r\n", kind, kind, len(head))
	b.Write(head)
	b.Write(Chunked(body, 1000))
}

// Chunked encodes body in chunks of at most size bytes, with the last
// chunk and an empty trailer.
func Chunked(body []byte, size int) []byte {
	var b bytes.Buffer
	for len(body) > 0 {
		n := min(size, len(body))
		fmt.Fprintf(&b, "%x\r\n", n)
		b.Write(body[:n])
		b.WriteString("\r\n")
		body = body[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

var errBad = errors.New("icaptest: bad request")

// readRequest reads an ICAP request: its head, the encapsulated HTTP
// head, and the body or preview.
func readRequest(br *bufio.Reader) (*Request, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return nil, err
	}
	method, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasSuffix(rest, " ICAP/1.0") {
		return nil, errBad
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	req := &Request{Method: method, Header: hdr, Preview: -1}
	if method == "OPTIONS" {
		return req, nil
	}
	if method != "REQMOD" {
		return nil, errBad
	}
	var hdrLen int
	hasBody := false
	for part := range strings.SplitSeq(hdr.Get("Encapsulated"), ",") {
		name, off, _ := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(off)
		if err != nil {
			return nil, errBad
		}
		switch name {
		case "req-body":
			hdrLen, hasBody = n, true
		case "null-body":
			hdrLen = n
		}
	}
	head := make([]byte, hdrLen)
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, err
	}
	if req.HTTP, err = http.ReadRequest(bufio.NewReader(bytes.NewReader(head))); err != nil {
		return nil, err
	}
	if !hasBody {
		return req, nil
	}
	if p := hdr.Get("Preview"); p != "" {
		req.Preview, _ = strconv.Atoi(p)
	}
	body, ieof, err := readChunksIEOF(br)
	if err != nil {
		return nil, err
	}
	req.Body, req.IEOF = body, ieof
	return req, nil
}

func readChunks(br *bufio.Reader) ([]byte, error) {
	b, _, err := readChunksIEOF(br)
	return b, err
}

func readChunksIEOF(br *bufio.Reader) ([]byte, bool, error) {
	tp := textproto.NewReader(br)
	var body []byte
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return nil, false, err
		}
		size, ext, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 32)
		if err != nil {
			return nil, false, errBad
		}
		if n == 0 {
			if _, err := tp.ReadLine(); err != nil {
				return nil, false, err
			}
			return body, strings.TrimSpace(ext) == "ieof", nil
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return nil, false, err
		}
		body = append(body, chunk[:n]...)
	}
}
