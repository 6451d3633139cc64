package upstream

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzReadHead: whatever a parent sends, in two writes split anywhere,
// readHead returns exactly the head (up to the first empty line), and the
// bytes it read past the head followed by what is left in the socket are
// every later byte, in order: nothing of the tunnel is lost or reordered.
func FuzzReadHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 Connection established\r\n\r\nfirst bytes"), uint16(10))
	f.Add([]byte("HTTP/1.1 200 OK\n\n\x16\x03\x01"), uint16(16))
	f.Add([]byte("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n\r\n"), uint16(40))
	f.Add([]byte("HTTP/1.1 200 OK\r\nVia: 1.1 a\r\n\r"), uint16(30))
	f.Add([]byte("\n\r\n"), uint16(1))
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		if len(data) > 2*maxHead {
			return
		}
		at := int(split) % (len(data) + 1)
		client, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			server.Write(data[:at])
			server.Write(data[at:])
			server.(*net.TCPConn).CloseWrite()
		}()
		c := client.(*net.TCPConn)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var buf [maxHead]byte
		head, early, err := readHead(c, buf[:])
		<-done
		end := headEnd(data)
		switch {
		case err == nil:
			if end != len(head) || !bytes.Equal(head, data[:end]) {
				t.Fatalf("head %q, want the first %d bytes of %q", head, end, data)
			}
			rest, err := io.ReadAll(c)
			if got := append(bytes.Clone(early), rest...); err != nil || !bytes.Equal(got, data[end:]) {
				t.Fatalf("after the head: %q then %q (%v), want %q", early, rest, err, data[end:])
			}
		case end >= 0 && end <= maxHead:
			t.Fatalf("a head of %d bytes was sent: %v", end, err)
		case strings.Contains(err.Error(), "deadline"):
			t.Fatalf("waited for bytes that had all arrived: %v", err)
		}
	})
}

// FuzzParseStatus: never panics, and a status it returns is the three
// digits after "HTTP/1.x ".
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 200 Connection established\r\n", "HTTP/1.0 407\r\n", "HTTP/1.1 99 x", "HTTP/2 200", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		status, err := ParseStatus(head)
		if err != nil {
			return
		}
		if status < 100 || status > 999 || !bytes.HasPrefix(head, []byte("HTTP/1.")) || string(head[9:12]) != strconv.Itoa(status) {
			t.Fatalf("%q: status %d", head, status)
		}
	})
}
