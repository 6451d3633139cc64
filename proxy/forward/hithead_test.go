package forward

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

const plainHit = "GET http://cache.test:8080/pkg/a.deb HTTP/1.1\r\nHost: cache.test:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n"

func TestParseHitHead(t *testing.T) {
	h, v := parseHitHead([]byte(plainHit + "GET http://next/ HTTP/1.1\r\n"))
	if v != headAccepted || h.method != "GET" || h.target != "http://cache.test:8080/pkg/a.deb" || h.size != len(plainHit) ||
		h.userAgent != "curl/7.88.1" || h.close || h.proxyAuth != "" {
		t.Fatalf("plain hit: %v %+v", v, h)
	}
	want := http.Header{"User-Agent": {"curl/7.88.1"}, "Accept": {"*/*"}, "Proxy-Connection": {"Keep-Alive"}}
	if !reflect.DeepEqual(h.header, want) {
		t.Errorf("header %v, want %v", h.header, want)
	}
	h, v = parseHitHead([]byte("HEAD http://[::1]/x?a=b&c HTTP/1.1\r\nhost: [::1]\r\nProxy-Authorization:  Basic dTpw \r\nconnection: keep-alive, Close\r\nAccept-Encoding: gzip\r\naccept-encoding: br\r\n\r\n"))
	if v != headAccepted || h.method != "HEAD" || h.target != "http://[::1]/x?a=b&c" || h.proxyAuth != "Basic dTpw" || !h.close ||
		!reflect.DeepEqual(h.header["Accept-Encoding"], []string{"gzip", "br"}) {
		t.Fatalf("HEAD: %v %+v", v, h)
	}
	for _, s := range []string{"", "G", "GET", "HEAD http://a", "GET http://a/ HTTP/1.1\r\nHost: a\r", "GET http://a/ HTTP/1.1\r\nHost: a\r\n"} {
		if _, v := parseHitHead([]byte(s)); v != headIncomplete {
			t.Errorf("%q: %v, want incomplete", s, v)
		}
	}
	declined := map[string]string{
		"method":             "POST http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"lower-case method":  "get http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"origin form":        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"https":              "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"upper-case scheme":  "GET HTTP://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"no path":            "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n",
		"HTTP/1.0":           "GET http://a/ HTTP/1.0\r\nHost: a\r\n\r\n",
		"userinfo":           "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"fragment":           "GET http://a/#f HTTP/1.1\r\nHost: a\r\n\r\n",
		"bad escape":         "GET http://a/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"escaped host":       "GET http://%61/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"space in path":      "GET http://a/b c HTTP/1.1\r\nHost: a\r\n\r\n",
		"bare LF":            "GET http://a/ HTTP/1.1\nHost: a\n\n",
		"no Host":            "GET http://a/ HTTP/1.1\r\n\r\n",
		"two Hosts":          "GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"bad Host":           "GET http://a/ HTTP/1.1\r\nHost: a/b\r\n\r\n",
		"content-length":     "GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"transfer-encoding":  "GET http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"obs-fold":           "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n",
		"space before colon": "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n",
		"non-ASCII":          "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
		"NUL":                "GET http://a/ HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
		"authorization":      "GET http://a/ HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eA==\r\n\r\n",
		"cache-control":      "GET http://a/ HTTP/1.1\r\nHost: a\r\nCache-Control: no-cache\r\n\r\n",
		"pragma":             "GET http://a/ HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"if-none-match":      "GET http://a/ HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
		"if-range":           "GET http://a/ HTTP/1.1\r\nHost: a\r\nIf-Range: \"x\"\r\n\r\n",
		"range":              "GET http://a/ HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n",
		"expect":             "GET http://a/ HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"upgrade":            "GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"connection token":   "GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: X-Foo\r\n\r\n",
		"two Connections":    "GET http://a/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n",
		"proxy-connection":   "GET http://a/ HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
		"two credentials":    "GET http://a/ HTTP/1.1\r\nHost: a\r\nProxy-Authorization: a\r\nProxy-Authorization: b\r\n\r\n",
		"te":                 "GET http://a/ HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
		"too long":           "GET http://a/" + strings.Repeat("a", headBufSize) + " HTTP/1.1\r\n",
	}
	for name, s := range declined {
		if _, v := parseHitHead([]byte(s)); v != headDeclined {
			t.Errorf("%s: %q: %v, want declined", name, s, v)
		}
	}
}

// FuzzHitHead checks the hit path's parser against net/http's: every head
// it accepts, http.ReadRequest reads as the same request (method, target,
// URL, path as logged, Host, fields, Connection: close, no body, same
// length) and net/http's server accepts it (one valid Host, valid fields);
// and no prefix of an accepted head is declined.
func FuzzHitHead(f *testing.F) {
	for _, s := range []string{
		plainHit,
		"GET http://cache.test/x HTTP/1.1\r\nHost: cache.test\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
		"HEAD http://[::1]:80/a%2Fb;c=d?q=%41&r HTTP/1.1\r\nHost: x\r\nConnection: close\r\nProxy-Authorization: Basic dTpw\r\n\r\nGET ",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\nA: b\r\n c\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"GET http://a.b-c_d:0/..%2e/./ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a/?# HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, v := parseHitHead(b)
		if v != headAccepted {
			return
		}
		for i := range h.size {
			if _, pv := parseHitHead(b[:i]); pv == headDeclined {
				t.Fatalf("prefix %q of an accepted head declined", b[:i])
			}
		}
		br := bufio.NewReader(bytes.NewReader(b))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("accepted %q, net/http: %v", b, err)
		}
		if req.Method != h.method || req.RequestURI != h.target || req.Proto != "HTTP/1.1" {
			t.Fatalf("accepted %q as %+v; net/http read %s %s %s", b, h, req.Method, req.RequestURI, req.Proto)
		}
		if req.URL.Scheme != "http" || req.URL.User != nil || req.URL.Opaque != "" || req.URL.Fragment != "" ||
			req.URL.String() != h.target || req.URL.EscapedPath() == "" || !strings.HasPrefix(h.target, "http://"+req.URL.Host+req.URL.EscapedPath()) ||
			req.Host != req.URL.Host {
			t.Fatalf("accepted %q; net/http read URL %#v (host %q)", b, req.URL, req.Host)
		}
		// The server's own checks (net/http server.go readRequest), on
		// the fields before ReadRequest drops Host.
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
		tp.ReadLine()
		fields, err := tp.ReadMIMEHeader()
		if err != nil {
			t.Fatal(err)
		}
		if hosts := fields["Host"]; len(hosts) != 1 || !httpguts.ValidHostHeader(hosts[0]) {
			t.Fatalf("accepted %q with Host %q", b, hosts)
		}
		for k, vv := range fields {
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("accepted %q with field %q: %q", b, k, v)
				}
			}
		}
		if !reflect.DeepEqual(map[string][]string(req.Header), map[string][]string(h.header)) {
			t.Fatalf("accepted %q with fields %q; net/http read %q", b, h.header, req.Header)
		}
		if req.Close != h.close || req.UserAgent() != h.userAgent || req.Header.Get("Proxy-Authorization") != h.proxyAuth {
			t.Fatalf("accepted %q as %+v; net/http: close %v, user agent %q", b, h, req.Close, req.UserAgent())
		}
		if req.ContentLength != 0 || len(req.TransferEncoding) > 0 || req.Body != http.NoBody {
			t.Fatalf("accepted %q with a body", b)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, b[h.size:]) {
			t.Fatalf("accepted %q as %d bytes; net/http left %q", b, h.size, rest)
		}
	})
}
