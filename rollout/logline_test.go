package rollout

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// realLine is an access line as egressd writes it (cmd/egressd's encoder).
const realLine = `{"ts":"2026-11-25T10:00:00.123456789Z","listener":"connect","client":"10.0.1.7","user":"","group":"web","host":"github.com","port":443,"sni":"github.com","ip":"140.82.121.4","decision":"allow","rule":"github","reason":"","status":200,"bytes_up":517,"bytes_down":4812,"duration_ms":92}`

type lineFields struct {
	TS, Listener, Client, User, Group, Host, IP, Decision, Rule, Reason string
	Port                                                                int
}

func fieldsOf(l *Line) lineFields {
	return lineFields{string(l.TS), string(l.Listener), string(l.Client), string(l.User), string(l.Group),
		string(l.Host), string(l.IP), string(l.Decision), string(l.Rule), string(l.Reason), l.Port}
}

// reference decodes with encoding/json: strings of the contract keys, the
// port when it is an integer 0..65535.
func reference(b []byte) (lineFields, bool) {
	if !json.Valid(b) || !strings.HasPrefix(strings.TrimLeft(string(b), " \t\r\n"), "{") {
		return lineFields{}, false
	}
	var m map[string]any
	var typeErr *json.UnmarshalTypeError
	if err := json.Unmarshal(b, &m); err != nil && !errors.As(err, &typeErr) { // 1e400 is valid JSON, not a float64
		return lineFields{}, false
	}
	s := func(k string) string { v, _ := m[k].(string); return v }
	f := lineFields{TS: s("ts"), Listener: s("listener"), Client: s("client"), User: s("user"), Group: s("group"),
		Host: s("host"), IP: s("ip"), Decision: s("decision"), Rule: s("rule"), Reason: s("reason"), Port: -1}
	if p, ok := m["port"].(float64); ok && p >= 0 && p <= 65535 && p == math.Trunc(p) {
		f.Port = int(p)
	}
	return f, true
}

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
		want lineFields
	}{
		{"real line", realLine, true, lineFields{TS: "2026-11-25T10:00:00.123456789Z", Listener: "connect", Client: "10.0.1.7",
			Group: "web", Host: "github.com", IP: "140.82.121.4", Decision: "allow", Rule: "github", Port: 443}},
		{"crlf", `{"host":"a.test","port":80}` + "\r\n", true, lineFields{Host: "a.test", Port: 80}},
		{"escapes", `{"user":"a\"b\\c\u00e9\ud83d\ude00\ud800x","host":"h"}`, true, lineFields{User: "a\"b\\cé😀\uFFFDx", Host: "h", Port: -1}},
		{"invalid utf-8 becomes U+FFFD", "{\"user\":\"a\xffb\"}", true, lineFields{User: "a\uFFFDb", Port: -1}},
		{"nested values skipped", `{"x":{"a":[1,2,{"b":null}],"c":true},"host":"h","port":8080}`, true, lineFields{Host: "h", Port: 8080}},
		{"non-string contract key", `{"host":42,"port":"443"}`, true, lineFields{Port: -1}},
		{"last duplicate wins", `{"host":"a","host":"b"}`, true, lineFields{Host: "b", Port: -1}},
		{"port out of range", `{"port":70000}`, true, lineFields{Port: -1}},
		{"port with fraction", `{"port":443.5}`, true, lineFields{Port: -1}},
		{"empty object", `{}`, true, lineFields{Port: -1}},
		{"diagnostic text", `SCHED 1000ms: gomaxprocs=2`, false, lineFields{}},
		{"array", `[1]`, false, lineFields{}},
		{"truncated", realLine[:100], false, lineFields{}},
		{"trailing garbage", `{"host":"a"} x`, false, lineFields{}},
		{"control char in string", "{\"host\":\"a\tb\"}", false, lineFields{}},
		{"bad escape", `{"host":"a\qb"}`, false, lineFields{}},
		{"leading zero", `{"port":0443}`, false, lineFields{}},
		{"missing colon", `{"host" "a"}`, false, lineFields{}},
		{"trailing comma", `{"host":"a",}`, false, lineFields{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var l Line
			err := l.Parse([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("Parse(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, fieldsOf(&l)); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
			if ref, ok := reference([]byte(tt.in)); !ok || ref != tt.want {
				t.Errorf("encoding/json disagrees with the table: %+v %v", ref, ok)
			}
		})
	}
}

func TestParseLineAllocs(t *testing.T) {
	var l Line
	b := []byte(realLine)
	if n := testing.AllocsPerRun(100, func() {
		if err := l.Parse(b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Parse allocates %v times per line, want 0", n)
	}
}

// FuzzParseLine is a differential test against encoding/json: the fast
// parser accepts exactly the JSON objects encoding/json accepts, and reads
// the same values.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{realLine, `{}`, `{"host":"a\u0041","port":1e2}`, `{"a":[{"b":[]}],"port":65535}`,
		"{\"user\":\"\xed\xa0\x80\"}", `{"user":"\ud83d\u0041"}`, `{"port":-0}`, `  {"host":""}  `, `{"x":01}`,
		`{"x":1.}`, `{"x":-}`, `{"x":1e}`, `{"port":1e400}`, `{"x":tru}`, `{"x":"\u12"}`, strings.Repeat("[", 20)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var l Line
		err := l.Parse(b)
		ref, ok := reference(b)
		if (err == nil) != ok {
			var anyVal any
			jerr := json.Unmarshal(b, &anyVal)
			t.Fatalf("Parse(%q) error %v; encoding/json ok=%v (%v)", b, err, ok, jerr)
		}
		if err != nil {
			return
		}
		if got := fieldsOf(&l); got != ref {
			t.Fatalf("Parse(%q):\n got %+v\nwant %+v", b, got, ref)
		}
	})
}
