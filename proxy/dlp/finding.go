package dlp

import "strconv"

// Part is where in a request a finding was made.
type Part uint8

// Parts of a request.
const (
	PartBody   Part = iota // the decoded body; Offset is set
	PartURL                // the request target (path and query)
	PartHeader             // a header value; Header names it
	PartICAP               // the ICAP service blocked the request
)

// Finding is one detector hit. It never holds the matched bytes.
type Finding struct {
	Detector string // built-in detector name, custom pattern name, or a body verdict (oversize, ...)
	Part     Part
	Header   string // PartHeader: the header's canonical name; "" when the match touched the name itself
	Offset   int64  // PartBody: offset of the match in the decoded body
}

// Location renders where the finding is: "url", "header:Authorization",
// "body:1234", "icap".
func (f Finding) Location() string {
	switch f.Part {
	case PartURL:
		return "url"
	case PartHeader:
		if f.Header == "" {
			return "header"
		}
		return "header:" + f.Header
	case PartICAP:
		return "icap"
	}
	return "body:" + strconv.FormatInt(f.Offset, 10)
}

// Names of the findings that judge a body rather than a secret in it.
const (
	FindingOversize    = "oversize"           // past dlp.max_scan_bytes with dlp.oversize: block
	FindingBomb        = "decompression_bomb" // decoded size far beyond the encoded size
	FindingUndecodable = "undecodable_body"   // an encoding egressd cannot decode, or a corrupt one
	FindingICAP        = "icap"               // the ICAP service refused the request
)
