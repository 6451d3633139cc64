package dlp

import (
	"bytes"
	"hash/crc32"
	"strconv"
)

// result is a verifier's answer for one candidate.
type result uint8

const (
	noMatch  result = iota
	matched         // a finding
	needMore        // the window ends before the answer is known
)

// A verifier judges the candidate whose keyword starts at w[i] (kw bytes
// long). w holds at least one byte before i unless i is the start of the
// stream. It returns needMore only when the answer depends on bytes past
// the end of w and eof is false, so a candidate is judged the same however
// the stream was cut into reads. start is where the match begins, as an
// index into w.
type verifier func(w []byte, i, kw int, eof bool) (start int, r result)

// detector is a built-in or custom detector: the literals that make a
// candidate and the verifier that decides it.
type detector struct {
	name      string
	keywords  []string
	lookahead int // the verifier never reads past w[i+lookahead]
	verify    verifier
}

// Built-in detector names (a contract: they appear in config, logs and the
// detector label of egressd_dlp_findings_total).
const (
	DetectorAWSAccessKey = "aws_access_key"
	DetectorAWSSecretKey = "aws_secret_key"
	DetectorPrivateKey   = "private_key"
	DetectorGitHubToken  = "github_token"
	DetectorGitLabToken  = "gitlab_token"
	DetectorSlackToken   = "slack_token"
	DetectorCardNumber   = "card_number"
	DetectorUSSSN        = "us_ssn"
)

// BuiltinDetectors lists the built-in detector names in documentation order.
var BuiltinDetectors = []string{
	DetectorAWSAccessKey, DetectorAWSSecretKey, DetectorPrivateKey, DetectorGitHubToken,
	DetectorGitLabToken, DetectorSlackToken, DetectorCardNumber, DetectorUSSSN,
}

// builtins returns the keyword detectors by name. Card numbers and SSNs have
// no keyword: the scanner makes a candidate of every run of digits.
func builtin(name string) (detector, bool) {
	switch name {
	case DetectorAWSAccessKey:
		return detector{name: name, keywords: []string{"AKIA", "ASIA", "ABIA", "ACCA", "A3T"}, lookahead: 21, verify: verifyAWSAccessKey}, true
	case DetectorAWSSecretKey:
		return detector{name: name, keywords: awsSecretKeywords, lookahead: maxKeyword(awsSecretKeywords) + awsSecretGap + 41, verify: verifyAWSSecretKey}, true
	case DetectorPrivateKey:
		return detector{name: name, keywords: pemHeaders, lookahead: pemLookahead, verify: verifyPrivateKey}, true
	case DetectorGitHubToken:
		return detector{name: name, keywords: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"}, lookahead: 11 + 22 + 1 + 59 + 1, verify: verifyGitHubToken}, true
	case DetectorGitLabToken:
		return detector{name: name, keywords: gitlabPrefixes, lookahead: gitlabLookahead, verify: verifyGitLabToken}, true
	case DetectorSlackToken:
		return detector{name: name, keywords: slackPrefixes, lookahead: slackLookahead, verify: verifySlackToken}, true
	}
	return detector{}, false
}

func maxKeyword(kws []string) int {
	n := 0
	for _, k := range kws {
		n = max(n, len(k))
	}
	return n
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }
func isUpper(b byte) bool { return b >= 'A' && b <= 'Z' }
func isLower(b byte) bool { return b >= 'a' && b <= 'z' }
func isAlnum(b byte) bool { return isDigit(b) || isUpper(b) || isLower(b) }
func isB64(b byte) bool   { return isAlnum(b) || b == '+' || b == '/' }

// before reports whether w[i] starts a token: nothing before it, or a byte
// that is not in the token alphabet.
func before(w []byte, i int, inToken func(byte) bool) bool {
	return i == 0 || !inToken(w[i-1])
}

// run counts bytes of class ok from w[j], up to limit. more is true when
// the window ended before a byte outside the class (or the limit) was seen
// and eof is false.
func run(w []byte, j, limit int, ok func(byte) bool, eof bool) (n int, more bool) {
	for n < limit {
		if j+n >= len(w) {
			return n, !eof
		}
		if !ok(w[j+n]) {
			return n, false
		}
		n++
	}
	return n, false
}

// after reports whether the byte at w[j] ends a token: end of data or a
// byte outside the token alphabet. more: the window ends at j.
func after(w []byte, j int, inToken func(byte) bool, eof bool) (ok, more bool) {
	if j >= len(w) {
		return eof, !eof
	}
	return !inToken(w[j]), false
}

func isB32(b byte) bool { return isUpper(b) || (b >= '2' && b <= '7') }

// verifyAWSAccessKey: (AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}, a whole
// token; AWS's documented example keys (ending in EXAMPLE) are not secrets.
func verifyAWSAccessKey(w []byte, i, kw int, eof bool) (int, result) {
	if !before(w, i, isAlnum) {
		return 0, noMatch
	}
	j := i + kw
	if kw == 3 { // A3T and one more
		if j >= len(w) {
			return 0, moreOr(eof)
		}
		if !isUpper(w[j]) && !isDigit(w[j]) {
			return 0, noMatch
		}
		j++
	}
	n, more := run(w, j, 16, isB32, eof)
	if more {
		return 0, needMore
	}
	if n < 16 {
		return 0, noMatch
	}
	ok, more := after(w, j+16, isAlnum, eof)
	if more {
		return 0, needMore
	}
	if !ok || bytes.HasSuffix(w[i:j+16], []byte("EXAMPLE")) {
		return 0, noMatch
	}
	return i, matched
}

func moreOr(eof bool) result {
	if eof {
		return noMatch
	}
	return needMore
}

// AWS secret access keys are 40 base64 characters with no structure of
// their own: they are found only next to a name that says what they are.
var awsSecretKeywords = []string{
	"aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "secret_access_key", "SECRET_ACCESS_KEY",
	"SecretAccessKey", "secretAccessKey", "secret-access-key", "aws_secret_key", "AWS_SECRET_KEY",
	"awsSecretKey", "AwsSecretKey", "awsSecretAccessKey",
}

// awsSecretGap bounds the quoting and assignment between name and value
// (`": "`, ` = `, `>`, `\"`).
const awsSecretGap = 12

func isAssignGap(b byte) bool {
	switch b {
	case ' ', '\t', '"', '\'', '`', ':', '=', '>', '\\':
		return true
	}
	return false
}

func verifyAWSSecretKey(w []byte, i, kw int, eof bool) (int, result) {
	j := i + kw
	gap, more := run(w, j, awsSecretGap+1, isAssignGap, eof)
	if more {
		return 0, needMore
	}
	if gap == 0 || gap > awsSecretGap || !bytes.ContainsAny(w[j:j+gap], ":=>") {
		return 0, noMatch
	}
	v := j + gap
	n, more := run(w, v, 40, isB64, eof)
	if more {
		return 0, needMore
	}
	if n < 40 {
		return 0, noMatch
	}
	ok, more := after(w, v+40, func(b byte) bool { return isB64(b) || b == '=' }, eof)
	if more {
		return 0, needMore
	}
	if !ok {
		return 0, noMatch
	}
	var up, low, other bool
	for _, b := range w[v : v+40] {
		switch {
		case isUpper(b):
			up = true
		case isLower(b):
			low = true
		default:
			other = true
		}
	}
	if !up || !low || !other {
		return 0, noMatch
	}
	return v, matched
}

// PEM private keys: RSA (PKCS#1), EC (SEC 1), PKCS#8 (plain and encrypted),
// OpenSSH, and DSA. The header alone is not enough: documentation quotes it;
// a key has base64 right after it (legacy encrypted keys first have
// Proc-Type and DEK-Info lines). JSON bodies carry the newlines as \n.
var pemHeaders = []string{
	"-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----",
	"-----BEGIN PRIVATE KEY-----", "-----BEGIN ENCRYPTED PRIVATE KEY-----",
	"-----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN DSA PRIVATE KEY-----",
}

const pemLookahead = 40 + 300

func verifyPrivateKey(w []byte, i, kw int, eof bool) (int, result) {
	j := i + kw
	end := i + pemLookahead
	lines := 0
	for {
		// Line breaks: real ones, or \n \r escapes as in JSON strings.
		for {
			if j >= len(w) {
				return 0, moreOr(eof)
			}
			if j >= end {
				return 0, noMatch
			}
			switch {
			case w[j] == '\r' || w[j] == '\n' || w[j] == ' ' || w[j] == '\t':
				j++
				continue
			case w[j] == '\\':
				if j+1 >= len(w) {
					return 0, moreOr(eof)
				}
				if w[j+1] == 'n' || w[j+1] == 'r' {
					j += 2
					continue
				}
			}
			break
		}
		n, more := run(w, j, 40, isB64, eof)
		if more {
			return 0, needMore
		}
		if n >= 40 {
			return i, matched
		}
		// A "Name: value" header line (Proc-Type, DEK-Info); at most two.
		h, more := run(w, j, 32, func(b byte) bool { return isAlnum(b) || b == '-' }, eof)
		if more {
			return 0, needMore
		}
		k := j + h
		if h == 0 || lines == 2 || k >= len(w) || w[k] != ':' {
			if k >= len(w) && !eof {
				return 0, needMore
			}
			return 0, noMatch
		}
		lines++
		for j = k; ; j++ {
			if j >= len(w) {
				return 0, moreOr(eof)
			}
			if j >= end {
				return 0, noMatch
			}
			if w[j] == '\n' || w[j] == '\r' || w[j] == '\\' {
				break
			}
		}
	}
}

// verifyGitHubToken: classic tokens are a prefix, 30 base62 characters and
// a 6-character base62 CRC32 of those 30 (GitHub's 2021 token format), so a
// random string that only looks like one does not count. Fine-grained
// tokens (github_pat_) have a 22 + 59 character body.
func verifyGitHubToken(w []byte, i, kw int, eof bool) (int, result) {
	if !before(w, i, isAlnum) {
		return 0, noMatch
	}
	j := i + kw
	if kw == len("github_pat_") {
		n, more := run(w, j, 22, isAlnum, eof)
		if more {
			return 0, needMore
		}
		if n < 22 {
			return 0, noMatch
		}
		if j+22 >= len(w) {
			return 0, moreOr(eof)
		}
		if w[j+22] != '_' {
			return 0, noMatch
		}
		n, more = run(w, j+23, 60, isAlnum, eof)
		if more {
			return 0, needMore
		}
		if n != 59 {
			return 0, noMatch
		}
		return i, matched
	}
	n, more := run(w, j, 37, isAlnum, eof)
	if more {
		return 0, needMore
	}
	if n != 36 || !githubChecksumOK(w[j:j+36]) {
		return 0, noMatch
	}
	return i, matched
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// githubChecksumOK checks the last 6 characters of a classic token's 36
// against the CRC32 (IEEE) of the first 30, in base62, zero-padded.
func githubChecksumOK(tok []byte) bool {
	sum := crc32.ChecksumIEEE(tok[:30])
	var enc [6]byte
	for k := 5; k >= 0; k-- {
		enc[k] = base62[sum%62]
		sum /= 62
	}
	return sum == 0 && bytes.Equal(enc[:], tok[30:36])
}

// GitHubChecksum returns the 6-character checksum GitHub appends to the 30
// random characters of a classic token (for tests and tools).
func GitHubChecksum(random string) string {
	sum := crc32.ChecksumIEEE([]byte(random))
	var enc [6]byte
	for k := 5; k >= 0; k-- {
		enc[k] = base62[sum%62]
		sum /= 62
	}
	return string(enc[:])
}

// GitLab tokens: a type prefix, then 20 characters (the classic format) or
// a routable token (GitLab 17+): the prefix, a base64url payload, ".",
// a 2-character base-36 version, ".", the payload's length in 2 base-36
// characters, and 7 base-36 characters of the CRC32 of everything before
// them. The length and the CRC are checked.
var gitlabPrefixes = []string{
	"glpat-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-", "glsoat-", "glimt-", "glagent-", "gloas-", "GR1348941",
}

const gitlabLookahead = 9 + 300 + 14

func isGitLabChar(b byte) bool { return isAlnum(b) || b == '_' || b == '-' }

func isBase36(b byte) bool { return isDigit(b) || isLower(b) }

func verifyGitLabToken(w []byte, i, kw int, eof bool) (int, result) {
	if !before(w, i, isGitLabChar) {
		return 0, noMatch
	}
	j := i + kw
	n, more := run(w, j, 301, isGitLabChar, eof)
	if more {
		return 0, needMore
	}
	if n == 20 {
		ok, more := after(w, j+20, func(b byte) bool { return isGitLabChar(b) || b == '.' }, eof)
		if more {
			return 0, needMore
		}
		if ok {
			return i, matched
		}
		return 0, noMatch
	}
	if n < 27 || n > 300 {
		return 0, noMatch
	}
	// Routable: payload "." version "." length CRC.
	k := j + n
	if k+13 > len(w) {
		return 0, moreOr(eof)
	}
	t := w[k : k+13]
	if t[0] != '.' || t[3] != '.' {
		return 0, noMatch
	}
	for _, b := range t[1:3] {
		if !isBase36(b) {
			return 0, noMatch
		}
	}
	for _, b := range t[4:13] {
		if !isBase36(b) {
			return 0, noMatch
		}
	}
	if !gitlabRoutableOK(w[i:k+13], n) {
		return 0, noMatch
	}
	ok, more := after(w, k+13, isGitLabChar, eof)
	if more {
		return 0, needMore
	}
	if !ok {
		return 0, noMatch
	}
	return i, matched
}

// gitlabRoutableOK checks a routable token's length field (its last 9
// characters start with the payload's length, n) and its CRC32.
func gitlabRoutableOK(tok []byte, n int) bool {
	tail := tok[len(tok)-9:]
	if l, err := strconv.ParseUint(string(tail[:2]), 36, 16); err != nil || int(l) != n {
		return false
	}
	sum := strconv.FormatUint(uint64(crc32.ChecksumIEEE(tok[:len(tok)-7])), 36)
	if len(sum) > 7 {
		return false
	}
	for k := 0; k < 7-len(sum); k++ {
		if tail[2+k] != '0' {
			return false
		}
	}
	return string(tail[9-len(sum):]) == sum
}

// GitLabRoutable returns a routable GitLab token made of prefix and a
// base64url payload, with its version, length and CRC (for tests and
// tools).
func GitLabRoutable(prefix, payload string) string {
	pad := func(s string, n int) string {
		for len(s) < n {
			s = "0" + s
		}
		return s
	}
	base := prefix + payload + ".01." + pad(strconv.FormatInt(int64(len(payload)), 36), 2)
	return base + pad(strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(base))), 36), 7)
}

// Slack: bot, user, app-level, refresh and config tokens are a prefix and
// dash-separated alphanumeric segments; incoming webhooks are a URL with a
// workspace, a channel and a 24-character secret.
var slackPrefixes = []string{
	"xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-", "xoxe.xoxp-", "xapp-", "hooks.slack.com/services/",
}

const slackLookahead = 26 + 260

func verifySlackToken(w []byte, i, kw int, eof bool) (int, result) {
	j := i + kw
	if w[i] == 'h' {
		return verifySlackWebhook(w, i, j, eof)
	}
	if !before(w, i, isAlnum) {
		return 0, noMatch
	}
	// Segments: the first numeric, at least three, 40+ characters in all.
	segs, total, k := 0, 0, j
	for {
		n, more := run(w, k, 256-total, isAlnum, eof)
		if more {
			return 0, needMore
		}
		if n == 0 {
			return 0, noMatch
		}
		if segs == 0 {
			for _, b := range w[k : k+n] {
				if !isDigit(b) {
					return 0, noMatch
				}
			}
		}
		segs++
		total += n
		k += n
		if total >= 256 {
			return 0, noMatch
		}
		if k >= len(w) {
			if !eof {
				return 0, needMore
			}
			break
		}
		if w[k] != '-' {
			break
		}
		if k+1 >= len(w) {
			if !eof {
				return 0, needMore
			}
			break
		}
		if !isAlnum(w[k+1]) {
			break
		}
		k++
		total++
	}
	if segs < 3 || total < 30 {
		return 0, noMatch
	}
	return i, matched
}

func verifySlackWebhook(w []byte, i, j int, eof bool) (int, result) {
	// T[A-Z0-9]{8,12} / B[A-Z0-9]{8,12} / [A-Za-z0-9]{24}
	isID := func(b byte) bool { return isUpper(b) || isDigit(b) }
	k := j
	for _, lead := range []byte{'T', 'B'} {
		if k >= len(w) {
			return 0, moreOr(eof)
		}
		if w[k] != lead && !(lead == 'T' && w[k] == 'E') { // E: Enterprise Grid
			return 0, noMatch
		}
		n, more := run(w, k+1, 13, isID, eof)
		if more {
			return 0, needMore
		}
		if n < 8 || n > 12 {
			return 0, noMatch
		}
		k += 1 + n
		if k >= len(w) {
			return 0, moreOr(eof)
		}
		if w[k] != '/' {
			return 0, noMatch
		}
		k++
	}
	n, more := run(w, k, 25, isAlnum, eof)
	if more {
		return 0, needMore
	}
	if n != 24 {
		return 0, noMatch
	}
	return i, matched
}
