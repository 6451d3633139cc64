package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The in-line gateway's figure (issue 21) comes from BenchmarkInlineTunnel
// in test/, not from egressbench run: the in-line path needs the client,
// gateway and internet namespaces of test/testenv.NewInline behind the
// shipped nftables rules, and nothing redirects on the host's loopback.
// scripts/bench.sh runs the Go benchmark and hands its output to the
// report (-inline), which tabulates it beside the CONNECT figure of the
// same egressd process.

// inlineLimit is issue 21's target: egressd's CPU per 1,000 new in-line
// TLS tunnels within 10% of its CONNECT figure.
const inlineLimit = 1.10

// inlineMetric is the unit BenchmarkInlineTunnel reports egressd's CPU in.
const inlineMetric = "egressd-cpu-ms/1k"

// figInlineCPU is the figure the table shows (seconds, as the report's
// other CPU figures); the benchmark reports milliseconds.
var figInlineCPU = figure{Title: "CPU s per 1,000 new TLS tunnels", Lower: true, Prec: 3, CPU: true}

var inlineBenchLine = regexp.MustCompile(`^BenchmarkInlineTunnel/(connect|inline)(?:-\d+)?\s+(\d+)\s.*?([\d.]+) ` + regexp.QuoteMeta(inlineMetric) + `(?:\s|$)`)

// inlineRuns are BenchmarkInlineTunnel's figures in run order: egressd's
// CPU seconds per 1,000 tunnels for CONNECT and for in-line tunnels, and
// the tunnels each measurement opened.
type inlineRuns struct {
	Connect, Inline []float64
	Tunnels         []int
}

// parseInlineBench reads `go test -bench BenchmarkInlineTunnel` output,
// one or more runs appended, each run's connect line before its inline
// line.
func parseInlineBench(out string) inlineRuns {
	var r inlineRuns
	for l := range strings.SplitSeq(out, "\n") {
		m := inlineBenchLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		if m[1] == "connect" {
			r.Connect = append(r.Connect, v/1000)
			r.Tunnels = append(r.Tunnels, n)
		} else {
			r.Inline = append(r.Inline, v/1000)
		}
	}
	return r
}

// pairedRatio is the median over runs of the in-line figure divided by the
// CONNECT figure of the same run (the same egressd process, measured one
// after the other).
func (r inlineRuns) pairedRatio() (float64, bool) {
	var ratios []float64
	for i := range min(len(r.Connect), len(r.Inline)) {
		if r.Connect[i] > 0 {
			ratios = append(ratios, r.Inline[i]/r.Connect[i])
		}
	}
	return median(ratios)
}

// writeInlineTable writes the in-line section when the run has the Go
// benchmark's output (out non-empty).
func writeInlineTable(p func(string, ...any), out string) {
	if strings.TrimSpace(out) == "" {
		return
	}
	r := parseInlineBench(out)
	p("## In-line TLS tunnels against CONNECT (issue 21)\n\n")
	p("From `BenchmarkInlineTunnel` (test/inline_bench_test.go), which scripts/bench.sh runs once per round: ")
	p("one egressd (the bench's build, in testenv's minimal environment: without the loopback runs' GODEBUG) in the gateway namespace of `testenv.NewInline`, behind the shipped nftables rules ")
	p("(deployments/nftables/egressd-transparent.nft, redirect, IPv4). Each tunnel carries a Go ClientHello for an allowed name and the origin's one byte back, ")
	p("opened one at a time either as a CONNECT from the internet side to egressd's `listen.http`, or from the client namespace with no proxy settings ")
	p("(redirected to `listen.transparent`, decided on the SNI); CONNECT first, then in-line, on the same process. ")
	p("The figure is egressd's own user+system CPU (/proc/PID/stat, 10 ms ticks) per 1,000 tunnels, access log off, not pinned to a CPU; ")
	p("each connection crosses veth pairs, conntrack and nftables, so both figures are above the loopback tables'. ")
	p("Target (issue 21): in-line within 10%% of CONNECT. Raw output: results/bench/inline-gobench.txt.\n\n")
	cm, ok1 := median(r.Connect)
	im, ok2 := median(r.Inline)
	if !ok1 || !ok2 || cm <= 0 {
		p("Not measured: the benchmark's output has no CONNECT and in-line figures (%s), see results/bench/inline-gobench.txt.\n\n", inlineMetric)
		return
	}
	ratio := im / cm
	paired := "–"
	if pr, ok := r.pairedRatio(); ok {
		paired = fmt.Sprintf("%.2f", pr)
	}
	met := "missed"
	if ratio <= inlineLimit {
		met = "met"
	}
	tunnels := "–"
	if len(r.Tunnels) > 0 {
		tunnels = strconv.Itoa(r.Tunnels[0])
	}
	p("| figure | tunnels per run | CONNECT | in-line | ratio | paired | target | met? |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	p("| %s | %s | %s | %s | %.2f | %s | ≤ %.2f | %s |\n\n", figInlineCPU.Title, tunnels,
		figInlineCPU.cell(r.Connect), figInlineCPU.cell(r.Inline), ratio, paired, inlineLimit, met)
}
