package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// maxLine bounds one line of the users file. A bcrypt line is the user name
// (at most 255 bytes: RFC 1929's limit) plus 61 bytes.
const maxLine = 4096

// Users is an immutable set of user names and their bcrypt hashes, as read
// from an htpasswd file. The zero value has no users.
type Users struct {
	hashes    map[string][]byte
	decoy     []byte // the stored hash of the highest cost, checked for unknown user names
	decoyCost int
}

// Len returns the number of users.
func (u *Users) Len() int {
	if u == nil {
		return 0
	}
	return len(u.hashes)
}

// hash returns the stored bcrypt hash of user.
func (u *Users) hash(user string) ([]byte, bool) {
	if u == nil {
		return nil, false
	}
	h, ok := u.hashes[user]
	return h, ok
}

// Load reads the htpasswd file at path (see [Parse]).
func Load(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads an htpasswd file: one "user:hash" per line; blank lines and
// lines starting with # are ignored. Only bcrypt hashes ($2a$, $2b$, $2y$,
// as written by `htpasswd -B`) are accepted: any other hash type (MD5 apr1,
// SHA-1, crypt, plain text) is an error naming the line, so a file meant
// for another server is never half-loaded. Every error of the file is
// reported at once, each as "NAME:LINE: message". Passwords and hashes never
// appear in the errors.
func Parse(r io.Reader, name string) (*Users, error) {
	u := &Users{hashes: map[string][]byte{}}
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
	}
	br := bufio.NewReaderSize(r, maxLine)
	for n := 1; ; n++ {
		raw, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			fail(n, "line longer than %d bytes", maxLine)
			// Skip the rest of the over-long line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		line := strings.TrimRight(string(raw), "\r\n")
		if trimmed := strings.TrimSpace(line); trimmed != "" && !strings.HasPrefix(trimmed, "#") {
			u.parseLine(n, line, fail)
		}
		if err == io.EOF {
			break
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return u, nil
}

func (u *Users) parseLine(n int, line string, fail func(int, string, ...any)) {
	user, hash, ok := strings.Cut(line, ":")
	switch {
	case !ok:
		fail(n, "want user:hash")
		return
	case user == "":
		fail(n, "empty user name")
		return
	case len(user) > 255:
		fail(n, "user name longer than 255 bytes (the SOCKS5 limit)")
		return
	case strings.ContainsAny(user, " \t"):
		fail(n, "user %q: white space in the user name", user)
		return
	}
	if _, dup := u.hashes[user]; dup {
		fail(n, "user %q: listed twice", user)
		return
	}
	if kind := hashKind(hash); kind != "" {
		fail(n, "user %q: %s hash: only bcrypt ($2a$, $2b$, $2y$; htpasswd -B) is supported", user, kind)
		return
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		fail(n, "user %q: malformed bcrypt hash", user)
		return
	}
	u.hashes[user] = bytes.Clone([]byte(hash))
	// An unknown user name is checked against the costliest hash: a
	// wrong password of any user costs no more, so the time an answer
	// takes does not tell which names exist.
	if u.decoy == nil || cost > u.decoyCost {
		u.decoy, u.decoyCost = u.hashes[user], cost
	}
}

// hashKind names a hash type that is not bcrypt, or returns "" for bcrypt.
func hashKind(h string) string {
	switch {
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
		return ""
	case strings.HasPrefix(h, "$apr1$"):
		return "MD5 (apr1)"
	case strings.HasPrefix(h, "$1$"):
		return "MD5-crypt"
	case strings.HasPrefix(h, "{SHA}"):
		return "SHA-1"
	case strings.HasPrefix(h, "$5$"):
		return "SHA-256-crypt"
	case strings.HasPrefix(h, "$6$"):
		return "SHA-512-crypt"
	case strings.HasPrefix(h, "$2"):
		return "unsupported bcrypt variant"
	case h == "":
		return "empty"
	case strings.HasPrefix(h, "$"):
		return "unsupported"
	default:
		return "crypt(3) or plain-text"
	}
}
