package auth

import (
	"encoding/base64"
	"strings"
)

// ParseBasic parses a Proxy-Authorization (or Authorization) header value
// of the Basic scheme (RFC 7617): "Basic " and base64("user:password"). The
// scheme name is case-insensitive; the user name ends at the first colon.
// ok is false for any other scheme or a malformed value.
func ParseBasic(header string) (user, pass string, ok bool) {
	scheme, cred, found := strings.Cut(strings.TrimSpace(header), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	cred = strings.TrimLeft(cred, " ")
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		// Some clients leave the padding off.
		if raw, err = base64.RawStdEncoding.DecodeString(cred); err != nil {
			return "", "", false
		}
	}
	user, pass, found = strings.Cut(string(raw), ":")
	if !found {
		return "", "", false
	}
	return user, pass, true
}
