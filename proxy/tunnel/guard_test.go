package tunnel

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/sni/snitest"
)

// helloFor returns a crypto/tls client's ClientHello for serverName (""
// sends no server_name), with ECH when echConfig is set.
func helloFor(serverName string, echConfig []byte) []byte {
	return snitest.Hello(&tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == "",
		MinVersion: tls.VersionTLS13, EncryptedClientHelloConfigList: echConfig})
}

// eofConn is a client that has sent everything already: every read ends.
type eofConn struct{ net.Conn }

func (eofConn) Read([]byte) (int, error)        { return 0, io.EOF }
func (eofConn) SetReadDeadline(time.Time) error { return nil }

// guardPolicy compiles a policy with tls_ports [443].
func guardPolicy(t testing.TB, mode string, requireSNI bool, ech string) *policy.Policy {
	t.Helper()
	p, err := policy.Compile(policy.Config{Mode: mode, RequireSNI: requireSNI, ECH: ech, TLSPorts: []int{443}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// decisions the guard is run with: a tunnel allowed to a name, and one to
// an IP literal (which may go without SNI).
func nameDecision(p *policy.Policy) policy.Decision {
	return policy.Decision{Verdict: policy.Allow, Host: "allowed.test", Port: 443, Policy: p}
}

func ipDecision(p *policy.Policy) policy.Decision {
	return policy.Decision{Verdict: policy.Allow, Host: "192.0.2.1", IsIP: true, Port: 443, Policy: p}
}

// TestCheck: the guard relays a hello that parsed cleanly and satisfies the
// policy, and denies one it could not read with tls_hello_invalid, whatever
// the destination type, require_sni and the mode.
func TestCheck(t *testing.T) {
	t.Parallel()
	good := helloFor("allowed.test", nil)
	noSNI := helloFor("", nil)
	trailingDot := bytes.Replace(good, []byte("allowed.test"), []byte("allowed.tes."), 1)
	nul := bytes.Replace(good, []byte("allowed.test"), []byte("allowed\x00test"), 1)
	huge := []byte{0x16, 3, 1, 0x40, 0, 1, 0x01, 0x11, 0x70, 3, 3} // announces 70,000 bytes
	ech := helloFor("allowed.test", snitest.ECHConfigList(t, "allowed.test"))
	if !bytes.Contains(ech, []byte{0xfe, 0x0d}) {
		t.Fatal("crypto/tls sent no ECH extension")
	}

	enforce := guardPolicy(t, policy.ModeEnforce, true, "")
	report := guardPolicy(t, policy.ModeReport, true, "")
	lax := guardPolicy(t, policy.ModeEnforce, false, "")
	echDeny := guardPolicy(t, policy.ModeEnforce, true, policy.ECHDeny)
	tests := []struct {
		name    string
		dec     policy.Decision
		in      []byte
		ok      bool
		verdict policy.Verdict
		reason  policy.Reason
		sni     string
	}{
		{"matching sni", nameDecision(enforce), good, true, policy.Allow, "", "allowed.test"},
		{"mismatching sni", nameDecision(enforce), helloFor("evil.test", nil), false, policy.Deny, policy.ReasonSNIMismatch, "evil.test"},
		{"no sni to a name", nameDecision(enforce), noSNI, false, policy.Deny, policy.ReasonSNIMissing, ""},
		{"no sni to a name, not required", nameDecision(lax), noSNI, true, policy.Allow, "", ""},
		{"no sni to an ip", ipDecision(enforce), noSNI, true, policy.Allow, "", ""},
		{"trailing dot to an ip", ipDecision(enforce), trailingDot, false, policy.Deny, policy.ReasonTLSHelloInvalid, ""},
		{"trailing dot to a name", nameDecision(lax), trailingDot, false, policy.Deny, policy.ReasonTLSHelloInvalid, ""},
		{"trailing dot in report mode", nameDecision(report), trailingDot, false, policy.Deny, policy.ReasonTLSHelloInvalid, ""},
		{"nul in the name to an ip", ipDecision(enforce), nul, false, policy.Deny, policy.ReasonTLSHelloInvalid, ""},
		{"too large to an ip", ipDecision(lax), huge, false, policy.Deny, policy.ReasonTLSHelloInvalid, ""},
		{"cut short to an ip", ipDecision(lax), noSNI[:len(noSNI)-1], false, policy.Deny, policy.ReasonTLSHelloInvalid, ""},
		{"nothing at all", ipDecision(lax), nil, false, policy.Deny, policy.ReasonSNIMissing, ""},
		{"not tls", ipDecision(enforce), []byte("GET / HTTP/1.1\r\n\r\n"), false, policy.Deny, policy.ReasonProtocolMismatch, ""},
		{"not tls in report mode", ipDecision(report), []byte("GET / HTTP/1.1\r\n\r\n"), true, policy.Report, policy.ReasonProtocolMismatch, ""},
		{"ech allowed", nameDecision(enforce), ech, true, policy.Allow, "", "allowed.test"},
		{"ech refused", nameDecision(echDeny), ech, false, policy.Deny, policy.ReasonECHRefused, "allowed.test"},
		{"not a tls port", policy.Decision{Verdict: policy.Allow, Host: "allowed.test", Port: 22, Policy: enforce}, trailingDot, true, policy.Allow, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &accesslog.Record{Decision: tt.dec}
			r := &Runner{Handshake: time.Minute}
			first, ok := r.GuardSNI(eofConn{}, slices.Clone(tt.in), tt.dec, rec)
			if ok != tt.ok || rec.Decision.Verdict != tt.verdict || rec.FinalReason() != tt.reason || rec.SNI != tt.sni {
				t.Fatalf("ok %v, verdict %v, reason %q, sni %q; want %v, %v, %q, %q",
					ok, rec.Decision.Verdict, rec.FinalReason(), rec.SNI, tt.ok, tt.verdict, tt.reason, tt.sni)
			}
			if ok && !bytes.Equal(first, tt.in) {
				t.Fatalf("relayed %d bytes first, want the %d read", len(first), len(tt.in))
			}
			if !ok && first != nil {
				t.Fatalf("denied, yet %d bytes to relay", len(first))
			}
		})
	}
}

// TestCheckSlowHello: a hello that has not arrived whole when
// timeouts.handshake ends is denied with tls_hello_invalid, for an IP
// destination too, and nothing of it is relayed; the rest, sent later,
// never counts.
func TestCheckSlowHello(t *testing.T) {
	t.Parallel()
	hello := helloFor("denied.test", nil)
	synctest.Test(t, func(t *testing.T) {
		client, server := net.Pipe()
		defer client.Close()
		defer server.Close()
		go client.Write(hello[:3])
		p := guardPolicy(t, policy.ModeEnforce, true, "")
		dec := ipDecision(p)
		rec := &accesslog.Record{Decision: dec}
		r := &Runner{Handshake: 10 * time.Second}
		start := time.Now()
		first, ok := r.GuardSNI(server, nil, dec, rec)
		if ok || first != nil || rec.FinalReason() != policy.ReasonTLSHelloInvalid {
			t.Fatalf("ok %v, %d bytes, reason %q; want a tls_hello_invalid denial", ok, len(first), rec.FinalReason())
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Fatalf("denied after %v, want timeouts.handshake (10s)", d)
		}
	})
}

// tlsView is what crypto/tls's server makes of data: the ClientHelloInfo it
// hands to GetConfigForClient, or nil when it rejects the bytes first.
func tlsView(data []byte) *tls.ClientHelloInfo {
	var seen *tls.ClientHelloInfo
	errSeen := errors.New("hello seen")
	srv := tls.Server(&replayConn{r: bytes.NewReader(data)}, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			seen = chi
			return nil, errSeen
		},
	})
	srv.Handshake()
	return seen
}

// replayConn is a server-side conn that reads data and discards writes.
type replayConn struct {
	net.Conn // nil: any other method panics, which would be a test bug
	r        *bytes.Reader
}

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// FuzzGuardRelaysOnlyWhatTLSReads is the guard's differential test: for any
// first bytes of a tunnel to a TLS port, in enforce mode, under every
// destination type, require_sni and ech setting, when the guard relays
// them, crypto/tls's server parses a ClientHello from them whose SNI (and
// ECH) satisfies the decision the tunnel was allowed by.
func FuzzGuardRelaysOnlyWhatTLSReads(f *testing.F) {
	good := helloFor("allowed.test", nil)
	for _, in := range [][]byte{
		good,
		helloFor("", nil),
		helloFor("192.0.2.1", nil),
		helloFor("evil.test", nil),
		helloFor("allowed.test", snitest.ECHConfigList(f, "allowed.test")),
		bytes.Replace(good, []byte("allowed.test"), []byte("allowed.tes."), 1),
		good[:len(good)/2],
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		for flags := range uint8(8) {
			f.Add(in, flags)
		}
	}
	policies := map[uint8]*policy.Policy{}
	for flags := range uint8(8) {
		ech := policy.ECHAllow
		if flags&4 != 0 {
			ech = policy.ECHDeny
		}
		policies[flags] = guardPolicy(f, policy.ModeEnforce, flags&2 != 0, ech)
	}
	f.Fuzz(func(t *testing.T, data []byte, flags uint8) {
		flags &= 7
		p := policies[flags]
		dec := nameDecision(p)
		if flags&1 != 0 {
			dec = ipDecision(p)
		}
		rec := &accesslog.Record{Decision: dec}
		r := &Runner{Handshake: time.Minute}
		_, ok := r.GuardSNI(eofConn{}, slices.Clone(data), dec, rec)
		if !ok {
			return
		}
		chi := tlsView(data)
		if chi == nil {
			t.Fatalf("the guard relayed %d bytes crypto/tls reads no ClientHello from (sni %q)", len(data), rec.SNI)
		}
		if chi.ServerName != rec.SNI {
			t.Fatalf("the guard read SNI %q, crypto/tls %q", rec.SNI, chi.ServerName)
		}
		hasECH := slices.Contains(chi.Extensions, 0xfe0d)
		if v, reason := p.CheckSNI(dec, chi.ServerName, chi.ServerName != "", hasECH); v != policy.Allow {
			t.Fatalf("the guard relayed a hello crypto/tls reads as SNI %q (ECH %v): %v %s for %s", chi.ServerName, hasECH, v, reason, dec.Host)
		}
	})
}
