//go:build race

package origdst_test

// raceEnabled: under the race detector sync.Pool drops a quarter of what
// it is given, so pooled queries are made again now and then.
const raceEnabled = true
