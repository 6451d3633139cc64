package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// clientHello returns the bytes a real crypto/tls client sends first.
func clientHello(t testing.TB, serverName string, alpn ...string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: alpn})
		tc.Handshake() // fails when s closes; we only want its first flight
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf bytes.Buffer
	tmp := make([]byte, 4096)
	for {
		n, err := s.Read(tmp)
		buf.Write(tmp[:n])
		if _, perr := Parse(buf.Bytes()); perr != errIncomplete || err != nil {
			break
		}
	}
	return buf.Bytes()
}

// fragment re-frames a single-record ClientHello into records of size n.
func fragment(hello []byte, n int) []byte {
	body := hello[5:]
	var out []byte
	for len(body) > 0 {
		k := min(n, len(body))
		out = append(out, 0x16, 0x03, 0x01, byte(k>>8), byte(k))
		out = append(out, body[:k]...)
		body = body[k:]
	}
	return out
}

func TestParse(t *testing.T) {
	withSNI := clientHello(t, "example.com", "h2", "http/1.1")
	noSNI := clientHello(t, "")
	ipSNI := clientHello(t, "192.0.2.1") // crypto/tls sends no SNI for IPs
	cases := []struct {
		name    string
		in      []byte
		want    Info
		wantErr error
	}{
		{"sni", withSNI, Info{ServerName: "example.com", HasSNI: true}, nil},
		{"no sni", noSNI, Info{}, nil},
		{"ip server name", ipSNI, Info{}, nil},
		{"fragmented 100", fragment(withSNI, 100), Info{ServerName: "example.com", HasSNI: true}, nil},
		{"fragmented 1", fragment(withSNI, 1), Info{ServerName: "example.com", HasSNI: true}, nil},
		{"http", []byte("GET / HTTP/1.1\r\n"), Info{}, ErrNotTLS},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), Info{}, ErrNotTLS},
		{"truncated", withSNI[:40], Info{}, errIncomplete},
		{"empty", nil, Info{}, errIncomplete},
		{"not a hello", []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0}, Info{}, ErrMalformed},
		{"zero length record", []byte{0x16, 3, 1, 0, 0}, Info{}, ErrMalformed},
		{"bad record version", []byte{0x16, 9, 1, 0, 4, 1, 0, 0, 0}, Info{}, ErrNotTLS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPeek(t *testing.T) {
	hello := clientHello(t, "peek.example")
	for _, split := range []int{0, 1, 5, 50, len(hello)} {
		c, s := net.Pipe()
		go func() {
			c.Write(hello[split:])
			c.Write([]byte("after"))
		}()
		got, info, err := Peek(s, hello[:split], 16*1024+5, time.Now().Add(5*time.Second))
		if err != nil || info.ServerName != "peek.example" {
			t.Fatalf("split %d: %+v %v", split, info, err)
		}
		if !bytes.Equal(got, hello) {
			t.Fatalf("split %d: consumed %d bytes, want exactly the hello (%d)", split, len(got), len(hello))
		}
		c.Close()
		s.Close()
	}
}

func TestPeekNotTLSReturnsAtOnce(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go c.Write([]byte("G"))
	// The deadline is far away: Peek must not wait for more bytes.
	done := make(chan error, 1)
	go func() {
		_, _, err := Peek(s, nil, 1024, time.Now().Add(time.Hour))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotTLS) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Peek waited on non-TLS bytes")
	}
}

func TestPeekDeadlineAndLimit(t *testing.T) {
	hello := clientHello(t, "slow.example")
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go c.Write(hello[:20])
	if _, _, err := Peek(s, nil, 16*1024+5, time.Now().Add(50*time.Millisecond)); err == nil {
		t.Fatal("no error for a stalled ClientHello")
	}
	if _, _, err := Peek(s, hello, 10, time.Time{}); !errors.Is(err, ErrTooLarge) && err != nil {
		// The whole hello was given as prefix: it parses regardless of the cap.
		t.Fatalf("prefix: %v", err)
	}
}

func TestDuplicateServerNameRejected(t *testing.T) {
	hello := clientHello(t, "a.example")
	// Rewrite the extension block with the server_name extension twice.
	i := bytes.Index(hello, []byte("a.example"))
	if i < 0 {
		t.Fatal("name not found")
	}
	// The server_name extension starts 9 bytes before the name.
	ext := hello[i-9 : i+len("a.example")]
	if ext[0] != 0 || ext[1] != 0 {
		t.Fatalf("unexpected layout % x", ext[:4])
	}
	forged := forgeExtension(t, hello, ext)
	if _, err := Parse(forged); !errors.Is(err, ErrMalformed) {
		t.Fatalf("duplicate server_name: %v", err)
	}
}

// forgeExtension appends ext once more to the hello's extension list and
// fixes every length on the way out.
func forgeExtension(t *testing.T, hello, ext []byte) []byte {
	body := append([]byte{}, hello[5:]...)
	// handshake header (4) + version (2) + random (32)
	p := 4 + 2 + 32
	p += 1 + int(body[p])                       // session id
	p += 2 + (int(body[p])<<8 | int(body[p+1])) // cipher suites
	p += 1 + int(body[p])                       // compression
	extLen := int(body[p])<<8 | int(body[p+1])
	extLen += len(ext)
	body[p], body[p+1] = byte(extLen>>8), byte(extLen)
	body = append(body, ext...)
	hsLen := len(body) - 4
	body[1], body[2], body[3] = byte(hsLen>>16), byte(hsLen>>8), byte(hsLen)
	return append([]byte{0x16, 3, 1, byte(len(body) >> 8), byte(len(body))}, body...)
}

func FuzzParse(f *testing.F) {
	f.Add(clientHello(f, "example.com"))
	f.Add(clientHello(f, ""))
	f.Add(fragment(clientHello(f, "frag.example"), 7))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data)
		if err == nil && info.HasSNI && info.ServerName == "" {
			t.Fatal("HasSNI with an empty name")
		}
	})
}

// FuzzRoundTrip: whatever name a crypto/tls client sends, Parse reads back.
func FuzzRoundTrip(f *testing.F) {
	f.Add("example.com")
	f.Add("a.b.c.d.example")
	f.Add("xn--bcher-kva.example")
	f.Fuzz(func(t *testing.T, name string) {
		if len(name) > 255 || len(name) == 0 {
			t.Skip()
		}
		hello := clientHello(t, name)
		info, err := Parse(hello)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		// crypto/tls drops trailing dots.
		if info.HasSNI && info.ServerName != strings.TrimRight(name, ".") {
			t.Fatalf("sent %q, parsed %q", name, info.ServerName)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	hello := clientHello(b, "bench.example.com", "h2", "http/1.1")
	b.ReportAllocs()
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		if _, err := Parse(hello); err != nil {
			b.Fatal(err)
		}
	}
}
