package dlp

import (
	"slices"
	"strings"
	"testing"
)

func allDetectors(t testing.TB) *Matcher {
	t.Helper()
	m, err := compileMatcher(BuiltinDetectors, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// forceFallback makes what compiles during the test scan as on a CPU
// without the vector kernel (not amd64, or no AVX2): with the samplers.
func forceFallback(t testing.TB) {
	was := haveVecKernel
	haveVecKernel = false
	t.Cleanup(func() { haveVecKernel = was })
}

// eachScanner runs f with the built-in detectors compiled as this CPU
// scans them and as the fallback does.
func eachScanner(t *testing.T, f func(t *testing.T, m *Matcher)) {
	t.Run("default", func(t *testing.T) {
		m := allDetectors(t)
		if haveVecKernel && m.vec == nil {
			t.Fatal("the CPU has the vector kernel; the matcher does not use it")
		}
		f(t, m)
	})
	t.Run("fallback", func(t *testing.T) {
		forceFallback(t)
		m := allDetectors(t)
		if m.vec != nil {
			t.Fatal("forced fallback: the matcher still scans with the vector kernel")
		}
		f(t, m)
	})
}

func TestSecretCorpusAllFound(t *testing.T) {
	eachScanner(t, func(t *testing.T, m *Matcher) {
		cases := secretCorpus(t)
		const want = 74
		if len(cases) != want {
			t.Fatalf("secret corpus has %d cases, want %d", len(cases), want)
		}
		for _, c := range cases {
			got := m.scanAll([]byte(c.body), PartBody, "")
			if !slices.ContainsFunc(got, func(f Finding) bool { return f.Detector == c.detector }) {
				t.Errorf("%s: %s not found (findings %v)", c.name, c.detector, got)
			}
			for _, f := range got {
				if f.Detector != c.detector && !strings.Contains(c.name, "ini") { // the ini file holds a key id too
					t.Errorf("%s: extra finding %v", c.name, f)
				}
			}
		}
	})
}

func TestNearMissesNotFound(t *testing.T) {
	eachScanner(t, func(t *testing.T, m *Matcher) {
		for _, s := range nearMisses(t) {
			if got := m.scanAll([]byte(s), PartBody, ""); len(got) > 0 {
				t.Errorf("%.60q: unexpected findings %v", s, got)
			}
		}
	})
}

func TestBenignCorpusNoFinding(t *testing.T) {
	eachScanner(t, func(t *testing.T, m *Matcher) {
		corpus := benignCorpus()
		const want = 1805
		if len(corpus) != want {
			t.Fatalf("benign corpus has %d payloads, want %d", len(corpus), want)
		}
		total := 0
		for _, s := range corpus {
			total += len(s)
			if got := m.scanAll([]byte(s), PartBody, ""); len(got) > 0 {
				t.Errorf("%.200q: unexpected findings %v", s, got)
			}
		}
		t.Logf("%d benign payloads, %d bytes, no finding", len(corpus), total)
	})
}

// Offsets are exact: a secret placed at a known position is reported there.
func TestFindingOffset(t *testing.T) {
	eachScanner(t, func(t *testing.T, m *Matcher) {
		body := strings.Repeat("x", 1000) + " AKIA" + strings.Repeat("Q", 16) + " "
		got := m.scanAll([]byte(body), PartBody, "")
		if len(got) != 1 || got[0].Offset != 1001 || got[0].Location() != "body:1001" {
			t.Fatalf("got %v, want one aws_access_key at body:1001", got)
		}
	})
}

// chunked scans data cut at the given offsets.
func chunked(m *Matcher, data []byte, cuts []int) []Finding {
	s := m.NewStream(PartBody, "")
	prev := 0
	for _, c := range cuts {
		if c <= prev || c >= len(data) {
			continue
		}
		s.Write(data[prev:c])
		prev = c
	}
	s.Write(data[prev:])
	s.Close()
	return sortFindings(s.found)
}

func sortFindings(f []Finding) []Finding {
	f = slices.Clone(f)
	slices.SortFunc(f, func(a, b Finding) int {
		if a.Offset != b.Offset {
			return int(a.Offset - b.Offset)
		}
		return strings.Compare(a.Detector, b.Detector)
	})
	return f
}

// Every secret is found at the same offset wherever the stream is cut,
// byte by byte included.
func TestChunkBoundaries(t *testing.T) {
	eachScanner(t, func(t *testing.T, m *Matcher) {
		for _, c := range secretCorpus(t) {
			data := []byte("prefix " + c.body + " suffix")
			whole := sortFindings(m.scanAll(data, PartBody, ""))
			for cut := 1; cut < len(data); cut++ {
				if got := chunked(m, data, []int{cut}); !slices.Equal(got, whole) {
					t.Fatalf("%s cut at %d: %v, whole buffer %v", c.name, cut, got, whole)
				}
			}
			every := make([]int, len(data))
			for i := range every {
				every[i] = i
			}
			if got := chunked(m, data, every); !slices.Equal(got, whole) {
				t.Fatalf("%s byte by byte: %v, whole buffer %v", c.name, got, whole)
			}
		}
	})
}

func TestCustomPatterns(t *testing.T) {
	m, err := compileMatcher(nil, []PatternConfig{
		{Name: "internal_id", Regex: "ACME-[0-9]{8}"},
		{Name: "confidential", Regex: `(?i)confidential\b`},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := m.scanAll([]byte("ref ACME-12345678 and ACME-1234 and CONFIDENTIAL; Confidentiality"), PartBody, "")
	want := []Finding{{Detector: "internal_id", Offset: 4}, {Detector: "confidential", Offset: 36}}
	if !slices.Equal(sortFindings(got), want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"[0-9]{8}", "AB[", "(?i)ab.*"} {
		if _, err := compilePattern("x", bad); err == nil {
			t.Errorf("%q: compiled, want an error", bad)
		}
	}
}
