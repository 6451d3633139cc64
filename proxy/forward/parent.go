package forward

import (
	"net/http"
	"net/url"
)

// parentHost is the host of the proxy URL a parent's pool gives its
// Transport for http URLs. It is never resolved or dialed as such:
// dialFromContext recognizes it and connects to the parent's configured
// URLs (in order, counted), so a parent with several URLs is one pool.
const parentHost = "upstream-proxy.egressd.invalid:80"

var parentURL = &url.URL{Scheme: "http", Host: parentHost}

// parentProxy is the Proxy of a parent's Transport: an http URL goes to
// the parent in absolute form (its Proxy-Authorization set by roundTrip);
// an https URL is dialed as the origin's authority, which dialFromContext
// turns into the parent's CONNECT tunnel, and TLS runs end to end inside.
func parentProxy(r *http.Request) (*url.URL, error) {
	if r.URL.Scheme == "http" {
		return parentURL, nil
	}
	return nil, nil
}
