package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMakeRelease runs scripts/release.sh (make release) for this
// machine's architecture only (the other is the same code path, and its
// cross-build costs minutes): the binary carries the version, the .deb has
// the package version and architecture, the SBOM names the binary's
// module, and SHA256SUMS covers every file and verifies.
func TestMakeRelease(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/release.sh")
	cmd.Env = append(os.Environ(), "VERSION=v1.2.3", "RELEASE_DIR="+out, "RELEASE_ARCHES="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	bin := filepath.Join(out, "egressd_v1.2.3_linux_"+runtime.GOARCH)
	if b, err := exec.Command(bin, "version").Output(); err != nil || string(b) != "egressd v1.2.3\n" {
		t.Errorf("%s version: %q, %v", filepath.Base(bin), b, err)
	}
	deb := filepath.Join(out, "egressd_1.2.3_"+runtime.GOARCH+".deb")
	if b, err := exec.Command("dpkg-deb", "--field", deb, "Version", "Architecture").Output(); err != nil ||
		string(b) != "Version: 1.2.3\nArchitecture: "+runtime.GOARCH+"\n" {
		t.Errorf("dpkg-deb --field: %q, %v", b, err)
	}
	sbom, err := os.ReadFile(bin + ".cdx.json")
	if err != nil || !strings.Contains(string(sbom), `"bomFormat": "CycloneDX"`) || !strings.Contains(string(sbom), `"version": "v1.2.3"`) {
		t.Errorf("SBOM: %v\n%.300s", err, sbom)
	}
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" && !strings.Contains(string(sums), "  "+e.Name()+"\n") {
			t.Errorf("SHA256SUMS lacks %s:\n%s", e.Name(), sums)
		}
	}
	check := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	check.Dir = out
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum --check: %v\n%s", err, b)
	}
}
