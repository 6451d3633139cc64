package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value such that at least p percent of the
// samples are less than or equal to it. It returns 0 for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencies collects one worker's samples without locking; merge the workers'
// sets once they are done.
type latencies []time.Duration

// summarize sorts all samples of all sets and returns p50 and p99 in
// milliseconds.
func summarize(sets ...latencies) (p50, p99 float64, n int) {
	for _, s := range sets {
		n += len(s)
	}
	all := make([]time.Duration, 0, n)
	for _, s := range sets {
		all = append(all, s...)
	}
	slices.Sort(all)
	return ms(percentile(all, 50)), ms(percentile(all, 99)), n
}

// median returns the median of vs (the mean of the middle two for an even
// count) and false when vs is empty.
func median(vs []float64) (float64, bool) {
	if len(vs) == 0 {
		return 0, false
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m], true
	}
	return (s[m-1] + s[m]) / 2, true
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
