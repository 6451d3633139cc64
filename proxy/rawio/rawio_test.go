package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return c.(*net.TCPConn), r.c.(*net.TCPConn)
}

func TestReadWriteEOF(t *testing.T) {
	a, b := pair(t)
	if n, err := Write(a, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := CloseWrite(a); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return Read(b, p) }))
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello, nil (EOF after CloseWrite)", got, err)
	}
	// The other half still works after CloseWrite.
	if _, err := Write(b, []byte("back")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := Read(a, buf); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

// A write larger than both socket buffers must wait for the reader (the
// EAGAIN path) and still deliver every byte in order.
func TestWriteWaitsForRoom(t *testing.T) {
	a, b := pair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		n, err := Write(a, want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		CloseWrite(a)
		done <- err
	}()
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return Read(b, p) }))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d identical ones", len(got), len(want))
	}
}

func TestReadDeadline(t *testing.T) {
	_, b := pair(t)
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := Read(b, make([]byte, 8))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want deadline exceeded", n, err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %#v is not a read OpError", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	a, _ := pair(t)
	a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	// Nobody reads: the buffers fill and the deadline fires.
	n, err := Write(a, make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n >= 64<<20 {
		t.Fatalf("Write = %d, %v; want a partial write and deadline exceeded", n, err)
	}
}

func TestClosedAndReset(t *testing.T) {
	a, _ := pair(t)
	a.Close()
	if _, err := Read(a, make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on closed conn: %v, want net.ErrClosed", err)
	}
	if _, err := Write(a, []byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on closed conn: %v, want net.ErrClosed", err)
	}
	if err := CloseWrite(a); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("CloseWrite on closed conn: %v, want net.ErrClosed", err)
	}

	// d's peer resets (SO_LINGER 0): reported as such, not as EOF.
	c, d := pair(t)
	c.SetLinger(0)
	c.Close()
	time.Sleep(20 * time.Millisecond)
	_, err := Read(d, make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after reset: %v, want ECONNRESET", err)
	}
}

// Conns that are not sockets use their own methods.
func TestFallback(t *testing.T) {
	x, y := net.Pipe()
	defer x.Close()
	defer y.Close()
	go Write(x, []byte("pipe"))
	buf := make([]byte, 4)
	if n, err := Read(y, buf); err != nil || string(buf[:n]) != "pipe" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
