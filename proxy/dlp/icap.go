package dlp

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/egressd/egressd/proxy/dlp/icap"
)

// Results of asking the ICAP service, as the access line (dlp_icap) and
// egressd_dlp_icap_requests_total{result} name them.
const (
	ICAPAllow  = "allow"  // 204, or the request came back unchanged
	ICAPModify = "modify" // forwarded as the service modified it
	ICAPBlock  = "block"  // the service answered in the origin's place
	ICAPError  = "error"  // the service failed or timed out; dlp.icap.failure decided
)

// ICAPResults lists the results, for metrics that exist from start.
var ICAPResults = []string{ICAPAllow, ICAPModify, ICAPBlock, ICAPError}

// icapInspector is the Inspector that asks the ICAP service (RFC 3507
// REQMOD) about a request: the last link of a profile's chain.
type icapInspector struct {
	client *icap.Client
	key    string // what the client was built from: reloads keep it when unchanged
}

func newICAPInspector(r *Rules) (*icapInspector, error) {
	c, err := icap.New(icap.Config{
		URL:     r.icapService,
		Timeout: r.icap.Timeout,
		// A modified request or a block page may be somewhat larger
		// than what was held.
		MaxBody: r.maxScan + 1<<20,
	})
	if err != nil {
		return nil, err
	}
	return &icapInspector{client: c, key: icapKey(r)}, nil
}

func icapKey(r *Rules) string {
	if r == nil || r.icapService == nil {
		return ""
	}
	return r.icapService.String() + " " + r.icap.Timeout.String()
}

// Inspect sends the request as it would be forwarded (the held body, raw)
// and maps the answer: 204 or an unchanged request forwards, a modified
// request replaces it, an encapsulated response blocks with that response.
func (i *icapInspector) Inspect(ctx context.Context, r *Request) (Verdict, error) {
	u := *r.URL
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	req := &icap.Request{
		Method:  r.Method,
		URL:     &u,
		Header:  r.Header,
		Body:    r.Body.Raw(),
		Partial: !r.Body.Complete(),
		User:    r.Client.User,
	}
	if r.Client.Addr.IsValid() {
		req.ClientIP = r.Client.Addr.String()
	}
	res, err := i.client.ReqMod(ctx, req)
	if err != nil {
		return Verdict{}, err
	}
	blocked := Verdict{Block: true, Findings: []Finding{{Detector: FindingICAP, Part: PartICAP}}}
	switch {
	case res.Response != nil:
		if res.Response.StatusCode < 200 {
			// An interim status is no answer to give a client: egressd's
			// own 403 instead.
			return blocked, nil
		}
		blocked.Response = clientResponse(res.Response)
		return blocked, nil
	case res.Request != nil:
		if unchanged(req, res) {
			return Verdict{}, nil
		}
		if req.Partial {
			// The service saw only the held part of the body: its
			// modification cannot be applied to the whole.
			return blocked, nil
		}
		return Verdict{Replace: &Replacement{
			Method: res.Request.Method,
			URL:    res.Request.URL,
			Header: res.Request.Header,
			Body:   res.Body,
		}}, nil
	}
	return Verdict{}, nil
}

// unchanged reports whether a 200 returned the request as it was sent
// (services answer so when they take no 204, or after a whole body: c-icap
// does, adding a Via header, which is no change to forward).
func unchanged(sent *icap.Request, res *icap.Result) bool {
	got := res.Request
	if got.Method != sent.Method || got.URL.RequestURI() != sent.URL.RequestURI() || !res.SameBody && !bytes.Equal(res.Body, sent.Body) {
		return false
	}
	a, b := comparable(sent.Header), comparable(got.Header)
	return maps.EqualFunc(a, b, slices.Equal)
}

func comparable(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, v := range h {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Via":
			continue
		}
		if len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

// clientResponse is the service's response made fit to give a client: the
// hop-by-hop and X-Egress-* headers it carried are dropped (the front end
// adds its own), the body is the one read.
func clientResponse(r *http.Response) *http.Response {
	h := make(http.Header, len(r.Header))
	for k, v := range r.Header {
		if hopByHop[k] || strings.HasPrefix(k, "X-Egress-") {
			continue
		}
		h[k] = v
	}
	for _, f := range r.Header["Connection"] {
		for name := range strings.SplitSeq(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	body, _ := io.ReadAll(r.Body)
	return &http.Response{
		Status:        http.StatusText(r.StatusCode),
		StatusCode:    r.StatusCode,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
	}
}

// hopByHop are the RFC 9110 section 7.6.1 connection-specific fields.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true,
}
