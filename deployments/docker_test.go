package deployments

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerInstr is one Dockerfile instruction with its continuation lines
// joined.
type dockerInstr struct {
	Cmd  string // upper case: FROM, RUN, COPY, ...
	Args string
}

func parseDockerfile(t *testing.T, path string) []dockerInstr {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerInstr
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// dockerignored reports whether the build context leaves path out, by
// .dockerignore's rules: patterns in order, the last match wins, "!"
// re-includes, "**" spans directories, a pattern matching a directory
// covers what is in it.
func dockerignored(rules []string, path string) bool {
	ignored := false
	for _, r := range rules {
		neg := strings.HasPrefix(r, "!")
		pat := strings.TrimPrefix(r, "!")
		re := "^" + regexp.QuoteMeta(pat) + "(/.*)?$"
		re = strings.ReplaceAll(re, `\*\*/`, `(.*/)?`)
		re = strings.ReplaceAll(re, `\*`, `[^/]*`)
		re = strings.ReplaceAll(re, `\?`, `[^/]`)
		if regexp.MustCompile(re).MatchString(path) {
			ignored = !neg
		}
	}
	return ignored
}

func readDockerignore(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
	}
	return rules
}

// TestDockerfile: there is no Docker engine here, so the Dockerfile is
// checked for what the issue asks: base images pinned by digest, a
// cross-compiling multi-arch build (BUILDPLATFORM, TARGETOS/TARGETARCH), a
// non-root distroless image whose HEALTHCHECK runs `egressd health` in exec
// form (no shell in the image) against the config the image carries, and a
// .dockerignore that keeps out what the build does not need but nothing
// the build reads (every COPY source and every package ./cmd/egressd
// compiles).
func TestDockerfile(t *testing.T) {
	instrs := parseDockerfile(t, "../Dockerfile")
	var froms, copies, runs []string
	var user, health, entry string
	args := map[string]bool{}
	for _, in := range instrs {
		switch in.Cmd {
		case "FROM":
			froms = append(froms, in.Args)
		case "COPY":
			copies = append(copies, in.Args)
		case "RUN":
			runs = append(runs, in.Args)
		case "USER":
			user = in.Args
		case "HEALTHCHECK":
			health = in.Args
		case "ENTRYPOINT":
			entry = in.Args
		case "ARG":
			name, _, _ := strings.Cut(in.Args, "=")
			args[name] = true
		}
	}
	pinned := regexp.MustCompile(`^(--platform=\S+ )?(\S+):(\S+)@sha256:[0-9a-f]{64}( AS \S+)?$`)
	if len(froms) != 2 {
		t.Fatalf("%d FROM lines, want a build and a runtime stage", len(froms))
	}
	for _, f := range froms {
		if !pinned.MatchString(f) {
			t.Errorf("FROM %s: not pinned by digest (image:tag@sha256:...)", f)
		}
	}
	if !strings.HasPrefix(froms[0], "--platform=$BUILDPLATFORM golang:1.26@") {
		t.Errorf("build stage %q: want golang:1.26 on $BUILDPLATFORM (cross-compiling, no emulation)", froms[0])
	}
	if !strings.HasPrefix(froms[1], "gcr.io/distroless/static:nonroot@") {
		t.Errorf("runtime stage %q: want gcr.io/distroless/static:nonroot", froms[1])
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (1\.\d+)`).FindSubmatch(gomod); m == nil || string(m[1]) != "1.26" {
		t.Errorf("go.mod's go directive %q does not match the golang:1.26 image", m)
	}
	if !args["TARGETOS"] || !args["TARGETARCH"] {
		t.Errorf("ARG TARGETOS and TARGETARCH are needed for multi-arch builds: %v", args)
	}
	if !slices.ContainsFunc(runs, func(r string) bool {
		return strings.Contains(r, "GOOS=$TARGETOS") && strings.Contains(r, "GOARCH=$TARGETARCH") &&
			strings.Contains(r, "CGO_ENABLED=0") && strings.Contains(r, "-X main.version=") && strings.Contains(r, "./cmd/egressd")
	}) {
		t.Errorf("no RUN builds ./cmd/egressd static for $TARGETOS/$TARGETARCH with the version stamped: %q", runs)
	}
	if user != "nonroot" {
		t.Errorf("USER %q, want nonroot", user)
	}
	var entryArgs []string
	if err := json.Unmarshal([]byte(entry), &entryArgs); err != nil || !slices.Equal(entryArgs, []string{"/egressd", "serve"}) {
		t.Errorf("ENTRYPOINT %s: want exec form [\"/egressd\", \"serve\"]", entry)
	}

	// HEALTHCHECK [options] CMD ["/egressd", "health", ...]: exec form.
	opts, cmdJSON, ok := strings.Cut(health, "CMD ")
	var hc []string
	if !ok || json.Unmarshal([]byte(strings.TrimSpace(cmdJSON)), &hc) != nil || len(hc) < 2 || hc[0] != "/egressd" || hc[1] != "health" {
		t.Fatalf("HEALTHCHECK %q: want CMD [\"/egressd\", \"health\", ...] in exec form", health)
	}
	for _, o := range []string{"--interval=", "--timeout=", "--retries="} {
		if !strings.Contains(opts, o) {
			t.Errorf("HEALTHCHECK lacks %s", o)
		}
	}
	if i := slices.Index(hc, "--config"); i < 0 || i+1 >= len(hc) {
		t.Errorf("HEALTHCHECK %q does not name the config", hc)
	} else if !slices.ContainsFunc(copies, func(c string) bool { return strings.HasSuffix(c, " "+hc[i+1]) }) {
		t.Errorf("HEALTHCHECK's config %s is not a file the image gets (COPY lines %q)", hc[i+1], copies)
	} else {
		// The example config must have an admin listener for the check to ask.
		cfg := loadConfig(t, mustRead(t, "egressd.example.yaml"), "egressd.example.yaml")
		if cfg.Listen.Admin == "" {
			t.Errorf("the image's config has no listen.admin: egressd health has nothing to ask")
		}
	}

	rules := readDockerignore(t)
	for _, c := range copies {
		if strings.HasPrefix(c, "--from=") {
			continue
		}
		f := strings.Fields(c)
		for _, src := range f[:len(f)-1] {
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("COPY source %s: %v", src, err)
			}
			if src != "." && dockerignored(rules, src) {
				t.Errorf("COPY source %s is excluded by .dockerignore", src)
			}
		}
	}
	// Every file of every package the build compiles is in the context.
	out, err := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{"\t"}}{{join .GoFiles " "}} {{join .EmbedFiles " "}}{{end}}{{end}}`, "../cmd/egressd").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, _ := filepath.Abs("..")
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dir, files, _ := strings.Cut(l, "\t")
		rel, _ := filepath.Rel(root, dir)
		for _, f := range strings.Fields(files) {
			n++
			if p := filepath.ToSlash(filepath.Join(rel, f)); dockerignored(rules, p) {
				t.Errorf("%s is compiled into egressd but excluded by .dockerignore", p)
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d source files found for ./cmd/egressd", n)
	}
	for _, p := range []string{"go.mod", "go.sum"} {
		if dockerignored(rules, p) {
			t.Errorf("%s is excluded by .dockerignore", p)
		}
	}
	// And what the image does not need stays out.
	for _, p := range []string{".git/config", "docs/benchmarks.md", "test/dns_test.go", "proxy/config/config_test.go",
		"deployments/terraform/modules/egressd-farm/main.tf", "dist/release/SHA256SUMS", "results/bench/x.json"} {
		if !dockerignored(rules, p) {
			t.Errorf("%s is in the build context", p)
		}
	}
}

func TestDockerignoreMatcher(t *testing.T) {
	rules := []string{"docs", "**/*_test.go", "deployments/*", "!deployments/egressd.example.yaml"}
	for path, want := range map[string]bool{
		"docs/a.md": true, "docs": true, "proxy/x_test.go": true, "x_test.go": true, "proxy/x.go": false,
		"deployments/nfpm.yaml": true, "deployments/egressd.example.yaml": false, "deployments/farm/a.yaml": true,
		"documents/a": false,
	} {
		if got := dockerignored(rules, path); got != want {
			t.Errorf("dockerignored(%q) = %v, want %v", path, got, want)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
