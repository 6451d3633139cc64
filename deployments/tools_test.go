package deployments

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// lookTool finds a program the tests run, or fails the test: tests never
// skip because a tool is missing (scripts/setup.sh installs them). Debian
// keeps some in sbin, outside a user's PATH.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
			return filepath.Join(dir, name)
		}
	}
	t.Fatalf("%s not found (run scripts/setup.sh): %v", name, err)
	return ""
}
