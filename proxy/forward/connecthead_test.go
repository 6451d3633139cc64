package forward

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestParseConnectHead(t *testing.T) {
	const curl = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n"
	tests := []struct {
		name, in  string
		verdict   headVerdict
		authority string
		auth      string
		hasAuth   bool
	}{
		{name: "curl", in: curl, verdict: headAccepted, authority: "example.com:443"},
		{name: "Go Transport", in: "CONNECT 10.0.0.1:8443 HTTP/1.1\r\nHost: 10.0.0.1:8443\r\nUser-Agent: Go-http-client/1.1\r\n\r\n",
			verdict: headAccepted, authority: "10.0.0.1:8443"},
		{name: "IPv6 literal", in: "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n", verdict: headAccepted, authority: "[2001:db8::1]:443"},
		{name: "credentials", in: "CONNECT a.test:443 HTTP/1.1\r\nproxy-AUTHORIZATION:   Basic dTpw \t\r\n\r\n",
			verdict: headAccepted, authority: "a.test:443", auth: "Basic dTpw", hasAuth: true},
		{name: "pipelined bytes stay out of the head", in: curl + "\x16\x03\x01\x02\x00", verdict: headAccepted, authority: "example.com:443"},

		{name: "empty", in: "", verdict: headIncomplete},
		{name: "method so far", in: "CONN", verdict: headIncomplete},
		{name: "request line so far", in: "CONNECT example.com:4", verdict: headIncomplete},
		{name: "header so far", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: exa", verdict: headIncomplete},
		{name: "CR without its LF yet", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r", verdict: headIncomplete},
		{name: "blank line so far", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n", verdict: headIncomplete},

		{name: "absolute-URI GET", in: "GET http://example.com/ HTTP/1.1\r\n\r\n", verdict: headDeclined},
		{name: "lower-case method", in: "connect example.com:443 HTTP/1.1\r\n\r\n", verdict: headDeclined},
		{name: "HTTP/1.0", in: "CONNECT example.com:443 HTTP/1.0\r\n\r\n", verdict: headDeclined},
		{name: "bare LF", in: "CONNECT example.com:443 HTTP/1.1\n\n", verdict: headDeclined},
		{name: "bare LF in a header", in: "CONNECT example.com:443 HTTP/1.1\r\nA: b\nHost: x\r\n\r\n", verdict: headDeclined},
		{name: "percent-encoded target", in: "CONNECT %65xample.com:443 HTTP/1.1\r\n\r\n", verdict: headDeclined},
		{name: "userinfo", in: "CONNECT u@example.com:443 HTTP/1.1\r\n\r\n", verdict: headDeclined},
		{name: "path target", in: "CONNECT /rpc HTTP/1.1\r\n\r\n", verdict: headDeclined},
		{name: "double space", in: "CONNECT  example.com:443 HTTP/1.1\r\n\r\n", verdict: headDeclined},
		{name: "folded header", in: "CONNECT example.com:443 HTTP/1.1\r\nA: b\r\n c\r\n\r\n", verdict: headDeclined},
		{name: "space before colon", in: "CONNECT example.com:443 HTTP/1.1\r\nHost : x\r\n\r\n", verdict: headDeclined},
		{name: "two Host headers", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", verdict: headDeclined},
		{name: "odd Host", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: a b\r\n\r\n", verdict: headDeclined},
		{name: "two credentials", in: "CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: x\r\nProxy-Authorization: y\r\n\r\n", verdict: headDeclined},
		{name: "a body", in: "CONNECT a:1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", verdict: headDeclined},
		{name: "chunked", in: "CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", verdict: headDeclined},
		{name: "non-ASCII value", in: "CONNECT a:1 HTTP/1.1\r\nX: \xff\r\n\r\n", verdict: headDeclined},
		{name: "control byte", in: "CONNECT a:1 HTTP/1.1\r\nX: \x01\r\n\r\n", verdict: headDeclined},
		{name: "target too long", in: "CONNECT " + strings.Repeat("a", 300) + ":443 HTTP/1.1\r\n\r\n", verdict: headDeclined},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, v := parseConnectHead([]byte(tt.in))
			if v != tt.verdict {
				t.Fatalf("verdict %d, want %d", v, tt.verdict)
			}
			if v != headAccepted {
				return
			}
			if h.authority != tt.authority || h.proxyAuth != tt.auth || h.hasAuth != tt.hasAuth {
				t.Fatalf("got %+v, want authority %q auth %q/%v", h, tt.authority, tt.auth, tt.hasAuth)
			}
			if end := strings.Index(tt.in, "\r\n\r\n") + 4; h.size != end {
				t.Fatalf("size %d, want %d", h.size, end)
			}
		})
	}
}

// FuzzConnectHead checks the fast path's parser against net/http's: every
// head it accepts, http.ReadRequest reads as the same CONNECT (target,
// credentials, length), so answering it without net/http cannot change
// its meaning; and no prefix of an accepted head is declined.
func FuzzConnectHead(f *testing.F) {
	for _, s := range []string{
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n",
		"CONNECT [::1]:443 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\n\x16\x03\x01",
		"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
		"CONNECT %61:1 HTTP/1.1\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\n\tX: y\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, v := parseConnectHead(b)
		if v != headAccepted {
			return
		}
		for i := range h.size {
			if _, pv := parseConnectHead(b[:i]); pv == headDeclined {
				t.Fatalf("prefix %q of an accepted head declined", b[:i])
			}
		}
		br := bufio.NewReader(bytes.NewReader(b))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("accepted %q, net/http: %v", b, err)
		}
		if req.Method != http.MethodConnect || req.URL.Host != h.authority || req.URL.Path != "" || req.URL.User != nil {
			t.Fatalf("accepted %q as %+v; net/http read %s %+v", b, h, req.Method, req.URL)
		}
		if got := req.Header.Values("Proxy-Authorization"); len(got) > 1 || h.hasAuth != (len(got) == 1) ||
			(len(got) == 1 && got[0] != h.proxyAuth) {
			t.Fatalf("accepted %q with credentials %q/%v; net/http read %q", b, h.proxyAuth, h.hasAuth, got)
		}
		// The server's own checks (net/http server.go readRequest).
		if hosts := req.Header.Values("Host"); len(hosts) > 1 || len(hosts) == 1 && !allBytes([]byte(hosts[0]), isTargetByte) {
			t.Fatalf("accepted %q with Host %q", b, hosts)
		}
		for k, vv := range req.Header {
			for _, v := range vv {
				if !allBytes([]byte(k), isTokenByte) || !allBytes([]byte(v), isFieldByte) {
					t.Fatalf("accepted %q with header %q: %q", b, k, v)
				}
			}
		}
		if req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
			t.Fatalf("accepted %q with a body", b)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, b[h.size:]) {
			t.Fatalf("accepted %q as %d bytes; net/http left %q", b, h.size, rest)
		}
	})
}
