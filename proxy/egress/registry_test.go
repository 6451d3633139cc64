package egress

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestRegistry(t *testing.T) {
	var r Registry
	if err := r.Wait(context.Background()); err != nil {
		t.Fatalf("empty registry: %v", err)
	}
	a1, b1 := net.Pipe()
	a2, b2 := net.Pipe()
	id1 := r.Add(a1, b1)
	id2 := r.Add(a2, b2)
	if r.Len() != 2 {
		t.Fatalf("len %d", r.Len())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait with live tunnels: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- r.Wait(context.Background()) }()
	r.Remove(id1)
	r.Remove(id1) // twice: no effect
	select {
	case err := <-waited:
		t.Fatalf("Wait returned with a tunnel live: %v", err)
	default:
	}
	r.CloseAll()
	if _, err := a2.Write([]byte("x")); !errors.Is(err, net.ErrClosed) && err == nil {
		t.Fatal("CloseAll left a conn open")
	}
	r.Remove(id2)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	// After CloseAll, a tunnel still being set up is cut as it is added.
	a3, b3 := net.Pipe()
	id3 := r.Add(a3, b3)
	if _, err := b3.Write([]byte("x")); err == nil {
		t.Fatal("conn added after CloseAll is open")
	}
	r.Remove(id3)
	if r.Len() != 0 {
		t.Fatalf("len %d", r.Len())
	}
}
