package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
)

func bcryptHash(t testing.TB, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestParseValid(t *testing.T) {
	alice := bcryptHash(t, "alice-pw")
	bob := strings.Replace(bcryptHash(t, "bob-pw"), "$2a$", "$2y$", 1) // htpasswd -B writes $2y$
	carol := strings.Replace(bcryptHash(t, "carol-pw"), "$2a$", "$2b$", 1)
	file := "# egressd users\n\nalice:" + alice + "\r\n  # indented comment\nbob:" + bob + "\ncarol:" + carol // no final newline
	u, err := Parse(strings.NewReader(file), "users")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(3, u.Len()); diff != "" {
		t.Fatalf("users (-want +got):\n%s", diff)
	}
	a := New(u, nil, nil)
	for _, c := range []struct{ user, pass string }{{"alice", "alice-pw"}, {"bob", "bob-pw"}, {"carol", "carol-pw"}} {
		if !a.Verify(c.user, c.pass) {
			t.Errorf("Verify(%q) failed", c.user)
		}
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	good := bcryptHash(t, "pw")
	cases := []struct {
		name string
		file string
		want []string // one error per entry, in order
	}{
		{"apr1", "a:" + good + "\nmd5:$apr1$abc$0123456789abcdefghijkl\n", []string{`f:2: user "md5": MD5 (apr1) hash: only bcrypt`}},
		{"sha1", "\nsha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", []string{`f:2: user "sha": SHA-1 hash`}},
		{"crypt", "des:rl2yP6kPIyWAc\n", []string{`f:1: user "des": crypt(3) or plain-text hash`}},
		{"sha512crypt", "s:$6$salt$abc\n", []string{`f:1: user "s": SHA-512-crypt hash`}},
		{"bcrypt 2x", "x:" + strings.Replace(good, "$2a$", "$2x$", 1) + "\n", []string{`f:1: user "x": unsupported bcrypt variant hash`}},
		{"empty hash", "e:\n", []string{`f:1: user "e": empty hash`}},
		{"truncated bcrypt", "t:" + good[:40] + "\n", []string{`f:1: user "t": malformed bcrypt hash`}},
		{"no colon", "just-a-name\n", []string{`f:1: want user:hash`}},
		{"empty user", ":" + good + "\n", []string{`f:1: empty user name`}},
		{"duplicate", "d:" + good + "\nd:" + good + "\n", []string{`f:2: user "d": listed twice`}},
		{"long line", "l:" + strings.Repeat("x", 5000) + "\nok:" + good + "\n", []string{`f:1: line longer than 4096 bytes`}},
		{"all errors at once", "a:$apr1$x\nb\nc:" + good + "\nd:{SHA}x\n", []string{`f:1: user "a"`, `f:2: want user:hash`, `f:4: user "d"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.file), "f")
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d = %q, want prefix %q", i, lines[i], w)
				}
			}
			// Secrets never appear in errors.
			for _, secret := range []string{good, "0123456789abcdefghijkl", "W6ph5Mm5Pz8GgiULbPgzG37mj9g", "rl2yP6kPIyWAc", good[:40]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error reveals a hash: %v", err)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("alice:"+bcryptHash(t, "pw")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := Load(path)
	if err != nil || u.Len() != 1 {
		t.Fatalf("Load = %v, %v", u.Len(), err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if err := os.WriteFile(path, []byte("alice:$apr1$x$y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":1: ") {
		t.Fatalf("Load error = %v, want it to start with %s:1:", err, path)
	}
}
