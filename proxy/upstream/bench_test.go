package upstream

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkConnect: one tunnel through a parent per iteration (connect,
// CONNECT, the answer read), against a parent on loopback that answers at
// once; the allocations are egressd's side of a chained tunnel beyond a
// direct dial.
func BenchmarkConnect(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(buf)
			io.WriteString(c, established)
			c.Close()
		}
	}()
	d, _ := newDialer(Parent{Name: "corp", Addrs: []string{ln.Addr().String()}, Username: "egress", Password: "s3cret"})
	b.ReportAllocs()
	for b.Loop() {
		c, _, _, err := d.Connect(context.Background(), "corp", "app.partner.example", 443, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	ln.Close()
	<-done
}
