package auth

import (
	"encoding/base64"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBasic(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	type result struct {
		User, Pass string
		OK         bool
	}
	cases := []struct {
		name   string
		header string
		want   result
	}{
		{"plain", "Basic " + b64("alice:secret"), result{"alice", "secret", true}},
		{"scheme case", "bAsIc " + b64("alice:secret"), result{"alice", "secret", true}},
		{"extra spaces", "  Basic   " + b64("alice:secret") + " ", result{"alice", "secret", true}},
		{"colon in password", "Basic " + b64("alice:se:cr:et"), result{"alice", "se:cr:et", true}},
		{"empty password", "Basic " + b64("alice:"), result{"alice", "", true}},
		{"no padding", "Basic " + base64.RawStdEncoding.EncodeToString([]byte("alice:x")), result{"alice", "x", true}},
		{"no colon", "Basic " + b64("alice"), result{}},
		{"empty", "", result{}},
		{"scheme only", "Basic", result{}},
		{"bearer", "Bearer " + b64("alice:secret"), result{}},
		{"digest", `Digest username="alice"`, result{}},
		{"bad base64", "Basic !!!", result{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, p, ok := ParseBasic(tc.header)
			if diff := cmp.Diff(tc.want, result{u, p, ok}); diff != "" {
				t.Errorf("ParseBasic(%q) (-want +got):\n%s", tc.header, diff)
			}
		})
	}
}

// FuzzParseBasic: never panics, and what a client encodes comes back.
func FuzzParseBasic(f *testing.F) {
	f.Add("alice", "secret")
	f.Add("", "")
	f.Add("a", "b:c")
	f.Fuzz(func(t *testing.T, user, pass string) {
		ParseBasic(user + pass) // arbitrary input: no panic
		if containsColon(user) {
			return
		}
		h := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		u, p, ok := ParseBasic(h)
		if !ok || u != user || p != pass {
			t.Fatalf("ParseBasic(encode(%q, %q)) = %q, %q, %v", user, pass, u, p, ok)
		}
	})
}

func containsColon(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return true
		}
	}
	return false
}
