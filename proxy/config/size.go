package config

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Size is a byte count. In the file it is an integer number of bytes or a
// number with a unit: B, KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB
// (powers of 1024), as in "64KiB" or "10 MB".
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

var errSize = errors.New(`want bytes or a number with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. "64KiB"`)

// ParseSize parses a size such as "1024", "64KiB" or "10MB".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, s = u.mult, strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, errSize
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errSize
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("too large")
	}
	return Size(n * mult), nil
}

// String formats s with the largest binary unit that divides it exactly.
func (s Size) String() string {
	for i := 3; i >= 0; i-- {
		u := sizeUnits[i]
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}
