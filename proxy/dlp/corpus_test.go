package dlp

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// The corpora: real-format secrets that must all be found, and realistic
// benign payloads that must produce no finding. Generated from a fixed
// seed, so the counts below are exact.

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randFrom(r *mrand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func githubToken(r *mrand.Rand, prefix string) string {
	random := randFrom(r, alnum, 30)
	return prefix + random + GitHubChecksum(random)
}

// luhnComplete appends the check digit to a number's other digits.
func luhnComplete(body string) string {
	for c := byte('0'); c <= '9'; c++ {
		s := body + string(c)
		d := make([]byte, len(s))
		for i := range s {
			d[i] = s[i] - '0'
		}
		if luhn(d) {
			return s
		}
	}
	panic("unreachable")
}

func card(r *mrand.Rand, prefix string, n int) string {
	return luhnComplete(prefix + randFrom(r, "0123456789", n-len(prefix)-1))
}

func group(num string, sizes []int, sep string) string {
	var parts []string
	for _, s := range sizes {
		parts = append(parts, num[:s])
		num = num[s:]
	}
	return strings.Join(parts, sep)
}

type secretCase struct {
	name     string
	detector string
	body     string
}

// secretCorpus returns secrets in the contexts they leak in.
func secretCorpus(t testing.TB) []secretCase {
	r := mrand.New(mrand.NewPCG(17, 42))
	var out []secretCase
	add := func(name, det, body string) { out = append(out, secretCase{name, det, body}) }
	for _, p := range []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"} {
		tok := githubToken(r, p)
		add("github "+p+" json", DetectorGitHubToken, `{"token":"`+tok+`","scopes":["repo"]}`)
		add("github "+p+" header-ish", DetectorGitHubToken, "Authorization: token "+tok+"\n")
	}
	add("github fine-grained", DetectorGitHubToken, "GITHUB_TOKEN=github_pat_"+randFrom(r, alnum, 22)+"_"+randFrom(r, alnum, 59)+"\n")
	add("gitlab classic", DetectorGitLabToken, `private_token=glpat-`+randFrom(r, alnum+"_-", 20)+`&x=1`)
	add("gitlab deploy", DetectorGitLabToken, "CI_DEPLOY=gldt-"+randFrom(r, alnum, 20))
	add("gitlab runner", DetectorGitLabToken, "token: glrt-"+randFrom(r, alnum, 20)+"\n")
	add("gitlab routable", DetectorGitLabToken, `"`+GitLabRoutable("glpat-", randFrom(r, alnum+"_-", 36))+`"`)
	add("slack bot", DetectorSlackToken, `{"token": "xoxb-`+randFrom(r, "0123456789", 12)+"-"+randFrom(r, "0123456789", 13)+"-"+randFrom(r, alnum, 24)+`"}`)
	add("slack user", DetectorSlackToken, "SLACK=xoxp-"+randFrom(r, "0123456789", 11)+"-"+randFrom(r, "0123456789", 12)+"-"+randFrom(r, "0123456789", 13)+"-"+randFrom(r, "0123456789abcdef", 32))
	add("slack app", DetectorSlackToken, "xapp-1-A"+randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10)+"-"+randFrom(r, "0123456789", 13)+"-"+randFrom(r, "0123456789abcdef", 64))
	add("slack webhook", DetectorSlackToken, "url=https://hooks.slack.com/services/T"+randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 8)+"/B"+randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10)+"/"+randFrom(r, alnum, 24))
	for _, p := range []string{"AKIA", "ASIA", "ABIA", "ACCA", "A3TX"} {
		add("aws key id "+p, DetectorAWSAccessKey, `{"AccessKeyId":"`+p+randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)+`"}`)
	}
	b64 := alnum + "+/"
	sec := func() string {
		for {
			s := randFrom(r, b64, 40)
			if strings.ContainsAny(s, "0123456789+/") && strings.ContainsAny(s, "abcdefghijklmnopqrstuvwxyz") && strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
				return s
			}
		}
	}
	add("aws secret ini", DetectorAWSSecretKey, "[default]\naws_access_key_id = AKIA"+randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)+"\naws_secret_access_key = "+sec()+"\n")
	add("aws secret env", DetectorAWSSecretKey, "AWS_SECRET_ACCESS_KEY="+sec()+"\n")
	add("aws secret json", DetectorAWSSecretKey, `{"Credentials":{"SecretAccessKey":"`+sec()+`"}}`)
	add("aws secret xml", DetectorAWSSecretKey, `<Credentials><SecretAccessKey>`+sec()+`</SecretAccessKey></Credentials>`)
	add("aws secret js", DetectorAWSSecretKey, `const c={secretAccessKey: '`+sec()+`'};`)
	for _, k := range pemKeys(t) {
		add("pem "+k.name, DetectorPrivateKey, k.pem)
		add("pem "+k.name+" in json", DetectorPrivateKey, `{"key":"`+strings.ReplaceAll(k.pem, "\n", `\n`)+`"}`)
	}
	cards := []struct {
		prefix string
		n      int
		sizes  []int
	}{
		{"4", 16, []int{4, 4, 4, 4}}, {"51", 16, []int{4, 4, 4, 4}}, {"2221", 16, []int{4, 4, 4, 4}},
		{"37", 15, []int{4, 6, 5}}, {"6011", 16, []int{4, 4, 4, 4}}, {"3530", 16, []int{4, 4, 4, 4}},
		{"36", 14, []int{4, 6, 4}}, {"62", 19, []int{4, 4, 4, 4, 3}},
	}
	for _, c := range cards {
		num := card(r, c.prefix, c.n)
		if c.n < 19 {
			add("card "+c.prefix+" plain", DetectorCardNumber, `{"pan":"`+num+`"}`)
		}
		add("card "+c.prefix+" spaces", DetectorCardNumber, "card: "+group(num, c.sizes, " ")+"\n")
		add("card "+c.prefix+" dashes", DetectorCardNumber, "cc="+group(num, c.sizes, "-")+"&exp=12/29")
	}
	for k := range 5 {
		area := 1 + r.IntN(665)
		if k%2 == 1 {
			area = 667 + r.IntN(232)
		}
		ssn := fmt.Sprintf("%03d-%02d-%04d", area, 1+r.IntN(99), 1+r.IntN(9999))
		add("ssn "+ssn[:3], DetectorUSSSN, `{"ssn":"`+ssn+`"}`)
		add("ssn spaces "+ssn[:3], DetectorUSSSN, "SSN "+strings.ReplaceAll(ssn, "-", " ")+".")
	}
	return out
}

type pemKey struct{ name, pem string }

// pemKeys makes one private key of each PEM kind.
func pemKeys(t testing.TB) []pemKey {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 1024) //nolint: test key
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	ossh, err := ssh.MarshalPrivateKey(edk, "test")
	if err != nil {
		t.Fatal(err)
	}
	// An encrypted PKCS#8 key (PBES2): the standard library cannot write
	// one; its DER is opaque to the detector, so random bytes of a
	// realistic size stand in for the ciphertext.
	enc := make([]byte, 1200)
	rand.Read(enc)
	// A legacy OpenSSL-encrypted RSA key has headers before the base64.
	legacy := &pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{
		"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC," + strings.ToUpper(hex.EncodeToString(enc[:16])),
	}, Bytes: enc[16:900]}
	return []pemKey{
		{"rsa pkcs1", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))},
		{"ec sec1", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))},
		{"pkcs8", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))},
		{"pkcs8 encrypted", string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc}))},
		{"openssh", string(pem.EncodeToMemory(ossh))},
		{"rsa legacy encrypted", string(pem.EncodeToMemory(legacy))},
	}
}

// nearMisses are secret-shaped strings that must not be found: wrong
// checksums, invalid SSN areas and groups, failed Luhn, documented
// examples, public keys and certificates.
func nearMisses(t testing.TB) []string {
	r := mrand.New(mrand.NewPCG(5, 6))
	tok := githubToken(r, "ghp_")
	bad := []byte(tok)
	bad[len(bad)-1] ^= 1 // checksum off by one character
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(&ek.PublicKey)
	out := []string{
		"token " + string(bad),
		"ghp_" + randFrom(r, alnum, 36), // random: checksum fails (1 in 62^6 it would not)
		"ghp_" + randFrom(r, alnum, 30), // too short
		"AKIAIOSFODNN7EXAMPLE",          // AWS's documentation key
		"xAKIA" + randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
		"AKIA" + randFrom(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 15),
		"aws_secret_access_key = YOUR_SECRET_ACCESS_KEY_GOES_HERE_PLEASE1", // one case only... no digits/lowercase mix
		"-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
		"Paste your key between -----BEGIN PRIVATE KEY----- and -----END PRIVATE KEY----- markers.",
		string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
		"000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000", "078-05-1120", "123-45-6789",
		"4111 1111 1111 1112", // Luhn fails
		"1234 5678 9012 3456", // no network starts with 1
		"4111-1111 1111-1111", // mixed separators
		"xoxb-notatoken", "glpat-short",
		// A routable GitLab token's shape with a wrong CRC, and with a wrong length field.
		"glpat-" + strings.Repeat("Ab3_", 9) + ".01.100000000", "glpat-" + strings.Repeat("Ab3_", 9) + ".01.0z" + GitLabRoutable("", strings.Repeat("Ab3_", 9))[len(strings.Repeat("Ab3_", 9))+6:],
	}
	return out
}

// benignCorpus returns realistic payloads of the kinds a proxy forwards.
func benignCorpus() []string {
	r := mrand.New(mrand.NewPCG(1, 2))
	hexs := "0123456789abcdef"
	uuid := func() string {
		return randFrom(r, hexs, 8) + "-" + randFrom(r, hexs, 4) + "-4" + randFrom(r, hexs, 3) + "-a" + randFrom(r, hexs, 3) + "-" + randFrom(r, hexs, 12)
	}
	var out []string
	for k := range 300 {
		ts := 1733400000 + int64(k)*7919
		out = append(out, fmt.Sprintf(`{"id":"%s","created_at":"2026-12-%02dT%02d:%02d:%02d.%03dZ","ts":%d,"ts_ms":%d,"ts_ns":%d,"amount":%d.%02d,"currency":"EUR","count":%d,"ratio":0.%d,"user":{"id":%d,"name":"user%d","email":"u%d@example.com","phone":"+1-415-555-%04d"},"tags":["a","b"],"etag":"W/\"%s\""}`,
			uuid(), 1+k%28, k%24, k%60, (k*7)%60, k%1000, ts, ts*1000+int64(k), ts*1e9+int64(k)*13, r.IntN(100000), r.IntN(100), r.IntN(1000), r.Uint64()%1e15, r.IntN(1e9), k, k, r.IntN(10000), randFrom(r, hexs, 32)))
		out = append(out, "traceparent: 00-"+randFrom(r, hexs, 32)+"-"+randFrom(r, hexs, 16)+"-01\n"+
			fmt.Sprintf("x-datadog-trace-id: %d\nx-datadog-parent-id: %d\nx-b3-traceid: %s\nx-request-id: %s\n", r.Uint64()>>1, r.Uint64()>>1, randFrom(r, hexs, 32), uuid()))
		out = append(out, "commit "+randFrom(r, hexs, 40)+"\nparent "+randFrom(r, hexs, 40)+"\ntree "+randFrom(r, hexs, 40)+"\nsha256:"+randFrom(r, hexs, 64))
		blob := make([]byte, 600+r.IntN(3000))
		for i := range blob {
			blob[i] = byte(r.Uint32())
		}
		out = append(out, `{"file":"`+base64.StdEncoding.EncodeToString(blob)+`","url":"`+base64.URLEncoding.EncodeToString(blob[:300])+`"}`)
		out = append(out, fmt.Sprintf("Call (415) 555-%04d or +44 20 7946 %04d, fax 1-800-555-%04d; order #%d shipped %d-%02d-%02d 10:%02d:%02d; ISBN 978-3-16-148410-%d; IBAN DE89 3704 0044 0532 0130 00; version 1.%d.%d; ip 10.%d.%d.%d; port %d",
			r.IntN(10000), r.IntN(10000), r.IntN(10000), r.IntN(1e8), 2020+r.IntN(7), 1+r.IntN(12), 1+r.IntN(28), r.IntN(60), r.IntN(60), r.IntN(10), r.IntN(30), r.IntN(30), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(65536)))
		out = append(out, minifiedJS(r))
	}
	out = append(out,
		"AKIA is the prefix of long-term AWS access key ids; ASIA of temporary ones.",
		"Set aws_secret_access_key in ~/.aws/credentials; never commit it.",
		`{"secretAccessKey": null, "SecretAccessKey": ""}`,
		"xoxb- tokens are Slack bot tokens; ghp_ tokens are GitHub PATs; glpat- is GitLab's prefix.",
		"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY2VydGlmaWNhdGUgYm9keSBoZXJl\n-----END CERTIFICATE-----\n",
	)
	return out
}

// minifiedJS writes a stretch of minified-looking JavaScript: short
// identifiers, numeric literals, hex colors, base64 data URIs, regexes.
func minifiedJS(r *mrand.Rand) string {
	var b strings.Builder
	ids := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$"
	for range 40 {
		id := randFrom(r, ids, 1+r.IntN(2))
		switch r.IntN(7) {
		case 0:
			fmt.Fprintf(&b, "var %s=function(%s,%s){return %s[%d]|%s<<%d};", id, randFrom(r, ids, 1), randFrom(r, ids, 1), id, r.IntN(100), id, r.IntN(32))
		case 1:
			fmt.Fprintf(&b, "%s.style.color=\"#%s\";", id, randFrom(r, "0123456789abcdef", 6))
		case 2:
			fmt.Fprintf(&b, "%s=%d,%s=%d.%d;", id, r.IntN(1e9), randFrom(r, ids, 2), r.IntN(1000), r.IntN(1e6))
		case 3:
			fmt.Fprintf(&b, "if(!/^[A-Za-z0-9_-]{%d,}$/.test(%s))throw new Error(\"invalid\");", 1+r.IntN(40), id)
		case 4:
			fmt.Fprintf(&b, "%s.src=\"data:image/png;base64,%s\";", id, randFrom(r, alnum+"+/", 80))
		case 5:
			fmt.Fprintf(&b, "for(var %s=0;%s<%d;%s++)%s[%s]=%s^0x%s;", id, id, r.IntN(1e4), id, randFrom(r, ids, 1), id, id, randFrom(r, "0123456789abcdef", 8))
		default:
			fmt.Fprintf(&b, "%s.exports={%s:%q};", id, randFrom(r, ids, 3), randFrom(r, alnum, 12+r.IntN(30)))
		}
	}
	return b.String()
}
