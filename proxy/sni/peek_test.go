package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// writeChunks writes p in chunks of n bytes, each its own Write, so that a
// net.Pipe reader sees one chunk per Read.
func writeChunks(w io.Writer, p []byte, n int) {
	for len(p) > 0 {
		k := min(n, len(p))
		if _, err := w.Write(p[:k]); err != nil {
			return
		}
		p = p[k:]
	}
}

func TestPeekAcrossPrefixAndReads(t *testing.T) {
	t.Parallel()
	hello := clientHello("peek.example", "h2")
	frag := fragment(hello, 200)
	for _, in := range []struct {
		name  string
		data  []byte
		split int // bytes given as prefix
		chunk int // bytes per write after that
	}{
		{"all read", hello, 0, 4096},
		{"1-byte reads", hello, 0, 1},
		{"prefix 1", hello, 1, 64},
		{"prefix header", hello, 5, 7},
		{"prefix most", hello, len(hello) - 1, 1},
		{"records over reads", frag, 3, 150},
		{"records in prefix", frag, 400, 999},
	} {
		t.Run(in.name, func(t *testing.T) {
			t.Parallel()
			c, s := net.Pipe()
			defer c.Close()
			defer s.Close()
			go writeChunks(c, in.data[in.split:], in.chunk)
			got, info, err := Peek(s, in.data[:in.split], 0, time.Now().Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(Info{ServerName: "peek.example", HasSNI: true, ALPN: []string{"h2"}, Version: tls.VersionTLS13}, info); diff != "" {
				t.Fatal(diff)
			}
			if !bytes.Equal(got, in.data) {
				t.Fatalf("consumed %d bytes, want exactly the hello (%d)", len(got), len(in.data))
			}
		})
	}
}

// TestPeekReturnsEarlyData: bytes that arrive with the hello are returned
// too, so the caller replays them.
func TestPeekReturnsEarlyData(t *testing.T) {
	t.Parallel()
	hello := clientHello("early.example")
	want := append(append([]byte{}, hello...), "early data"...)
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go c.Write(want)
	got, info, err := Peek(s, nil, 0, time.Now().Add(time.Minute))
	if err != nil || info.ServerName != "early.example" {
		t.Fatalf("%+v %v", info, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
}

// TestPeekLargeHelloOverTCP: a 20 KiB hello in two records, sent in small
// segments over a real socket.
func TestPeekLargeHelloOverTCP(t *testing.T) {
	t.Parallel()
	hello := withExtension(t, clientHello("large.example"), append([]byte{0xff, 0xaa, 0x48, 0x00}, make([]byte, 0x4800)...))
	data := fragment(hello, MaxRecordLen)
	ln, err := net.Listen("tcp", "127.0.0.77:0") // not 127.0.0.1: load tests on shared machines exhaust its ports
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		writeChunks(c, data, 1000)
		done <- nil
	}()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, info, err := Peek(s, nil, 0, time.Now().Add(time.Minute))
	if err != nil || info.ServerName != "large.example" {
		t.Fatalf("%+v %v", info, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, want %d", len(got), len(data))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPeekPrefixAlone(t *testing.T) {
	t.Parallel()
	hello := clientHello("prefix.example")
	// A nil conn: Peek must not touch it when the prefix decides.
	got, info, err := Peek(nil, hello, 0, time.Time{})
	if err != nil || info.ServerName != "prefix.example" || !bytes.Equal(got, hello) {
		t.Fatalf("%+v %v", info, err)
	}
	if _, _, err := Peek(nil, []byte("CONNECT"), 0, time.Time{}); !errors.Is(err, ErrNotTLS) {
		t.Fatalf("non-TLS prefix: %v", err)
	}
	if _, _, err := Peek(nil, hello[:100], 50, time.Time{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("prefix over the limit: %v", err)
	}
}

// TestPeekNotTLSAtOnce: one non-TLS byte ends the peek without waiting for
// more (fake time would jump to the deadline if Peek waited).
func TestPeekNotTLSAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		go c.Write([]byte("G"))
		start := time.Now()
		got, _, err := Peek(s, nil, 0, start.Add(time.Hour))
		if !errors.Is(err, ErrNotTLS) || string(got) != "G" {
			t.Fatalf("%q %v", got, err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("waited %v", waited)
		}
	})
}

// TestPeekDeadline: a stalled hello ends at the deadline with the bytes
// read so far, and the read deadline is cleared afterwards.
func TestPeekDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hello := clientHello("slow.example")
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		go c.Write(hello[:20])
		start := time.Now()
		got, _, err := Peek(s, nil, 0, start.Add(2*time.Second))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err %v", err)
		}
		if !bytes.Equal(got, hello[:20]) {
			t.Fatalf("got %d bytes", len(got))
		}
		if waited := time.Since(start); waited != 2*time.Second {
			t.Fatalf("waited %v", waited)
		}
		// Cleared: a read long after the old deadline still succeeds.
		go func() {
			time.Sleep(time.Minute)
			c.Write([]byte("x"))
		}()
		var b [1]byte
		if _, err := s.Read(b[:]); err != nil {
			t.Fatalf("deadline not cleared: %v", err)
		}
	})
}

func TestPeekEOF(t *testing.T) {
	t.Parallel()
	hello := clientHello("eof.example")
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		c.Write(hello[:30])
		c.Close()
	}()
	got, _, err := Peek(s, nil, 0, time.Now().Add(time.Minute))
	if !errors.Is(err, io.EOF) || len(got) != 30 {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}

func TestPeekLimit(t *testing.T) {
	t.Parallel()
	hello := clientHello("limit.example")
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go writeChunks(c, hello, 7)
	got, _, err := Peek(s, nil, 100, time.Now().Add(time.Minute))
	if !errors.Is(err, ErrTooLarge) || len(got) > 100 {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}

func TestPeekMalformed(t *testing.T) {
	t.Parallel()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go c.Write([]byte{0x16, 3, 1, 0, 0})
	if _, _, err := Peek(s, nil, 0, time.Now().Add(time.Minute)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err %v", err)
	}
}
