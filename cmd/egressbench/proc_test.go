package main

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{
			name: "plain",
			in:   "1234 (squid) S 1 1234 1234 0 -1 4194560 2211 0 0 0 57 31 2 3 20 0 1 0 1234567 123456789 6000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0\n",
			want: procStat{PPID: 1, UTime: 57, STime: 31, CUTime: 2, CSTime: 3},
		},
		{
			name: "command name with spaces and parentheses",
			in:   "77 (a) b (c)) R 76 77 77 0 -1 0 0 0 0 0 1000 2000 0 0 20 0 4 0 1 1 1 1",
			want: procStat{PPID: 76, UTime: 1000, STime: 2000},
		},
		{name: "no command name", in: "77 a R 76", wantErr: true},
		{name: "truncated", in: "77 (a) R 76 77 77 0 -1 0 0 0", wantErr: true},
		{name: "bad number", in: "77 (a) R 76 77 77 0 -1 0 0 0 0 0 x 2000 0 0 20", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseStat error = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseStat (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseKiBLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{name: "present", in: "Name:\tsquid\nVmPeak:\t  300 kB\nVmRSS:\t   27272 kB\nRssAnon:\t 1 kB\n", want: 27272},
		{name: "a longer key with the same prefix is not it", in: "VmRSSx:\t1 kB\nVmRSS:\t2 kB\n", want: 2},
		{name: "last line without newline", in: "Name:\tx\nVmRSS:\t12 kB", want: 12},
		{name: "zombie has none", in: "Name:\tx\nState:\tZ (zombie)\n", want: 0},
		{name: "malformed", in: "VmRSS:\t12\n", wantErr: true},
		{name: "not a number", in: "VmRSS:\tx kB\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseKiBLine([]byte(tc.in), "VmRSS:")
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseKiBLine error = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseKiBLine = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSampleProcSelf(t *testing.T) {
	t.Parallel()
	s, err := sampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKiB <= 0 || s.PSSKiB <= 0 || s.FDs <= 0 || s.Procs < 1 {
		t.Errorf("sampleProc(self) = %+v, want positive RSS, fds and at least one process", s)
	}
	if _, err := sampleProc(1 << 30); err == nil {
		t.Error("sampleProc of a PID that cannot exist succeeded")
	}
}

func TestParsePortRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		lo, hi int
		ok     bool
	}{
		{name: "linux default", in: "32768\t60999\n", lo: 32768, hi: 60999, ok: true},
		{name: "one number", in: "32768\n", ok: false},
		{name: "reversed", in: "60999 32768", ok: false},
		{name: "out of bounds", in: "0 70000", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lo, hi, err := parsePortRange([]byte(tc.in))
			if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
				t.Errorf("parsePortRange(%q) = %d, %d, %v; want %d, %d, ok %v", tc.in, lo, hi, err, tc.lo, tc.hi, tc.ok)
			}
		})
	}
}

func TestFreePortsOutsideEphemeralRange(t *testing.T) {
	t.Parallel()
	r := outsideRange(32768, 60999)
	if diff := cmp.Diff([2]int{10000, 32767}, r); diff != "" {
		t.Errorf("outsideRange (-want +got):\n%s", diff)
	}
	ps, err := freePorts("127.0.0.1", 5, r)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if p < r[0] || p > r[1] || seen[p] {
			t.Errorf("port %d outside %v or repeated in %v", p, r, ps)
		}
		seen[p] = true
	}
}
