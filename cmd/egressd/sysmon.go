package main

import "strings"

// sysmonGODEBUG is the GODEBUG setting egressd serve runs with (see
// keepSysmonAwake): the largest schedtrace period the runtime accepts, about
// 24.9 days, so that the trace line it exists for is printed at most once
// per period (after that much uptime) and in a panic's report.
const sysmonGODEBUG = "schedtrace=2147483647"

// withSysmonGODEBUG returns the environment with sysmonGODEBUG added to
// GODEBUG, and false when GODEBUG already sets schedtrace: an operator's
// value, schedtrace=0 included, wins.
func withSysmonGODEBUG(env []string) ([]string, bool) {
	out := make([]string, 0, len(env)+1)
	found := false
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			out = append(out, kv)
			continue
		}
		for _, setting := range strings.Split(v, ",") {
			// Matched as the runtime parses GODEBUG: no trimming.
			if strings.HasPrefix(setting, "schedtrace=") {
				return env, false
			}
		}
		if found {
			continue // the first GODEBUG wins for the runtime; drop the others
		}
		found = true
		if v == "" {
			out = append(out, "GODEBUG="+sysmonGODEBUG)
		} else {
			out = append(out, "GODEBUG="+v+","+sysmonGODEBUG)
		}
	}
	if !found {
		out = append(out, "GODEBUG="+sysmonGODEBUG)
	}
	return out, true
}
