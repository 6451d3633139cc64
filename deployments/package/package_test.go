package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// repoRoot is the repository root, found the same way the command finds it.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := findRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// dummyBinary writes a stand-in for the egressd binary: the package test is
// about the package, not the proxy, and must not depend on the proxy building.
func dummyBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "egressd")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho egressd test binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("dpkg-deb", args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// buildDeb builds the package once per test into a scratch directory.
func buildDeb(t *testing.T) (root, deb string) {
	t.Helper()
	root = repoRoot(t)
	deb, err := build(options{
		root:    root,
		config:  "deployments/nfpm.yaml",
		binary:  dummyBinary(t),
		version: "v1.2.3",
		arch:    "amd64",
		outDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return root, deb
}

func TestPackageFileNameAndControl(t *testing.T) {
	_, deb := buildDeb(t)
	if got, want := filepath.Base(deb), "egressd_1.2.3_amd64.deb"; got != want {
		t.Errorf("package file name = %q, want %q", got, want)
	}
	got := dpkgDeb(t, "--field", deb, "Package", "Version", "Architecture", "Section")
	want := "Package: egressd\nVersion: 1.2.3\nArchitecture: amd64\nSection: net\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("control fields (-want +got):\n%s", diff)
	}
}

// TestPackageContents installs the package into a scratch root the way dpkg
// unpacks it (dpkg-deb -x) and compares every file with its source.
func TestPackageContents(t *testing.T) {
	root, deb := buildDeb(t)
	scratch := t.TempDir()
	dpkgDeb(t, "-x", deb, scratch)

	type file struct {
		src  string // repository path, "" for the binary
		mode fs.FileMode
	}
	want := map[string]file{
		"usr/bin/egressd":                                {"", 0o755},
		"lib/systemd/system/egressd.service":             {"deployments/systemd/egressd.service", 0o644},
		"lib/systemd/system/egressd-policy-sync.service": {"deployments/systemd/egressd-policy-sync.service", 0o644},
		"lib/systemd/system/egressd-policy-sync.timer":   {"deployments/systemd/egressd-policy-sync.timer", 0o644},
		"lib/systemd/system/egressd-asg-drain.service":   {"deployments/systemd/egressd-asg-drain.service", 0o644},
		"usr/lib/egressd/policy-sync":                    {"deployments/systemd/egressd-policy-sync.sh", 0o755},
		"usr/lib/egressd/asg-drain":                      {"deployments/systemd/egressd-asg-drain.sh", 0o755},
		"lib/systemd/system/egressd-transparent.service": {"deployments/systemd/egressd-transparent.service", 0o644},
		"usr/lib/egressd/transparent-rules":              {"deployments/nftables/egressd-transparent.sh", 0o755},
		"usr/share/egressd/egressd-transparent.nft":      {"deployments/nftables/egressd-transparent.nft", 0o644},
		"etc/default/egressd-transparent":                {"deployments/nftables/egressd-transparent.default", 0o644},
		"etc/egressd/egressd.yaml":                       {"deployments/egressd.example.yaml", 0o640},
		"usr/share/doc/egressd/farm.md":                  {"docs/farm.md", 0o644},
		"etc/logrotate.d/egressd":                        {"deployments/logrotate/egressd", 0o644},
		"usr/share/doc/egressd/copyright":                {"deployments/package/copyright", 0o644},
	}

	got := map[string]fs.FileMode{}
	err := filepath.WalkDir(scratch, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(scratch, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		got[rel] = info.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantModes := map[string]fs.FileMode{}
	for path, f := range want {
		wantModes[path] = f.mode
	}
	if diff := cmp.Diff(wantModes, got); diff != "" {
		t.Errorf("files and modes in the package (-want +got):\n%s", diff)
	}

	for path, f := range want {
		if f.src == "" {
			continue
		}
		wantBytes, err := os.ReadFile(filepath.Join(root, f.src))
		if err != nil {
			t.Fatal(err)
		}
		gotBytes, err := os.ReadFile(filepath.Join(scratch, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if !bytes.Equal(wantBytes, gotBytes) {
			t.Errorf("%s differs from %s", path, f.src)
		}
	}

	st, err := os.Stat(filepath.Join(scratch, "etc/egressd"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.Mode().Perm(), fs.FileMode(0o750); got != want {
		t.Errorf("/etc/egressd mode = %v, want %v", got, want)
	}

	// Owners are recorded in the archive; dpkg-deb -x as non-root drops them.
	for _, line := range strings.Split(strings.TrimSpace(dpkgDeb(t, "--contents", deb)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "root/root" {
			t.Errorf("archive entry not owned by root/root: %q", line)
		}
	}
}

// TestPackageControlArchive checks conffiles, md5sums and the maintainer
// scripts as dpkg will run them.
func TestPackageControlArchive(t *testing.T) {
	root, deb := buildDeb(t)
	ctl := filepath.Join(t.TempDir(), "DEBIAN")
	dpkgDeb(t, "-e", deb, ctl)

	conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("/etc/default/egressd-transparent\n/etc/egressd/egressd.yaml\n/etc/logrotate.d/egressd\n", string(conffiles)); diff != "" {
		t.Errorf("conffiles (-want +got):\n%s", diff)
	}

	md5sums, err := os.ReadFile(filepath.Join(ctl, "md5sums"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"usr/bin/egressd", "lib/systemd/system/egressd.service"} {
		if !strings.Contains(string(md5sums), "  "+path+"\n") {
			t.Errorf("md5sums lacks %s:\n%s", path, md5sums)
		}
	}

	scripts := map[string]string{
		"postinst": "deployments/package/postinstall.sh",
		"prerm":    "deployments/package/preremove.sh",
		"postrm":   "deployments/package/postremove.sh",
	}
	for name, src := range scripts {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(ctl, name)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := st.Mode().Perm(), fs.FileMode(0o755); got != want {
				t.Errorf("mode = %v, want %v", got, want)
			}
			gotBytes, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			wantBytes, err := os.ReadFile(filepath.Join(root, src))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotBytes, wantBytes) {
				t.Errorf("%s differs from %s", name, src)
			}
			if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", name, err, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(ctl, "preinst")); err == nil {
		t.Errorf("unexpected preinst: the package creates its user in postinst")
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	root := repoRoot(t)
	cfgDir := t.TempDir()
	typo := filepath.Join(cfgDir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("name: egressd\narch: ${EGRESSD_ARC}\nversion: ${EGRESSD_VERSION}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts options
		want string
	}{
		{"no binary", options{root: root, config: "deployments/nfpm.yaml", version: "1.0.0", arch: "amd64"}, "-binary is required"},
		{"missing binary", options{root: root, config: "deployments/nfpm.yaml", binary: filepath.Join(cfgDir, "nope"), version: "1.0.0", arch: "amd64"}, "no such file"},
		{"no version", options{root: root, config: "deployments/nfpm.yaml", binary: dummyBinary(t), arch: "amd64"}, "-version is required"},
		{"version not starting with a digit", options{root: root, config: "deployments/nfpm.yaml", binary: dummyBinary(t), version: "dev", arch: "amd64"}, `version "dev"`},
		{"unknown placeholder", options{root: root, config: typo, binary: dummyBinary(t), version: "1.0.0", arch: "amd64"}, `unknown placeholders ["EGRESSD_ARC"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.outDir = t.TempDir()
			_, err := build(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("build error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRunFindsRoot(t *testing.T) {
	out := t.TempDir()
	var stdout bytes.Buffer
	err := run([]string{"-binary", dummyBinary(t), "-version", "0.1.0", "-arch", "arm64", "-out", out}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(stdout.String()), filepath.Join(out, "egressd_0.1.0_arm64.deb"); got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
}

// TestPackageWithRealBinary packages the real egressd and runs the
// installed binary on the installed config, as the unit will.
func TestPackageWithRealBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds egressd")
	}
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "egressd")
	gobuild := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/egressd")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/egressd: %v\n%s", err, out)
	}
	deb, err := buildPackage(root, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	dpkgDeb(t, "-x", deb, scratch)
	validate := exec.Command(filepath.Join(scratch, "usr/bin/egressd"), "validate", "--config", filepath.Join(scratch, "etc/egressd/egressd.yaml"))
	validate.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := validate.CombinedOutput(); err != nil {
		t.Errorf("installed egressd validate --config installed egressd.yaml: %v\n%s", err, out)
	}
}

func buildPackage(root, binary, out string) (string, error) {
	return build(options{root: root, config: "deployments/nfpm.yaml", binary: binary, version: "1.2.3", arch: runtime.GOARCH, outDir: out})
}

// TestLicenseAndCopyright: the repository's LICENSE is the full Apache
// License 2.0, and the package's copyright file is in Debian's
// machine-readable format (DEP-5) and names that license for every file.
func TestLicenseAndCopyright(t *testing.T) {
	root := repoRoot(t)
	license, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Apache License", "Version 2.0, January 2004", "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
		"9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS"} {
		if !bytes.Contains(license, []byte(want)) {
			t.Errorf("LICENSE lacks %q: not the full Apache-2.0 text", want)
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "deployments/package/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	// Paragraphs are separated by blank lines; fields are "Name: value",
	// continuation lines start with a space.
	var paras []map[string]string
	for _, p := range strings.Split(strings.TrimSpace(string(data)), "\n\n") {
		fields := map[string]string{}
		last := ""
		for _, l := range strings.Split(p, "\n") {
			if strings.HasPrefix(l, " ") {
				if last == "" {
					t.Fatalf("continuation line before any field: %q", l)
				}
				fields[last] += "\n" + l
				continue
			}
			name, value, ok := strings.Cut(l, ":")
			if !ok {
				t.Fatalf("not a field: %q", l)
			}
			last = name
			fields[name] = strings.TrimSpace(value)
		}
		paras = append(paras, fields)
	}
	if len(paras) != 3 {
		t.Fatalf("%d paragraphs, want header, Files and License", len(paras))
	}
	if got := paras[0]["Format"]; got != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" {
		t.Errorf("Format: %q", got)
	}
	if paras[0]["Upstream-Name"] != "egressd" || paras[1]["Files"] != "*" || paras[1]["License"] != "Apache-2.0" || paras[1]["Copyright"] == "" {
		t.Errorf("header and Files paragraphs: %v %v", paras[0], paras[1])
	}
	if !strings.HasPrefix(paras[2]["License"], "Apache-2.0\n") || !strings.Contains(paras[2]["License"], "/usr/share/common-licenses/Apache-2.0") {
		t.Errorf("License paragraph: %q", paras[2]["License"])
	}
}
