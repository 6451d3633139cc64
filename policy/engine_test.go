package policy

import (
	"context"
	"errors"
	"net/netip"
)

// fakeResolver answers from a map; a missing name is an error.
type fakeResolver map[string][]netip.Addr

var errNXDomain = errors.New("no such host")

func (f fakeResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	a, ok := f[host]
	if !ok {
		return nil, errNXDomain
	}
	return a, nil
}
