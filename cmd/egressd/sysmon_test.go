package main

import (
	"slices"
	"testing"
)

func TestWithSysmonGODEBUG(t *testing.T) {
	cases := []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + sysmonGODEBUG}, true},
		{"empty GODEBUG", []string{"GODEBUG=", "PATH=/bin"}, []string{"GODEBUG=" + sysmonGODEBUG, "PATH=/bin"}, true},
		{"other settings", []string{"GODEBUG=http2client=0"}, []string{"GODEBUG=http2client=0," + sysmonGODEBUG}, true},
		{"schedtrace set", []string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}, false},
		{"schedtrace among others", []string{"A=1", "GODEBUG=x=1,schedtrace=5"}, []string{"A=1", "GODEBUG=x=1,schedtrace=5"}, false},
		// The runtime does not trim: " schedtrace" is another key to it.
		{"spaced key", []string{"GODEBUG=x=1, schedtrace=5"}, []string{"GODEBUG=x=1, schedtrace=5," + sysmonGODEBUG}, true},
		{"duplicate GODEBUG", []string{"GODEBUG=a=1", "GODEBUG=b=2"}, []string{"GODEBUG=a=1," + sysmonGODEBUG}, true},
		{"lookalike key", []string{"GODEBUG=xschedtrace=1"}, []string{"GODEBUG=xschedtrace=1," + sysmonGODEBUG}, true},
	}
	for _, tc := range cases {
		got, changed := withSysmonGODEBUG(tc.env)
		if changed != tc.changed || !slices.Equal(got, tc.want) {
			t.Errorf("%s: withSysmonGODEBUG(%q) = %q, %v; want %q, %v", tc.name, tc.env, got, changed, tc.want, tc.changed)
		}
	}
}
