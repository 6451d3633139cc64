package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

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

var errSeen = errors.New("hello seen")

// tlsView is what crypto/tls's server makes of data: the ClientHelloInfo
// it hands to GetConfigForClient, or nil when it rejects the bytes first.
func tlsView(data []byte) *tls.ClientHelloInfo {
	var seen *tls.ClientHelloInfo
	srv := tls.Server(&replayConn{r: bytes.NewReader(data)}, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			seen = chi
			return nil, errSeen
		},
	})
	srv.Handshake()
	return seen
}

// stricter reports whether data breaks one of the rules Parse applies on
// top of crypto/tls (see Parse's doc): size, type and version of every
// record up to the end of the hello, and a printable ASCII name.
func stricter(data []byte, name string) bool {
	for _, c := range []byte(name) {
		if c < 0x21 || c > 0x7e {
			return true
		}
	}
	var msg []byte
	for len(data) >= recordHeaderLen {
		if len(msg) >= handshakeHeaderLen && len(msg) >= handshakeHeaderLen+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
			return false
		}
		n := int(data[3])<<8 | int(data[4])
		if data[0] != recordTypeHandshake || data[1] != 3 || n == 0 || n > MaxRecordLen {
			return true
		}
		if len(data) < recordHeaderLen+n {
			return false
		}
		msg = append(msg, data[recordHeaderLen:recordHeaderLen+n]...)
		data = data[recordHeaderLen+n:]
	}
	return false
}

// checkInvariants holds for any input.
func checkInvariants(t *testing.T, data []byte, info Info, err error) {
	t.Helper()
	var inc *IncompleteError
	switch {
	case err == nil:
		if info.HasSNI != (info.ServerName != "") {
			t.Fatalf("HasSNI %v with name %q", info.HasSNI, info.ServerName)
		}
		if strings.HasSuffix(info.ServerName, ".") {
			t.Fatalf("trailing dot in %q", info.ServerName)
		}
		for _, p := range info.ALPN {
			if p == "" {
				t.Fatal("empty ALPN protocol")
			}
		}
	case errors.As(err, &inc):
		if inc.Need < 1 {
			t.Fatalf("need %d", inc.Need)
		}
	case errors.Is(err, ErrNotTLS), errors.Is(err, ErrMalformed), errors.Is(err, ErrTooLarge):
		if info.HasSNI || info.ServerName != "" || info.ALPN != nil || info.ECH {
			t.Fatalf("error %v with info %+v", err, info)
		}
	default:
		t.Fatalf("unexpected error %v", err)
	}
}

// tlsMaxVersion is the highest supported_versions entry crypto/tls's server
// reads in the hello, GREASE values left out. Without such an entry
// crypto/tls derives its list from legacy_version, which Parse reports as
// sent: then Parse's own answer is taken (TestParse checks that case).
func tlsMaxVersion(chi *tls.ClientHelloInfo, parsed uint16) uint16 {
	if !slices.Contains(chi.Extensions, extSupportedVersions) {
		return parsed
	}
	var best uint16
	for _, v := range chi.SupportedVersions {
		if v&0x0f0f != 0x0a0a && v > best {
			best = v
		}
	}
	if best == 0 {
		return parsed
	}
	return best
}

// compareWithTLS: whenever Parse accepts a hello, crypto/tls's server
// accepts it too and reads the same name and ALPN list; whenever crypto/tls
// accepts one (and none of Parse's documented stricter rules apply), so
// does Parse.
func compareWithTLS(t *testing.T, data []byte, info Info, err error) {
	t.Helper()
	chi := tlsView(data)
	if err == nil && chi == nil {
		t.Fatalf("Parse read %+v from a hello crypto/tls rejects", info)
	}
	if chi == nil || stricter(data, chi.ServerName) {
		return
	}
	if err != nil {
		t.Fatalf("crypto/tls read name %q, Parse failed: %v", chi.ServerName, err)
	}
	want := Info{ServerName: chi.ServerName, HasSNI: chi.ServerName != "", ECH: info.ECH, ALPN: chi.SupportedProtos, Version: tlsMaxVersion(chi, info.Version)}
	if diff := cmp.Diff(want, info, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("Parse vs crypto/tls (-tls +Parse):\n%s", diff)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(clientHello("example.com", "h2", "http/1.1"))
	f.Add(clientHello(""))
	f.Add(fragment(clientHello("frag.example"), 7))
	f.Add(bareHello(sniExt(0, "a.example", 1, "b")))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data)
		checkInvariants(t, data, info, err)
		compareWithTLS(t, data, info, err)
		// Parse must not depend on bytes after a complete hello.
		if err == nil {
			info2, err2 := Parse(append(append([]byte{}, data...), 0xff, 0, 0))
			if err2 != nil || !cmp.Equal(info, info2) {
				t.Fatalf("trailing bytes changed the result: %+v %v", info2, err2)
			}
		}
	})
}

// FuzzRoundTrip: whatever name and ALPN a crypto/tls client sends, Parse
// reads back what crypto/tls's server reads, whole and fragmented.
func FuzzRoundTrip(f *testing.F) {
	f.Add("example.com", "h2", uint16(100))
	f.Add("a.b.c.d.example", "", uint16(1))
	f.Add("xn--bcher-kva.example", "http/1.1", uint16(16384))
	f.Add("192.0.2.1", "", uint16(0))
	f.Fuzz(func(t *testing.T, name, alpn string, fragSize uint16) {
		if len(name) > 255 || len(alpn) > 255 {
			t.Skip()
		}
		var protos []string
		if alpn != "" {
			protos = []string{alpn}
		}
		hello := clientHello(name, protos...)
		if len(hello) == 0 {
			t.Skip() // crypto/tls refused the config
		}
		info, err := Parse(hello)
		checkInvariants(t, hello, info, err)
		compareWithTLS(t, hello, info, err)
		if err == nil && info.HasSNI {
			// crypto/tls strips trailing dots (hostnameInSNI).
			if want := strings.TrimRight(name, "."); info.ServerName != want {
				t.Fatalf("sent %q, parsed %q", name, info.ServerName)
			}
		}
		if fragSize > 0 {
			finfo, ferr := Parse(fragment(hello, int(min(fragSize, MaxRecordLen))))
			if (err == nil) != (ferr == nil) || !cmp.Equal(info, finfo) {
				t.Fatalf("fragmented: %+v %v, whole: %+v %v", finfo, ferr, info, err)
			}
		}
	})
}

// TestSeedCorpusPresent keeps the committed seed corpus from vanishing.
func TestSeedCorpusPresent(t *testing.T) {
	for _, dir := range []string{"testdata/fuzz/FuzzParse", "testdata/fuzz/FuzzRoundTrip"} {
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) == 0 {
			t.Fatalf("%s: %d entries, %v", dir, len(ents), err)
		}
	}
}
