package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestComparison(t *testing.T) {
	t.Parallel()
	cpu := figure{Lower: true, CPU: true}
	rate := figure{}
	tests := []struct {
		name    string
		f       figure
		eg, pe  float64
		verdict string
	}{
		{name: "cpu lead", f: cpu, eg: 0.4, pe: 0.8, verdict: "lead"},
		{name: "cpu lead under 15% is none", f: cpu, eg: 0.9, pe: 1.0, verdict: "no lead (<15%)"},
		{name: "cpu slightly behind is none either", f: cpu, eg: 1.1, pe: 1.0, verdict: "no lead (<15%)"},
		{name: "cpu behind", f: cpu, eg: 1.2, pe: 1.0, verdict: "behind"},
		{name: "rate lead", f: rate, eg: 2000, pe: 1000, verdict: "lead"},
		{name: "rate even", f: rate, eg: 1010, pe: 1000, verdict: "even (<5%)"},
		{name: "rate behind", f: rate, eg: 500, pe: 1000, verdict: "behind"},
		{name: "zero peer", f: cpu, eg: 1, pe: 0, verdict: "n/a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, v := comparison(tc.f, tc.eg, tc.pe)
			if v != tc.verdict {
				t.Errorf("comparison(%v, %v) verdict = %q, want %q", tc.eg, tc.pe, v, tc.verdict)
			}
			if tc.pe != 0 && math.Abs(r-tc.eg/tc.pe) > 1e-12 {
				t.Errorf("ratio = %v, want %v", r, tc.eg/tc.pe)
			}
		})
	}
}

func TestGoBenchCell(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, value, met string
	}{
		{name: "met", in: "goos: linux\nBenchmarkMatch100kHosts-2   \t 5000000\t       231.5 ns/op\t       0 B/op\t       0 allocs/op\nPASS\n",
			value: "BenchmarkMatch100kHosts-2: 232 ns/op, 0 allocs/op", met: "met"},
		{name: "allocates", in: "BenchmarkDecide100k-2 100 900 ns/op 16 B/op 1 allocs/op", value: "BenchmarkDecide100k-2: 900 ns/op, 1 allocs/op", met: "missed"},
		{name: "slow", in: "BenchmarkMatch100kHosts 100 1500 ns/op 0 B/op 0 allocs/op", value: "BenchmarkMatch100kHosts: 1500 ns/op, 0 allocs/op", met: "missed"},
		{name: "absent", in: "BenchmarkOther 1 1 ns/op", value: "not measured", met: "not measured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, m := goBenchCell(tc.in)
			if diff := cmp.Diff([]string{tc.value, tc.met}, []string{v, m}); diff != "" {
				t.Errorf("goBenchCell (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr(v float64) *float64 { return &v }

// syntheticResults is two runs of egressd and squid plus direct, with
// egressd ahead on bulk CPU and behind on new tunnels.
func syntheticResults() []*Result {
	var rs []*Result
	for run := 1; run <= 2; run++ {
		for _, p := range []struct {
			label            string
			bulkCPU, tunCPU  float64
			kibIdle, fdsIdle float64
		}{
			{"egressd", 0.2, 0.5, 10, 2},
			{"squid", 0.5, 0.2, 31, 2},
		} {
			for _, s := range bulkScenarios {
				rs = append(rs, &Result{Label: p.label, Kind: kindConnect, Run: run, Scenario: s, Bytes: 1 << 30, MiBPerSec: 1000, Seconds: 1, ProxyCPUSec: ptr(p.bulkCPU)})
			}
			rs = append(rs,
				&Result{Label: p.label, Kind: kindConnect, Run: run, Scenario: "tunnels", Ops: 1000, OpsPerSec: 5000, Seconds: 0.2, ProxyCPUSec: ptr(p.tunCPU), ProxyCPUPer1000: ptr(p.tunCPU)},
				&Result{Label: p.label, Kind: kindConnect, Run: run, Scenario: "idle", Idle: &IdleResult{Tunnels: 3000, KiBPerTunnel: p.kibIdle, FDsPerTunnel: p.fdsIdle}},
			)
		}
		rs = append(rs, &Result{Label: kindDirect, Kind: kindDirect, Run: run, Scenario: "bulk_down_8", Bytes: 1 << 30, MiBPerSec: 5000, Seconds: 0.2})
		for label, cpu := range map[string]float64{"egressd": 0.03, "squid": 0.08} {
			rs = append(rs, &Result{Label: label, Kind: kindCache, Run: run, Scenario: "cache_hit_1k", Ops: 1000, Seconds: 1, ProxyCPUSec: ptr(cpu), ProxyCPUPer1000: ptr(cpu)})
		}
	}
	rs = append(rs, &Result{Label: "squid", Kind: kindHTTP, Run: 1, Scenario: "forward", Ops: 10, Errors: 3, FirstError: "boom", TimeBound: true})
	return rs
}

func TestReport(t *testing.T) {
	t.Parallel()
	d := newDataset(syntheticResults())
	if diff := cmp.Diff([]float64{0.2, 0.2}, d.values(seriesKey{"egressd", kindConnect}, figBulkCPU)); diff != "" {
		t.Errorf("bulk CPU per GiB (-want +got):\n%s", diff)
	}
	var md bytes.Buffer
	if err := writeMarkdown(&md, d, reportMeta{Lines: []string{"go: go1.26"}, Commands: "make bench"}, "benchmarks.svg"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| CPU s per GiB tunneled (all 4 bulk scenarios) (CONNECT) | smokescreen ~0.8, Squid ~1.1 | squid 0.500 | 0.200 | 0.40 (lead) | ≤ 0.45 | met |",
		"| CPU s per 1,000 new tunnels (CONNECT) | Squid ~0.21, smokescreen ~0.29 | squid 0.200 | 0.500 | 2.50 (behind) | ≤ 0.15 | missed |",
		"| KiB of RSS per idle tunnel | smokescreen ~25, Squid ~31 | squid 31.0 | 10.0 | 0.32 (lead) | ≤ 12 | met |",
		"| egressd (connect) |",
		"| HTTP cache: CPU s per 1,000 cache hits (1 KiB) | Squid's memory cache | squid 0.0800 | 0.0300 | 0.38 (lead) | ≤ 0.5 × best peer = 0.0400 | met |",
		"| egressd (cache) |",
		"**0.200** (0.200, 0.200)",
		"squid (http) run 1 forward: 3 errors (first: boom)",
		"- go: go1.26",
		"![headline figures](benchmarks.svg)",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", md.String())
	}
	var svg bytes.Buffer
	if err := writeSVG(&svg, d); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
	}
}

// TestPairedRatio: the paired ratio is the median of per-round ratios, over
// the rounds both series ran, not the ratio of the medians.
func TestPairedRatio(t *testing.T) {
	t.Parallel()
	var rs []*Result
	add := func(label string, run int, cpu float64) {
		rs = append(rs, &Result{Label: label, Kind: kindConnect, Run: run, Scenario: "tunnels", Ops: 1000, ProxyCPUPer1000: ptr(cpu)})
	}
	for i, v := range []float64{0.10, 0.20, 0.30, 0.50} {
		add("egressd", i+1, v)
	}
	for i, v := range []float64{0.30, 0.12, 0.40} { // no round 4
		add("squid", i+1, v)
	}
	d := newDataset(rs)
	got, ok := d.pairedRatio(seriesKey{"egressd", kindConnect}, seriesKey{"squid", kindConnect}, figTunCPU)
	// Rounds 1-3: 0.10/0.30, 0.20/0.12, 0.30/0.40 -> median 0.75.
	if !ok || math.Abs(got-0.75) > 1e-9 {
		t.Fatalf("paired ratio %v, %v; want 0.75", got, ok)
	}
	if _, ok := d.pairedRatio(seriesKey{"egressd", kindConnect}, seriesKey{"dante", kindConnect}, figTunCPU); ok {
		t.Fatal("a paired ratio against a series with no rounds")
	}
}

// TestReportDNSQueries: the TLS tables show DNS queries per tunnel for
// every series, egressd on its default DNS path (egressd-sysdns) shows only
// in the tables it ran for, and it is never the "best peer" egressd is
// compared with.
func TestReportDNSQueries(t *testing.T) {
	t.Parallel()
	rs := syntheticResults()
	for run := 1; run <= 2; run++ {
		for _, p := range []struct {
			label string
			dns   int64
			cpu   float64
		}{{"egressd", 2, 0.3}, {sysdnsLabel, 4, 0.1}, {"squid", 2, 0.5}, {"smokescreen", 4000, 0.6}} {
			rs = append(rs, &Result{Label: p.label, Kind: kindConnect, Run: run, Scenario: "tls_tunnels", Ops: 2000, OpsPerSec: 1000,
				Seconds: 2, DNSQueries: p.dns, ProxyCPUSec: ptr(p.cpu * 2), ProxyCPUPer1000: ptr(p.cpu)})
		}
	}
	d := newDataset(rs)
	var md bytes.Buffer
	if err := writeMarkdown(&md, d, reportMeta{}, ""); err != nil {
		t.Fatal(err)
	}
	out := md.String()
	for _, want := range []string{
		"| DNS queries per tunnel |",
		"| **0.300** (0.300, 0.300) | **0.0010** (0.0010, 0.0010) |",
		"| **0.100** (0.100, 0.100) | **0.0020** (0.0020, 0.0020) |",
		"| **0.600** (0.600, 0.600) | **2.0000** (2.0000, 2.0000) |",
		"| egressd-sysdns (connect) | **1000** (1000, 1000) |",
		// The best peer for TLS CPU is squid (0.5), not egressd-sysdns (0.1).
		"| CPU s per 1,000 new TLS tunnels by name (CONNECT) | Squid ~0.44, smokescreen ~0.65 | squid 0.500 | 0.300 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	bulk := out[strings.Index(out, "## Bulk tunnel throughput"):]
	bulk = bulk[:strings.Index(bulk[3:], "\n## ")+3]
	if strings.Contains(bulk, sysdnsLabel) {
		t.Errorf("egressd-sysdns has a row in the bulk table, where it has no figure:\n%s", bulk)
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	}
}

// The DLP targets: the inspected/uninspected ratio is paired by round, the
// ICAP comparison is strict, and the held upload is shown against
// max_scan_bytes.
func TestDLPTargets(t *testing.T) {
	t.Parallel()
	cpu := func(v float64) *float64 { return &v }
	var rs []*Result
	add := func(label, scen string, run int, c float64) {
		rs = append(rs, &Result{Label: label, Kind: kindHTTP, Run: run, Scenario: scen, Ops: 100, ProxyCPUPer1000: cpu(c)})
	}
	for run, f := range []float64{1, 2} { // round 2 twice as slow for every proxy
		add("egressd", "post_1m", run+1, 1.0*f)
		add(labelDLP, "post_1m", run+1, 1.4*f)
		add("egressd", "post_1k", run+1, 0.1*f)
		add(labelDLP, "post_1k", run+1, 0.11*f)
		add(labelICAP, "post_1m", run+1, 3*f)
		add(labelSquidICAP, "post_1m", run+1, 4*f)
		add(labelICAP, "post_1k", run+1, 0.2*f)
		add(labelSquidICAP, "post_1k", run+1, 0.2*f)
	}
	rs = append(rs, &Result{Label: labelDLP, Kind: kindHTTP, Run: 1, Scenario: "dlp_held", Held: &HeldResult{Uploads: 50, KiBPerUpload: 1070}})
	var out strings.Builder
	writeDLPTargets(func(f string, a ...any) { fmt.Fprintf(&out, f, a...) }, newDataset(rs))
	for _, want := range []string{
		"| built-in detectors: CPU per 1 MiB POST, inspected / uninspected | egressd-dlp 2.100 / egressd 1.500 = 1.40 (paired 1.40) | ≤ 1.5 | met |",
		"| ICAP path: CPU per 1 MiB POST, egressd / Squid, same c-icap | egressd-icap 4.500 / squid-icap 6.000 = 0.75 (paired 0.75) | < 1 | met |",
		"| ICAP path: CPU per 1 KiB POST, egressd / Squid, same c-icap | egressd-icap 0.3000 / squid-icap 0.3000 = 1.00 (paired 1.00) | < 1 | missed |",
		"| 1070 KiB = 1024 + 46 KiB | max_scan_bytes + a constant (≤ 256 KiB) | met |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}

// TestReportChain: egressd-chain's tunnels are compared with egressd's
// direct ones against issue 22's 10% target, and the table is left out
// when no chain run exists.
func TestReportChain(t *testing.T) {
	t.Parallel()
	rs := syntheticResults()
	var md bytes.Buffer
	if err := writeMarkdown(&md, newDataset(rs), reportMeta{}, ""); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(md.String(), "Tunnels through a parent proxy") {
		t.Error("a chain table without chain runs")
	}
	for run := 1; run <= 2; run++ {
		rs = append(rs,
			&Result{Label: chainLabel, Kind: kindConnect, Run: run, Scenario: "tunnels", Ops: 1000, Seconds: 0.2, ProxyCPUSec: ptr(0.54), ProxyCPUPer1000: ptr(0.54)},
			&Result{Label: chainLabel, Kind: kindConnect, Run: run, Scenario: "tunnels_paced", Ops: 1000, Seconds: 0.5, ProxyCPUSec: ptr(0.6), ProxyCPUPer1000: ptr(0.6)},
			&Result{Label: "egressd", Kind: kindConnect, Run: run, Scenario: "tunnels_paced", Ops: 1000, Seconds: 0.5, ProxyCPUSec: ptr(0.5), ProxyCPUPer1000: ptr(0.5)},
		)
	}
	md.Reset()
	if err := writeMarkdown(&md, newDataset(rs), reportMeta{}, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## Tunnels through a parent proxy (upstream_proxies)",
		"| CPU s per 1,000 new tunnels | 0.500 | 0.540 | 1.08 | 1.08 | ≤ 1.10 | met |",
		"| CPU s per 1,000 new tunnels at a fixed rate | 0.500 | 0.600 | 1.20 | 1.20 | ≤ 1.10 | missed |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// egressd-chain is egressd, never a peer.
	if strings.Contains(md.String(), "| egressd-chain 0.540") {
		t.Error("egressd-chain compared as a peer")
	}
	if strings.Contains(md.String(), "the floor") {
		t.Error("a floor table without floor results")
	}

	// With the floor's phases: what a tunnel through the parent adds at the
	// fixed rate, beside the floor (exchange_paced minus tick) and egressd's
	// extra beyond it (round 1: 100 - 60 = 40 us of 500; round 2: 100 - 70
	// = 30 us: medians 65 us floor, 7.0%).
	for run, paced := range map[int]float64{1: 0.080, 2: 0.090} {
		rs = append(rs,
			&Result{Label: floorLabel, Kind: floorKind, Run: run, Scenario: floorTick, Ops: 1000, ProxyCPUPer1000: ptr(0.020)},
			&Result{Label: floorLabel, Kind: floorKind, Run: run, Scenario: floorPaced, Ops: 1000, ProxyCPUPer1000: ptr(paced)},
			&Result{Label: floorLabel, Kind: floorKind, Run: run, Scenario: floorLoop, Ops: 1000, ProxyCPUPer1000: ptr(0.009)},
		)
	}
	md.Reset()
	if err := writeMarkdown(&md, newDataset(rs), reportMeta{}, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| egressd, direct tunnel | 500.0 |",
		"| egressd-chain, tunnel through the parent | 600.0 |",
		"| extra per tunnel through the parent | 100.0 |",
		"| the floor: one CONNECT and its answer with another process, at the same rate | 65.0 |",
		"| the floor with the process never idle (exchange_loop) | 9.0 |",
		"| egressd's extra beyond the floor, share of a direct tunnel (paired) | 7.0% |",
		"Medians over 2 rounds",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// The floor is no proxy: no other table shows it.
	if n := strings.Count(md.String(), "floor"); n > 12 {
		t.Errorf("floor appears %d times", n)
	}
	if t.Failed() {
		t.Logf("report:\n%s", md.String())
	}
}
