package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// buildEgressd builds cmd/egressd for this machine with the flags the
// end-to-end tests build it with (so the build cache serves it: a
// cross-build for the other architecture costs minutes), plus the version.
func buildEgressd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "egressd")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=v1.2.3", "-o", bin, "../egressd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSBOM: the SBOM of an egressd binary is CycloneDX 1.5 JSON with
// the structure the specification requires (checked field by field), names
// exactly the modules `go version -m` reports for the binary, and is the
// same when generated twice.
func TestSBOM(t *testing.T) {
	bin := buildEgressd(t)
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	if err := run([]string{"-binary", bin, "-version", "v1.2.3", "-time", at.Format(time.RFC3339)}, &out); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := run([]string{"-binary", bin, "-version", "v1.2.3", "-time", at.Format(time.RFC3339)}, &again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two runs on one binary differ")
	}

	var doc map[string]any
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	want := map[string]any{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": float64(1)}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	if s, _ := doc["serialNumber"].(string); !regexp.MustCompile(`^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(s) {
		t.Errorf("serialNumber %q is not an RFC 4122 URN", s)
	}
	meta, _ := doc["metadata"].(map[string]any)
	if meta["timestamp"] != "2026-12-07T00:00:00Z" {
		t.Errorf("metadata.timestamp = %v", meta["timestamp"])
	}
	mainComp, _ := meta["component"].(map[string]any)
	checkComponent(t, "metadata.component", mainComp)
	if mainComp["type"] != "application" || mainComp["name"] != "github.com/egressd/egressd" || mainComp["version"] != "v1.2.3" {
		t.Errorf("main component: %v", mainComp)
	}
	props := map[string]string{}
	for _, p := range mainComp["properties"].([]any) {
		pm := p.(map[string]any)
		props[pm["name"].(string)] = pm["value"].(string)
	}
	if props["go:build:GOARCH"] != runtime.GOARCH || props["go:build:GOOS"] != runtime.GOOS || props["go:build:CGO_ENABLED"] == "" {
		t.Errorf("build properties: %v", props)
	}

	refs := map[string]bool{mainComp["bom-ref"].(string): true}
	var names []string
	for i, c := range doc["components"].([]any) {
		cm := c.(map[string]any)
		checkComponent(t, fmt.Sprintf("components[%d]", i), cm)
		ref := cm["bom-ref"].(string)
		if refs[ref] {
			t.Errorf("bom-ref %s twice", ref)
		}
		refs[ref] = true
		names = append(names, cm["name"].(string)+"@"+cm["version"].(string))
	}
	for _, d := range doc["dependencies"].([]any) {
		dm := d.(map[string]any)
		if !refs[dm["ref"].(string)] {
			t.Errorf("dependency ref %v is no component", dm["ref"])
		}
		for _, on := range dm["dependsOn"].([]any) {
			if !refs[on.(string)] {
				t.Errorf("dependsOn %v is no component", on)
			}
		}
	}

	// The same modules as `go version -m` (dep lines, => replacements).
	vm, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{}
	for _, l := range strings.Split(string(vm), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "dep":
			wantNames = append(wantNames, f[1]+"@"+f[2])
		case len(f) >= 3 && f[0] == "=>":
			wantNames[len(wantNames)-1] = f[1] + "@" + f[2]
		case len(f) == 2 && strings.HasSuffix(f[0], ":") && strings.HasPrefix(f[1], "go1."):
			wantNames = append(wantNames, "std@"+f[1])
		}
	}
	slices.Sort(wantNames)
	slices.Sort(names)
	if !slices.Equal(wantNames, names) || len(names) < 10 {
		t.Errorf("components %v\nwant (go version -m) %v", names, wantNames)
	}
	for _, must := range []string{"go.uber.org/zap@", "github.com/miekg/dns@", "github.com/elazarl/goproxy@", "std@go1."} {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, must) }) {
			t.Errorf("no component %s...", must)
		}
	}
}

var (
	componentTypes = []string{"application", "framework", "library", "container", "platform", "operating-system",
		"device", "device-driver", "firmware", "file", "machine-learning-model", "data"}
	hexSHA256 = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

// checkComponent checks the component fields the CycloneDX 1.5 schema
// constrains: type (enum), name (required), purl, hashes (alg enum, hex).
func checkComponent(t *testing.T, where string, c map[string]any) {
	t.Helper()
	if !slices.Contains(componentTypes, c["type"].(string)) {
		t.Errorf("%s: type %v", where, c["type"])
	}
	if name, _ := c["name"].(string); name == "" {
		t.Errorf("%s: no name", where)
	}
	if p, _ := c["purl"].(string); !strings.HasPrefix(p, "pkg:golang/") || !strings.Contains(p, "@") || c["bom-ref"] != p {
		t.Errorf("%s: purl %q, bom-ref %v", where, p, c["bom-ref"])
	}
	hashes, _ := c["hashes"].([]any)
	for _, h := range hashes {
		hm := h.(map[string]any)
		if hm["alg"] != "SHA-256" || !hexSHA256.MatchString(hm["content"].(string)) {
			t.Errorf("%s: hash %v", where, hm)
		}
	}
	if c["name"] != "std" && len(hashes) == 0 {
		t.Errorf("%s: no hash", where)
	}
}

func TestPURLPath(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/egressd/egressd": "github.com/egressd/egressd",
		"example.com/a~b+c":          "example.com/a%7Eb%2Bc",
	} {
		if got := purlPath(in); got != want {
			t.Errorf("purlPath(%q) = %q, want %q", in, got, want)
		}
	}
}
