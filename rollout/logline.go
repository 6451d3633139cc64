package rollout

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/egressd/egressd/proxy/accesslog"
)

// Line is the part of one access-log line that learn and replay read. Its
// byte slices point into the parsed line (or, for strings with escapes,
// into memory of their own) and are valid until the next Parse.
type Line struct {
	TS       []byte
	Listener []byte
	Client   []byte
	User     []byte
	Group    []byte
	Host     []byte
	Port     int // -1 when absent or not an integer in 0..65535
	IP       []byte
	Decision []byte
	Rule     []byte
	Reason   []byte
	Event    []byte // "open" on a tunnel's line at its start (log.tunnel_open)
}

var (
	errNotObject = errors.New("not a JSON object")
	errSyntax    = errors.New("malformed JSON")
	errTooDeep   = errors.New("JSON nested too deeply")
)

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

// Parse reads one JSON object (trailing whitespace allowed) into l. Only the
// contract keys learn and replay use are kept; other keys are checked and
// skipped. Strings are unescaped as encoding/json does (invalid UTF-8 and
// lone surrogates become U+FFFD); a key given twice keeps its last value.
// It does not allocate for strings without escapes or non-ASCII bytes.
func (l *Line) Parse(b []byte) error {
	*l = Line{Port: -1}
	p := parser{b: b}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return errNotObject
	}
	p.i++
	p.ws()
	if p.peek() == '}' {
		p.i++
		return p.end()
	}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return errSyntax
		}
		p.ws()
		if p.peek() != ':' {
			return errSyntax
		}
		p.i++
		p.ws()
		var dst *[]byte
		switch string(key) {
		case accesslog.KeyTS:
			dst = &l.TS
		case accesslog.KeyListener:
			dst = &l.Listener
		case accesslog.KeyClient:
			dst = &l.Client
		case accesslog.KeyUser:
			dst = &l.User
		case accesslog.KeyGroup:
			dst = &l.Group
		case accesslog.KeyHost:
			dst = &l.Host
		case accesslog.KeyIP:
			dst = &l.IP
		case accesslog.KeyDecision:
			dst = &l.Decision
		case accesslog.KeyRule:
			dst = &l.Rule
		case accesslog.KeyReason:
			dst = &l.Reason
		case accesslog.KeyEvent:
			dst = &l.Event
		}
		switch {
		case string(key) == accesslog.KeyPort:
			start := p.i
			if !p.value(0) {
				return p.err()
			}
			l.Port = portValue(p.b[start:p.i])
		case dst != nil && p.peek() == '"':
			s, ok := p.str()
			if !ok {
				return errSyntax
			}
			*dst = s
		default:
			if dst != nil {
				*dst = nil // a contract key with a value that is not a string
			}
			if !p.value(0) {
				return p.err()
			}
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return p.end()
		default:
			return errSyntax
		}
	}
}

// portValue returns a JSON number's value when it is an integer 0..65535
// (443, 4.43e2 and -0 alike, as encoding/json reads them), else -1.
func portValue(n []byte) int {
	v := 0
	for i, c := range n {
		if c < '0' || c > '9' || i == 5 {
			return slowPortValue(n)
		}
		v = v*10 + int(c-'0')
	}
	if len(n) == 0 || v > 65535 {
		return -1
	}
	return v
}

func slowPortValue(n []byte) int {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f < 0 || f > 65535 || f != math.Trunc(f) {
		return -1
	}
	return int(f)
}

type parser struct {
	b        []byte
	i        int
	depthErr bool
}

func (p *parser) err() error {
	if p.depthErr {
		return errTooDeep
	}
	return errSyntax
}

func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) end() error {
	p.ws()
	if p.i != len(p.b) {
		return errSyntax
	}
	return nil
}

// str reads a JSON string at p.i and returns its value.
func (p *parser) str() ([]byte, bool) {
	if p.peek() != '"' {
		return nil, false
	}
	p.i++
	start := p.i
	for p.i < len(p.b) && plainByte[p.b[p.i]] {
		p.i++
	}
	switch c := p.peek(); {
	case p.i >= len(p.b) || c < 0x20:
		return nil, false
	case c == '"':
		s := p.b[start:p.i]
		p.i++
		return s, true
	default: // a backslash or a non-ASCII byte
		return p.slowStr(start)
	}
}

// plainByte marks the bytes a string can hold as they are: printable ASCII
// but the quote and the backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// slowStr decodes a string with escapes or non-ASCII bytes into new memory.
func (p *parser) slowStr(start int) ([]byte, bool) {
	out := make([]byte, 0, p.i-start+16)
	out = append(out, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return nil, false
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return nil, false
				}
				if utf16.IsSurrogate(r) {
					// A high surrogate followed by an escaped low one is one
					// rune; anything else is U+FFFD, as in encoding/json.
					r2 := rune(-1)
					if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
						save := p.i
						p.i += 2
						var ok2 bool
						if r2, ok2 = p.hex4(); !ok2 {
							return nil, false
						}
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							out = utf8.AppendRune(out, dec)
							continue
						}
						p.i = save
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, false
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, p.b[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
	return nil, false
}

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	p.i += 4
	return r, true
}

// value checks and skips any JSON value at p.i.
func (p *parser) value(depth int) bool {
	switch c := p.peek(); {
	case c == '"':
		_, ok := p.str()
		return ok
	case c == '{' || c == '[':
		if depth+1 > maxDepth {
			p.depthErr = true
			return false
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		p.i++
		p.ws()
		if p.peek() == closing {
			p.i++
			return true
		}
		for {
			p.ws()
			if c == '{' {
				if _, ok := p.str(); !ok {
					return false
				}
				p.ws()
				if p.peek() != ':' {
					return false
				}
				p.i++
				p.ws()
			}
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			switch p.peek() {
			case ',':
				p.i++
			case closing:
				p.i++
				return true
			default:
				return false
			}
		}
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return false
}

func (p *parser) literal(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// number checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *parser) number() bool {
	if p.peek() == '-' {
		p.i++
	}
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case '1' <= c && c <= '9':
		p.digits()
	default:
		return false
	}
	if p.peek() == '.' {
		p.i++
		if p.digits() == 0 {
			return false
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}
