package dlp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"

	"github.com/egressd/egressd/policy"
)

// Request is what an inspector sees of one HTTP request, after the policy
// allowed its destination and before any of it goes upstream.
type Request struct {
	Client policy.Client
	Host   string // the destination, normalized by the policy
	Port   uint16
	Method string
	URL    *url.URL
	Header http.Header // as it will be sent upstream (hop-by-hop headers removed)
	// ContentLength is the body's declared length, -1 when unknown
	// (chunked).
	ContentLength int64
	Body          *Body // never nil; Len 0 when there is none
}

// Verdict is an inspector's answer.
type Verdict struct {
	Block    bool
	Findings []Finding
	// Response, with Block, is what the client gets instead of egressd's
	// own 403 (an ICAP service's block page). Nil: egressd's answer.
	Response *http.Response
	// Replace, without Block, is the request to forward instead (an ICAP
	// service's modification). Nil: the request as it is.
	Replace *Replacement
}

// Replacement is a modified request: what the origin gets instead. The
// destination never changes (the policy decided on it).
type Replacement struct {
	Method string
	URL    *url.URL
	Header http.Header
	Body   []byte
}

// Inspector judges requests. Inspect must not read Body past Inspect's
// return. An error means the inspector could not judge (its service is
// down or timed out): the chain answers dlp_unavailable.
type Inspector interface {
	Inspect(ctx context.Context, r *Request) (Verdict, error)
}

// ErrCut is the error a streamed body returns when the part of it past
// dlp.max_scan_bytes had a finding: the upload is cut there, and the
// origin sees an aborted request.
var ErrCut = errors.New("dlp: upload cut at a finding")

// Action is what the front end does with the request.
type Action uint8

const (
	Forward     Action = iota // send Outcome.Body (and Replace, when set) upstream
	Block                     // 403 dlp, or Outcome.Response
	Unavailable               // 503 dlp_unavailable: an inspector could not judge
)

// Outcome is the chain's answer for one request.
type Outcome struct {
	Profile  string
	Report   bool // the profile is in report mode: findings are logged, nothing is blocked
	Action   Action
	Findings []Finding
	Response *http.Response // Block: the client gets this instead of egressd's 403
	Replace  *Replacement   // Forward: the request to send instead
	// ICAP is what asking the ICAP service gave (ICAPAllow, ...); "" when
	// the profile does not ask it or the built-in detectors blocked first.
	ICAP string
	// Body is what to send upstream: the held bytes, then (for an
	// oversize body) the rest, scanned as it goes with dlp.oversize:
	// stream. Nil when the request had no body.
	Body io.ReadCloser
	tail *tailReader
}

// TailFindings returns the findings made in the streamed part of the body
// so far; with enforce they cut the upload (ErrCut).
func (o *Outcome) TailFindings() []Finding {
	if o == nil || o.tail == nil {
		return nil
	}
	return o.tail.findings()
}

// Cut reports whether the streamed body was cut at a finding.
func (o *Outcome) Cut() bool { return o != nil && o.tail != nil && o.tail.isCut() }
