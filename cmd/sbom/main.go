// Command sbom writes a CycloneDX 1.5 SBOM (JSON) of a Go binary: the Go
// modules linked into it, read from the build information the Go linker
// embeds (debug/buildinfo, what `go version -m` prints), with their
// versions, module hashes and package URLs, and the Go standard library.
// `make release` runs it for each binary it builds.
//
//	go run ./cmd/sbom -binary dist/release/egressd_linux_amd64 -version v1.2.3 -o egressd.cdx.json
//
// The output is deterministic for a binary: the serial number is derived
// from the binary's SHA-256 and the timestamp comes from -time (or
// SOURCE_DATE_EPOCH), so rebuilding a release reproduces its SBOM.
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sbom:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sbom", flag.ContinueOnError)
	binary := fs.String("binary", "", "Go binary to describe (required)")
	version := fs.String("version", "", "version of the main component (default: the module version in the binary)")
	out := fs.String("o", "-", "output file ('-': stdout)")
	at := fs.String("time", "", "timestamp, RFC 3339 (default: SOURCE_DATE_EPOCH, else now)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *binary == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("-binary is required")
	}
	ts, err := timestamp(*at, os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	bom, err := generate(*binary, *version, ts)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(bom, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "-" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

func timestamp(flagValue, epoch string) (time.Time, error) {
	switch {
	case flagValue != "":
		return time.Parse(time.RFC3339, flagValue)
	case epoch != "":
		n, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Now().UTC().Truncate(time.Second), nil
}

// The CycloneDX 1.5 JSON fields used (https://cyclonedx.org/docs/1.5/json/).
type bom struct {
	BOMFormat    string       `json:"bomFormat"`
	SpecVersion  string       `json:"specVersion"`
	SerialNumber string       `json:"serialNumber"`
	Version      int          `json:"version"`
	Metadata     metadata     `json:"metadata"`
	Components   []component  `json:"components"`
	Dependencies []dependency `json:"dependencies"`
}

type metadata struct {
	Timestamp string    `json:"timestamp"`
	Tools     tools     `json:"tools"`
	Component component `json:"component"`
}

type tools struct {
	Components []component `json:"components"`
}

type component struct {
	Type       string     `json:"type"`
	BOMRef     string     `json:"bom-ref,omitempty"`
	Name       string     `json:"name"`
	Version    string     `json:"version,omitempty"`
	PURL       string     `json:"purl,omitempty"`
	Hashes     []hash     `json:"hashes,omitempty"`
	Properties []property `json:"properties,omitempty"`
}

type hash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

type property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type dependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn"`
}

// generate describes the binary at path.
func generate(path, version string, at time.Time) (*bom, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: no Go build information: %w", path, err)
	}
	sum := sha256.Sum256(data)
	mainVersion := version
	if mainVersion == "" {
		mainVersion = info.Main.Version
	}
	main := moduleComponent("application", &debug.Module{Path: info.Main.Path, Version: mainVersion, Sum: info.Main.Sum})
	main.Name = info.Main.Path
	main.Hashes = append(main.Hashes, hash{Alg: "SHA-256", Content: hex.EncodeToString(sum[:])})
	for _, s := range info.Settings {
		switch s.Key {
		case "GOOS", "GOARCH", "CGO_ENABLED", "-trimpath", "vcs.revision", "vcs.time", "vcs.modified":
			main.Properties = append(main.Properties, property{Name: "go:build:" + s.Key, Value: s.Value})
		}
	}
	main.Properties = append(main.Properties, property{Name: "go:path", Value: info.Path})

	std := component{Type: "library", Name: "std", Version: info.GoVersion,
		PURL: "pkg:golang/std@" + info.GoVersion + "?type=module"}
	std.BOMRef = std.PURL
	comps := []component{std}
	for _, d := range info.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace // what is linked in
		}
		comps = append(comps, moduleComponent("library", m))
	}
	sort.Slice(comps, func(i, j int) bool { return comps[i].BOMRef < comps[j].BOMRef })
	refs := make([]string, len(comps))
	for i, c := range comps {
		refs[i] = c.BOMRef
	}
	deps := []dependency{{Ref: main.BOMRef, DependsOn: refs}}
	for _, r := range refs {
		deps = append(deps, dependency{Ref: r, DependsOn: []string{}})
	}
	return &bom{
		BOMFormat:    "CycloneDX",
		SpecVersion:  "1.5",
		SerialNumber: serial(sum),
		Version:      1,
		Metadata: metadata{
			Timestamp: at.UTC().Format(time.RFC3339),
			Tools:     tools{Components: []component{{Type: "application", Name: "egressd cmd/sbom"}}},
			Component: main,
		},
		Components:   comps,
		Dependencies: deps,
	}, nil
}

// moduleComponent describes one Go module: its package URL (pkg:golang,
// with ?type=module as the Go CycloneDX tools write it) and its go.sum
// hash ("h1:" + base64 SHA-256 of the module's file list) as SHA-256.
func moduleComponent(typ string, m *debug.Module) component {
	c := component{Type: typ, Name: m.Path, Version: m.Version}
	c.PURL = "pkg:golang/" + purlPath(m.Path) + "@" + m.Version + "?type=module"
	c.BOMRef = c.PURL
	if h, ok := strings.CutPrefix(m.Sum, "h1:"); ok {
		if b, err := base64.StdEncoding.DecodeString(h); err == nil && len(b) == sha256.Size {
			c.Hashes = []hash{{Alg: "SHA-256", Content: hex.EncodeToString(b)}}
		}
	}
	return c
}

// purlPath escapes what a package URL may not hold in its namespace and
// name segments (module paths are mostly plain; "~" and "+" are not).
func purlPath(p string) string {
	var b strings.Builder
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("/.-_", r):
			b.WriteRune(r)
		default:
			for _, c := range []byte(string(r)) {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
	}
	return b.String()
}

// serial is an RFC 4122 URN derived from the binary's digest (version 8:
// custom, variant 10), so the same binary always gets the same one.
func serial(sum [32]byte) string {
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
