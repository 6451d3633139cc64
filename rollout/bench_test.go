package rollout

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// farmStream is an endless access log of a big farm, for measuring learn:
// a block of lines repeated, in which the CDN-style names, the unique
// per-customer names and the denied exfiltration names get new numbers on
// every pass, so distinct destinations keep growing as they would.
type farmStream struct {
	block   []byte
	patches []patch // numbers rewritten on each pass
	pass    int
	off     int
	limit   int64 // lines to produce
	lines   int64
	perPass int64
}

type patch struct {
	off  int // of 7 digits in block
	base int // number on pass 0
	step int // added per pass
	mod  int // numbers wrap around here (0: never)
}

func newFarmStream(lines int64) *farmStream {
	const blockLines = 100_000
	fs := &farmStream{limit: lines, perPass: blockLines}
	var b bytes.Buffer
	ts := genStart
	groups := []struct{ group, client string }{{"web", "10.0.1.7"}, {"batch", "10.0.2.9"}, {"ops", "10.0.3.4"}, {"data", "10.0.4.2"}}
	line := func(g int, host string, port int, ip, decision, reason, rule string) (digits int) {
		ts = ts.Add(3 * time.Millisecond)
		fmt.Fprintf(&b, `{"ts":%q,"listener":"connect","client":%q,"user":"","group":%q,"host":"`,
			ts.Format(time.RFC3339Nano), groups[g].client, groups[g].group)
		digits = -1
		if i := strings.Index(host, "#######"); i >= 0 {
			digits = b.Len() + i
		}
		fmt.Fprintf(&b, `%s","port":%d,"sni":"","ip":%q,"decision":%q,"rule":%q,"reason":%q,"status":200,"bytes_up":517,"bytes_down":4812,"duration_ms":92}`+"\n",
			host, port, ip, decision, rule, reason)
		return digits
	}
	cdnN, uniqN, exfilN := 0, 0, 0
	for i := range blockLines {
		g := i % len(groups)
		switch r := i % 20; {
		case r < 7: // 10,000 sites, each its own registrable domain
			line(g, fmt.Sprintf("www.site%05d.com", i%10_000), 443, "93.184.215.1", "allow", "", "sites")
		case r < 14: // 10,000 names under 500 domains (and folded)
			line(g, fmt.Sprintf("api%02d.svc%03d.example.org", i%20, i%500), 443, "93.184.215.1", "report", "not_allowed", "")
		case r < 16: // CDN edge names under a few registrable domains: folded
			if off := line(g, "e#######.cdn"+strconv.Itoa(i%8)+".example-cdn.net", 443, "93.184.215.2", "report", "not_allowed", ""); off >= 0 {
				fs.patches = append(fs.patches, patch{off: off, base: cdnN, step: blockLines})
				cdnN++
			}
		case r == 16: // per-customer names under a private public suffix: each its own
			if off := line(g, "d#######.cloudfront.net", 443, "13.32.0.1", "allow", "", "cdn"); off >= 0 {
				// 200,000 distinct names in all, then they repeat.
				fs.patches = append(fs.patches, patch{off: off, base: uniqN, step: 5_000, mod: 200_000})
				uniqN++
			}
		case r == 17: // an IP literal
			line(g, "93.184.216."+strconv.Itoa(i%200), 8443, "93.184.216."+strconv.Itoa(i%200), "report", "not_allowed", "")
		case r == 18: // denied: metadata
			line(g, "169.254.169.254", 80, "", "deny", "private_range", "")
		default: // denied: exfiltration through ever new names
			if off := line(g, "x#######.t.exfil.example", 53, "", "deny", "not_allowed", ""); off >= 0 {
				fs.patches = append(fs.patches, patch{off: off, base: exfilN, step: blockLines})
				exfilN++
			}
		}
	}
	fs.block = b.Bytes()
	fs.apply()
	return fs
}

func (fs *farmStream) apply() {
	var d [7]byte
	for _, p := range fs.patches {
		n := p.base + fs.pass*p.step
		if p.mod > 0 {
			n %= p.mod
		}
		for i := 6; i >= 0; i-- {
			d[i] = byte('0' + n%10)
			n /= 10
		}
		copy(fs.block[p.off:], d[:])
	}
}

func (fs *farmStream) Read(p []byte) (int, error) {
	if fs.off == len(fs.block) {
		fs.pass++
		fs.off = 0
		fs.apply()
	}
	if fs.lines >= fs.limit {
		return 0, io.EOF
	}
	n := copy(p, fs.block[fs.off:])
	if k := int64(bytes.Count(p[:n], []byte{'\n'})); fs.lines+k < fs.limit {
		fs.lines += k
	} else {
		// Stop at the line end that reaches the limit.
		for i := 0; i < n; i++ {
			if p[i] == '\n' {
				fs.lines++
				if fs.lines == fs.limit {
					n = i + 1
					break
				}
			}
		}
	}
	fs.off += n
	return n, nil
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS returns the process's peak resident set (VmHWM) in MiB.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkLearn runs learn over b.N lines of farmStream (with a config:
// groups resolved, --diff evaluation off). Run it on one core with ten
// million lines, as the rollout target is stated:
//
//	go test -run '^$' -bench BenchmarkLearn -benchtime 10000000x -cpu 1 ./rollout/
//
// It reports lines/s, the peak RSS of the test process and the live heap.
func BenchmarkLearn(b *testing.B) {
	cfg := []byte(`policy:
  groups:
    web: { cidrs: ["10.0.1.0/24"] }
    batch: { cidrs: ["10.0.2.0/24"] }
    ops: { cidrs: ["10.0.3.0/24"] }
    data: { cidrs: ["10.0.4.0/24"] }
`)
	fs := newFarmStream(int64(b.N))
	runtime.GC()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	lr, err := Learn([]Source{{Path: "-", Stdin: fs}}, LearnOptions{Fold: DefaultFold, Config: cfg, ConfigName: "bench.yaml"}, false)
	if err != nil {
		b.Fatal(err)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	if lr.Counts.Lines != int64(b.N) {
		b.Fatalf("read %d lines, want %d", lr.Counts.Lines, b.N)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "lines/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "lines/cpu-s") // the machine may be shared
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	cpu1 := cpuTime()
	out, err := lr.Proposal()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric((cpuTime() - cpu1).Seconds(), "proposal-cpu-s")
	b.ReportMetric(float64(len(out))/(1<<10), "proposal-KiB")
	runtime.KeepAlive(lr)
}
