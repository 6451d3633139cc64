package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
)

// mainModule is the module path whose go.mod marks the repository root.
const mainModule = "github.com/egressd/egressd"

// options are the inputs of one package build.
type options struct {
	root    string // repository root; relative paths in the config are relative to it
	config  string // nfpm config, relative to root unless absolute
	binary  string // the egressd binary to package
	version string // package version (semver, a leading "v" is accepted)
	arch    string // Debian/Go architecture name (amd64, arm64)
	outDir  string // directory the .deb is written to
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "egressd-package:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("egressd-package", flag.ContinueOnError)
	var opts options
	fs.StringVar(&opts.root, "root", "", "repository root (default: found from the working directory)")
	fs.StringVar(&opts.config, "config", "deployments/nfpm.yaml", "nfpm config, relative to the repository root")
	fs.StringVar(&opts.binary, "binary", "", "egressd binary to package (required)")
	fs.StringVar(&opts.version, "version", "", "package version, e.g. 1.2.3 (required)")
	fs.StringVar(&opts.arch, "arch", runtime.GOARCH, "package architecture (amd64, arm64)")
	fs.StringVar(&opts.outDir, "out", "", "output directory (default: <root>/dist)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if opts.root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if opts.root, err = findRoot(wd); err != nil {
			return err
		}
	}
	if opts.outDir == "" {
		opts.outDir = filepath.Join(opts.root, "dist")
	}
	path, err := build(opts)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, path)
	return err
}

// findRoot walks up from dir to the directory whose go.mod declares the
// main module.
func findRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if isMainModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory: pass -root", mainModule)
		}
		dir = parent
	}
}

func isMainModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == mainModule
		}
	}
	return false
}

// build writes the .deb described by opts and returns its path.
func build(opts options) (string, error) {
	var errs []error
	if opts.binary == "" {
		errs = append(errs, errors.New("-binary is required"))
	}
	if opts.version == "" {
		errs = append(errs, errors.New("-version is required"))
	}
	if opts.arch == "" {
		errs = append(errs, errors.New("-arch is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	binary, err := filepath.Abs(opts.binary)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(binary); err != nil {
		return "", fmt.Errorf("binary: %w", err)
	} else if !st.Mode().IsRegular() {
		return "", fmt.Errorf("binary %s is not a regular file", binary)
	}

	// The placeholders of nfpm.yaml come from the flags, never from the
	// environment, so a stray EGRESSD_* variable cannot change the package.
	vars := map[string]string{
		"EGRESSD_VERSION": opts.version,
		"EGRESSD_ARCH":    opts.arch,
		"EGRESSD_BINARY":  binary,
	}
	var unknown []string
	mapping := func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		if strings.HasPrefix(name, "EGRESSD_") {
			unknown = append(unknown, name)
		}
		return "" // nfpm also asks for NFPM_*PASSPHRASE: no signing here
	}

	configPath := inRoot(opts.root, opts.config)
	cfg, err := nfpm.ParseFileWithEnvMapping(configPath, mapping)
	if err != nil {
		return "", fmt.Errorf("%s: %w", configPath, err)
	}
	if len(unknown) > 0 {
		return "", fmt.Errorf("%s: unknown placeholders %q", configPath, unknown)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", err
	}
	// nfpm turns a semver (a leading "v" allowed) into Debian's form; anything
	// else is used as is, and dpkg refuses versions that do not start with a
	// digit.
	if v := info.Version; v == "" || v[0] < '0' || v[0] > '9' {
		return "", fmt.Errorf("version %q: want a semantic version such as 1.2.3 or v1.2.3-rc.1", opts.version)
	}
	for _, c := range info.Contents {
		if c.Source != "" {
			c.Source = inRoot(opts.root, c.Source)
		}
	}
	for _, s := range []*string{&info.Scripts.PreInstall, &info.Scripts.PostInstall, &info.Scripts.PreRemove, &info.Scripts.PostRemove} {
		if *s != "" {
			*s = inRoot(opts.root, *s)
		}
	}
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("%s: %w", configPath, err)
	}

	if err := os.MkdirAll(opts.outDir, 0o755); err != nil {
		return "", err
	}
	target := filepath.Join(opts.outDir, deb.Default.ConventionalFileName(info))
	tmp, err := os.CreateTemp(opts.outDir, ".egressd-*.deb")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := deb.Default.Package(info, tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("build deb: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return "", err
	}
	return target, nil
}

func inRoot(root, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(root, path)
}
