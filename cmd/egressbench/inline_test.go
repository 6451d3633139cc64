package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// inlineRun is one `go test -bench BenchmarkInlineTunnel -count 1` output,
// as test/inline_bench_test.go prints it.
func inlineRun(connectMs, inlineMs float64) string {
	return fmt.Sprintf("goos: linux\ngoarch: amd64\npkg: github.com/egressd/egressd/test\ncpu: AMD EPYC\n"+
		"BenchmarkInlineTunnel/connect-2         \t    2000\t    582349 ns/op\t       %.1f egressd-cpu-ms/1k\n"+
		"BenchmarkInlineTunnel/inline-2          \t    2000\t    716945 ns/op\t       %.1f egressd-cpu-ms/1k\t         %.3f x-connect-cpu\n"+
		"PASS\nok  \tgithub.com/egressd/egressd/test\t3.173s\n", connectMs, inlineMs, inlineMs/connectMs)
}

func TestParseInlineBench(t *testing.T) {
	t.Parallel()
	got := parseInlineBench(inlineRun(330, 300) + inlineRun(310, 290) +
		// A run that failed before its figures, and an unrelated benchmark.
		"--- FAIL: BenchmarkInlineTunnel\nFAIL\nBenchmarkOther-2 10 5 ns/op 1.0 egressd-cpu-ms/1k\n")
	want := inlineRuns{Connect: []float64{0.33, 0.31}, Inline: []float64{0.3, 0.29}, Tunnels: []int{2000, 2000}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseInlineBench (-want +got):\n%s", diff)
	}
}

// The in-line section: medians of both paths, the ratio of the medians
// judged against issue 21's 10%, the paired ratio by run; no section when
// the run had no in-line step, and "not measured" when the step produced
// no figures.
func TestReportInline(t *testing.T) {
	t.Parallel()
	write := func(out string) string {
		var md bytes.Buffer
		if err := writeMarkdown(&md, newDataset(syntheticResults()), reportMeta{Inline: out}, ""); err != nil {
			t.Fatal(err)
		}
		return md.String()
	}
	const title = "## In-line TLS tunnels against CONNECT (issue 21)"
	tests := []struct {
		name, out string
		want      []string
	}{
		{name: "met", out: inlineRun(330, 300) + inlineRun(310, 330) + inlineRun(400, 360),
			// Medians 0.330 and 0.330; pairs 0.909, 1.065, 0.9.
			want: []string{title, "| CPU s per 1,000 new TLS tunnels | 2000 | **0.330** (0.330, 0.310, 0.400) | **0.330** (0.300, 0.330, 0.360) | 1.00 | 0.91 | ≤ 1.10 | met |"}},
		{name: "missed", out: inlineRun(300, 340) + inlineRun(300, 360),
			want: []string{title, "| **0.300** (0.300, 0.300) | **0.350** (0.340, 0.360) | 1.17 | 1.17 | ≤ 1.10 | missed |"}},
		{name: "failed run", out: "--- FAIL: BenchmarkInlineTunnel\n    inline_bench_test.go:40: listen: address in use\nFAIL\n",
			want: []string{title, "Not measured: the benchmark's output has no CONNECT and in-line figures"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			md := write(tc.out)
			for _, w := range tc.want {
				if !strings.Contains(md, w) {
					t.Errorf("report lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("report:\n%s", md)
			}
		})
	}
	if md := write(""); strings.Contains(md, title) {
		t.Error("an in-line section without an in-line run")
	}
}

// make bench with BENCH_KINDS=inline runs no egressbench sessions: the
// report is written from the in-line output alone; with neither, it is
// refused.
func TestReportMainInlineOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inline := filepath.Join(dir, "inline-gobench.txt")
	if err := os.WriteFile(inline, []byte(inlineRun(330, 300)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "benchmarks.md")
	args := []string{"-in", filepath.Join(dir, "*.json"), "-out", out, "-svg", filepath.Join(dir, "benchmarks.svg")}
	if err := reportMain(append(args, "-inline", inline), nil); err != nil {
		t.Fatalf("report with in-line output only: %v", err)
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "| CPU s per 1,000 new TLS tunnels | 2000 | 0.330 | 0.300 | 0.91 | 0.91 | ≤ 1.10 | met |"; !strings.Contains(string(md), want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
	if err := reportMain(append(args, "-inline", filepath.Join(dir, "absent.txt")), nil); err == nil || !strings.Contains(err.Error(), "no result files match") {
		t.Errorf("report with no results at all: err = %v, want no result files match", err)
	}
}
