//go:build race

package accesslog

// raceEnabled: under the race detector sync.Pool drops a quarter of what
// it is given, so pooled buffers are reallocated now and then.
const raceEnabled = true
