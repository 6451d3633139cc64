//go:build !race

package origdst_test

const raceEnabled = false
