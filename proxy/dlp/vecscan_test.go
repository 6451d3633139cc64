package dlp

import (
	"bytes"
	mrand "math/rand/v2"
	"slices"
	"testing"
)

// testPatterns are custom patterns beside the built-in detectors: a
// literal start and a case-insensitive one (its case variants are
// keywords).
var testPatterns = []PatternConfig{
	{Name: "internal_id", Regex: "ACME-[0-9]{8}"},
	{Name: "confidential", Regex: `(?i)confidential\b`},
}

// scanPaths compiles the built-in detectors and testPatterns three ways:
// the vector scan with the kernel this CPU runs, the vector scan with the
// reference kernel, and the samplers.
func scanPaths(t testing.TB) map[string]*Matcher {
	t.Helper()
	var dets []detector
	for _, n := range BuiltinDetectors {
		if d, ok := builtin(n); ok {
			dets = append(dets, d)
		}
	}
	for _, p := range testPatterns {
		d, err := compilePattern(p.Name, p.Regex)
		if err != nil {
			t.Fatal(err)
		}
		dets = append(dets, d)
	}
	out := map[string]*Matcher{
		"vector-ref": newMatcherKernel(dets, true, true, vecScanRef),
		"samplers":   newMatcherKernel(dets, true, true, nil),
	}
	if haveVecKernel {
		out["vector"] = newMatcherKernel(dets, true, true, vecKernel)
	}
	for name, m := range out {
		if name != "samplers" && m.vec == nil {
			t.Fatalf("%s: no vector plan", name)
		}
	}
	return out
}

// bruteFindings is what a scan of data must find: every keyword
// occurrence and every position verified, in one buffer.
func bruteFindings(m *Matcher, data []byte) []Finding {
	var out []Finding
	add := func(name string, off int) {
		f := Finding{Detector: name, Part: PartBody, Offset: int64(off)}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	for _, d := range m.dets {
		for _, kw := range d.keywords {
			for i := 0; i < len(data); i++ {
				j := bytes.Index(data[i:], []byte(kw))
				if j < 0 {
					break
				}
				i += j
				if start, r := d.verify(data, i, len(kw), true); r == matched {
					add(d.name, start)
				}
			}
		}
	}
	for i := range data {
		if name, r := verifyDigits(data, i, true); r == matched {
			add(name, i)
		}
	}
	return sortFindings(out)
}

// denseAlphabets turn random bytes into text where digit stretches and
// keyword windows are frequent.
var denseAlphabets = []string{
	"0123456789 -",
	"0123456789-- 4",
	"0123456789 -.a",
	"AKIASghp_-xob0123456789",
	"ACME-0123456789 confidentialCONFIDENTIAL",
	"-----BEGIN RSA PRIVATE KEY\\n0123456789",
}

func densify(data []byte, alpha uint8) []byte {
	if alpha == 0 {
		return data
	}
	a := denseAlphabets[int(alpha-1)%len(denseAlphabets)]
	out := make([]byte, len(data))
	for i, c := range data {
		out[i] = a[int(c)%len(a)]
	}
	return out
}

// checkKernel runs the kernel this CPU has over every whole block of b and
// compares each answer with the reference's.
func checkKernel(t *testing.T, tab *vecTables, b []byte) {
	t.Helper()
	if !haveVecKernel {
		return
	}
	from := 2
	to := from + max(len(b)-vecReach+32-from, 0)/32*32
	for i := from; i < to; {
		off, kw, dig := vecKernel(tab, b, i, to)
		roff, rkw, rdig := vecScanRef(tab, b, i, to)
		if off != roff || kw != rkw || dig != rdig {
			t.Fatalf("%q from %d: kernel (%d, %032b, %032b), reference (%d, %032b, %032b)", b, i, off, kw, dig, roff, rkw, rdig)
		}
		i = off + 32
	}
}

// FuzzVecKernel: the assembly kernel gives the definition's verdict on
// every position.
func FuzzVecKernel(f *testing.F) {
	f.Add([]byte("xx 4111 1111 1111 1111 and 123-45-6780 AKIAQQQQ ghp_ xoxb-1 -----BEGIN 1-415-555-1234 12-34-56-78-90-12"), uint8(0))
	f.Add(bytes.Repeat([]byte{0xff, '0', '-'}, 40), uint8(1))
	f.Add([]byte("some 0123456789 random 99999999999 words"), uint8(3))
	m := scanPaths(f)["vector-ref"]
	f.Fuzz(func(t *testing.T, data []byte, alpha uint8) {
		data = densify(data, alpha)
		checkKernel(t, &m.vec.tab, data)
		noDigits := m.vec.tab
		noDigits.digs = 0
		checkKernel(t, &noDigits, data)
	})
}

func TestVecKernelRandom(t *testing.T) {
	if !haveVecKernel {
		t.Log("no AVX2 here: the samplers and the reference kernel are tested")
	}
	m := scanPaths(t)["vector-ref"]
	r := mrand.New(mrand.NewPCG(5, 6))
	for n := 0; n < 3000; n++ {
		data := make([]byte, 40+r.IntN(300))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		checkKernel(t, &m.vec.tab, densify(data, uint8(n%(len(denseAlphabets)+1))))
	}
}

// checkPaths scans data with each path, whole and cut at cuts, and
// compares with the brute force.
func checkPaths(t *testing.T, paths map[string]*Matcher, data []byte, cuts []int) {
	t.Helper()
	want := bruteFindings(paths["samplers"], data)
	if len(want) >= maxFindings {
		return // which findings are kept past the bound depends on order
	}
	for name, m := range paths {
		if got := sortFindings(m.scanAll(data, PartBody, "")); !slices.Equal(got, want) {
			t.Fatalf("%s, %q whole: %v, brute force %v", name, data, got, want)
		}
		if got := chunked(m, data, cuts); !slices.Equal(got, want) {
			t.Fatalf("%s, %q cut at %v: %v, brute force %v", name, data, cuts, got, want)
		}
	}
}

// FuzzScanPaths: the vector scan (with the kernel this CPU runs and with
// the reference) and the samplers find exactly what a brute-force scan
// finds, in one buffer or cut anywhere.
func FuzzScanPaths(f *testing.F) {
	for _, c := range secretCorpus(f) {
		f.Add([]byte("x "+c.body+" y"), uint64(7), uint16(13), uint8(0))
	}
	f.Add([]byte("4111 1111 1111 1111 and 123-45-6780, ACME-12345678 Confidential."), uint64(1), uint16(3), uint8(0))
	f.Add([]byte("0123456789012345678901234567890123456789"), uint64(2), uint16(50), uint8(1))
	paths := scanPaths(f)
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, step uint16, alpha uint8) {
		data = densify(data, alpha)
		var cuts []int
		s := int(step%97) + 1
		for c, k := 0, seed; c < len(data); k = k*6364136223846793005 + 1442695040888963407 {
			c += 1 + int(k>>33)%s
			cuts = append(cuts, c)
		}
		checkPaths(t, paths, data, cuts)
	})
}

func TestScanPathsRandom(t *testing.T) {
	paths := scanPaths(t)
	r := mrand.New(mrand.NewPCG(8, 9))
	for n := 0; n < 400; n++ {
		data := make([]byte, 20+r.IntN(600))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		data = densify(data, uint8(n%(len(denseAlphabets)+1)))
		var cuts []int
		for c := r.IntN(64) + 1; c < len(data); c += r.IntN(64) + 1 {
			cuts = append(cuts, c)
		}
		checkPaths(t, paths, data, cuts)
	}
	for _, c := range secretCorpus(t) {
		data := []byte("prefix 4111 1111 1111 1111 " + c.body + " 123-45-6780 suffix")
		checkPaths(t, paths, data, []int{len(data) / 3, len(data) / 2})
	}
}
