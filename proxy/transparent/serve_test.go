package transparent

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accept"
	"github.com/egressd/egressd/proxy/accesslog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveOne accepts one connection on a loopback listener (not redirected:
// its original destination is the listener itself), sets its limit, and
// serves it with f. It returns the client's side.
func serveOne(t *testing.T, f *FrontEnd, limit string) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := accept.NewConn(sc.(*net.TCPConn))
	c.Limit = limit
	f.Serve(c)
	return client
}

// TestServeRefusals: a connection past a limit, and one whose original
// destination is the listener itself, are closed with an access line
// (limit; bad_request) and nothing decided or dialed (the front end has no
// decider or dialer to reach for).
func TestServeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, limit string
		reason      policy.Reason
	}{
		{"limit", accesslog.LimitMaxConnectionsPerClient, policy.ReasonLimit},
		{"loop", "", policy.ReasonBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, lines := observer.New(zapcore.InfoLevel)
			f := New(Options{Log: accesslog.NewLogger(zap.New(core), nil)})
			client := serveOne(t, f, tc.limit)
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := client.Read(make([]byte, 1)); err == nil {
				t.Errorf("the refused connection got %d bytes", n)
			}
			all := lines.All()
			if len(all) != 1 {
				t.Fatalf("%d access lines, want 1", len(all))
			}
			m := all[0].ContextMap()
			if m["listener"] != "transparent" || m["reason"] != string(tc.reason) || m["decision"] != "deny" {
				t.Errorf("line %v", m)
			}
			if od, _ := m["orig_dst"].(string); od == "" {
				t.Errorf("line without orig_dst: %v", m)
			}
		})
	}
}
