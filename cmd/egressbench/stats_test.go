package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	seq := func(n int) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i + 1)
		}
		return s
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{name: "empty", in: nil, p: 50, want: 0},
		{name: "one sample", in: []time.Duration{7}, p: 99, want: 7},
		{name: "p50 of 100", in: seq(100), p: 50, want: 50},
		{name: "p99 of 100", in: seq(100), p: 99, want: 99},
		{name: "p100 of 100", in: seq(100), p: 100, want: 100},
		{name: "p50 of 4 is the lower middle", in: seq(4), p: 50, want: 2},
		{name: "p99 of 10 is the maximum", in: seq(10), p: 99, want: 10},
		{name: "p1 of 1000", in: seq(1000), p: 1, want: 10},
		{name: "tiny p still the minimum", in: seq(10), p: 0.001, want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := percentile(tc.in, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarizeMergesWorkers(t *testing.T) {
	t.Parallel()
	a := latencies{3 * time.Millisecond, 1 * time.Millisecond}
	b := latencies{2 * time.Millisecond, 4 * time.Millisecond}
	p50, p99, n := summarize(a, b)
	if p50 != 2 || p99 != 4 || n != 4 {
		t.Errorf("summarize = %v, %v, %d; want 2, 4, 4", p50, p99, n)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []float64
		want float64
		ok   bool
	}{
		{name: "empty", in: nil, ok: false},
		{name: "odd", in: []float64{3, 1, 2}, want: 2, ok: true},
		{name: "even is the mean of the middle two", in: []float64{0.5, 0.3}, want: 0.4, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := median(tc.in)
			if ok != tc.ok || got != tc.want {
				t.Errorf("median(%v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}
