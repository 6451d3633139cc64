package testenv

import "testing"

// Curl runs the real curl in the host namespace with args, a minimal
// environment (PATH only: no *_PROXY variable is inherited, no curlrc is
// read) and a time bound. It returns curl's stdout, stderr and exit code.
// Pass -x/--proxy, --cacert and friends explicitly.
func Curl(t testing.TB, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	return (*Netns)(nil).Curl(t, args...)
}

// Curl runs curl inside the namespace (see the package function [Curl]).
func (n *Netns) Curl(t testing.TB, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	curl := lookTool(t, "curl")
	return n.Run(t, curl, append([]string{"-q"}, args...)...)
}
