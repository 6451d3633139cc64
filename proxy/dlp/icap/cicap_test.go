package icap_test

// An external test package: testenv imports proxy/config, which imports
// this package through proxy/dlp.

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/proxy/dlp/icap"
	"github.com/egressd/egressd/test/testenv"
)

func post(body string) *icap.Request {
	u, _ := url.Parse("http://upload.test:8080/put?x=1")
	h := http.Header{"Content-Type": {"text/plain"}, "X-Trace": {"abc"}}
	return &icap.Request{Method: "POST", URL: u, Header: h, Body: []byte(body), ClientIP: "192.0.2.7", User: "alice"}
}

// Against Debian's c-icap: the echo service returns requests unmodified
// (204, or 200 with the request and a Via header); srv_content_filtering blocks a body matching its pattern with
// its BLOCK page, over one persistent connection.
func TestCICAP(t *testing.T) {
	ci := testenv.StartCICAP(t, nil, "127.0.0.1", testenv.CICAPConfig{Block: []string{"TOPSECRET-[0-9]+"}})
	client := func(service string) *icap.Client {
		u, _ := url.Parse(ci.URL(service))
		c, err := icap.New(icap.Config{URL: u, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	ctx := context.Background()

	echo := client("echo")
	opts, err := echo.Options(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Preview != 1024 || !opts.Allow204 || !slices.Contains(opts.Methods, "REQMOD") || opts.ISTag == "" || opts.TTL != time.Hour {
		t.Fatalf("c-icap echo OPTIONS: %+v", opts)
	}
	// The echo service answers 204 or 200 with the request as it was
	// sent (plus Via), depending on the preview it got.
	for _, body := range []string{strings.Repeat("b", 5000), "short", ""} {
		req := post(body)
		if body == "" {
			req.Method = "GET"
		}
		res, err := echo.ReqMod(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		switch res.Status {
		case icap.StatusNoContent:
		case icap.StatusOK:
			if res.Request == nil || res.Request.Method != req.Method || string(res.Body) != body ||
				res.Request.Header.Get("X-Trace") != "abc" || !strings.Contains(res.Request.Header.Get("Via"), "C-ICAP") {
				t.Fatalf("echo of %d bytes: %+v, %d bytes back", len(body), res, len(res.Body))
			}
		default:
			t.Fatalf("echo: status %d", res.Status)
		}
	}

	filter := client("filter")
	for i := range 3 {
		res, err := filter.ReqMod(ctx, post("a body with TOPSECRET-12345 in it"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Response == nil || res.Response.StatusCode != 403 {
			t.Fatalf("filter, request %d: %+v", i, res)
		}
		page, _ := io.ReadAll(res.Response.Body)
		if !strings.Contains(string(page), "BLOCKED") {
			t.Fatalf("block page %q", page)
		}
	}
	res, err := filter.ReqMod(ctx, post(strings.Repeat("clean ", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Response != nil {
		t.Fatalf("filter blocked a clean body")
	}
	if st := filter.Stats(); st.Open != 1 {
		t.Fatalf("filter pool %+v: the connection was not kept", st)
	}
}
