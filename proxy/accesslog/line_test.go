package accesslog

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

// lines parses the JSON lines written so far.
func lines(t *testing.T, out *bytes.Buffer) []map[string]any {
	t.Helper()
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		got = append(got, m)
	}
	return got
}

// With log.tunnel_open, an established tunnel writes an open line, then at
// its end the close line: the same id and fields, the counters as they
// were. Without it, only the close line. Every record gets its own id.
func TestTunnelOpenLine(t *testing.T) {
	var out bytes.Buffer
	l, ws := newTestLogger(&out)
	l.SetTunnelOpen(true)
	a := finishedRecord(l)
	a.Up.Store(0)
	a.Opened()
	a.Up.Store(517)
	a.Finish()
	l.SetTunnelOpen(false)
	b := finishedRecord(l)
	b.Opened()
	b.Finish()
	denied := l.NewRecord(policy.ListenerSOCKS5, netip.MustParseAddr("10.1.2.3"))
	denied.Deny(policy.ReasonNotAllowed)
	denied.Finish()
	if err := ws.Stop(); err != nil {
		t.Fatal(err)
	}
	got := lines(t, &out)
	if len(got) != 4 {
		t.Fatalf("%d lines, want 4 (open and close, close, close): %s", len(got), out.String())
	}
	hexID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	ids := map[any]bool{}
	for i, want := range []struct {
		event string
		up    float64
	}{{EventOpen, 0}, {EventClose, 517}, {EventClose, 517}, {EventClose, 0}} {
		if got[i][KeyEvent] != want.event || got[i][KeyBytesUp] != want.up {
			t.Errorf("line %d: event %v, bytes_up %v; want %s, %v", i, got[i][KeyEvent], got[i][KeyBytesUp], want.event, want.up)
		}
		id, _ := got[i][KeyID].(string)
		if !hexID.MatchString(id) {
			t.Errorf("line %d: id %q, want 16 hex digits", i, id)
		}
		ids[id] = true
	}
	if got[0][KeyID] != got[1][KeyID] || len(ids) != 3 {
		t.Errorf("ids %v %v %v %v: want the open and close lines to share one, the others their own",
			got[0][KeyID], got[1][KeyID], got[2][KeyID], got[3][KeyID])
	}
	// The open line has the same keys as the close line.
	for k := range got[1] {
		if _, ok := got[0][k]; !ok {
			t.Errorf("open line lacks %q", k)
		}
	}
	// A line without a ClientHello has no tls_version and alpn; one without
	// a dial has an empty egress_addr.
	if _, ok := got[3][KeyTLSVersion]; ok {
		t.Errorf("denied line has tls_version: %v", got[3])
	}
	if _, ok := got[3][KeyALPN]; ok {
		t.Errorf("denied line has alpn: %v", got[3])
	}
	if got[3][KeyEgressAddr] != "" || got[3][KeyClientPort] != 0.0 {
		t.Errorf("denied line: egress_addr %v, client_port %v", got[3][KeyEgressAddr], got[3][KeyClientPort])
	}
}

// Forwarded HTTP lines carry method, path and user_agent; an IPv6 egress
// address is bracketed.
func TestForwardedLineFields(t *testing.T) {
	var out bytes.Buffer
	l, ws := newTestLogger(&out)
	r := forwardedRecord(l)
	r.EgressAddr = netip.MustParseAddrPort("[2001:db8::5]:41236")
	r.Finish()
	if err := ws.Stop(); err != nil {
		t.Fatal(err)
	}
	got := lines(t, &out)[0]
	for k, want := range map[string]any{KeyMethod: "GET", KeyPath: "/v1/items", KeyUserAgent: "curl/8.14.1",
		KeyEgressAddr: "[2001:db8::5]:41236", KeyClientPort: 50124.0, KeyEvent: EventClose} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}
