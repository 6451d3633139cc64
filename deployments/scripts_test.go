package deployments

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http/httpproxy"
)

// The shell scripts run for real, with /bin/sh, in scratch directories.
// Commands that would change this machine (useradd, chown, systemctl, aws,
// egressd) are stubs that append their arguments to a log.

// stubs is a directory of stub commands placed first in PATH.
type stubs struct {
	dir string
	log string
}

func newStubs(t *testing.T, bodies map[string]string) *stubs {
	t.Helper()
	s := &stubs{dir: t.TempDir()}
	s.log = filepath.Join(s.dir, "calls.log")
	for name, body := range bodies {
		script := "#!/bin/sh\necho \"" + name + " $*\" >>\"$STUB_LOG\"\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// calls returns the logged commands, one per line.
func (s *stubs) calls(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(s.log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// run runs a script with /bin/sh and a minimal environment (no *_PROXY).
func (s *stubs) run(t *testing.T, script string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{script}, args...)...)
	cmd.Env = append([]string{"PATH=" + s.dir + ":/usr/bin:/bin", "STUB_LOG=" + s.log, "LC_ALL=C"}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestShellScriptsParse(t *testing.T) {
	scripts := []string{
		"client/user-data.sh",
		"package/postinstall.sh",
		"package/preremove.sh",
		"package/postremove.sh",
		"systemd/egressd-policy-sync.sh",
		"systemd/egressd-asg-drain.sh",
		"nftables/egressd-transparent.sh",
		"terraform/modules/egressd-farm/rollout.sh",
		"terraform/modules/egressd-farm/files/egressd-eip.sh",
		"terraform/modules/egressd-inline/files/egressd-route-takeover.sh",
		"../scripts/farm.sh",
	}
	for _, s := range scripts {
		if out, err := exec.Command("sh", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", s, err, out)
		}
		if m := mode(t, s); m&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", s, m)
		}
	}
}

// ---------------------------------------------------------------------------
// Client user data
// ---------------------------------------------------------------------------

func TestClientUserData(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	existing := "PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\nLANG=C.UTF-8\n"
	if err := os.WriteFile(filepath.Join(root, "etc/environment"), []byte(existing), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStubs(t, map[string]string{"systemctl": ""})
	env := []string{
		"EGRESSD_CLIENT_ROOT=" + root,
		"EGRESSD_PROXY_URL=http://proxy.egress.internal:3128",
		"EGRESSD_VPC_CIDR=10.0.0.0/16",
		"EGRESSD_AWS_REGION=eu-west-1",
		"EGRESSD_ENDPOINT_DNS_NAMES=ssm.eu-west-1.amazonaws.com, .vpce.amazonaws.com",
	}
	snapshot := func() map[string]string {
		files := map[string]string{}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			rel, _ := filepath.Rel(root, path)
			files[rel] = string(data)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return files
	}

	if out, err := s.run(t, "client/user-data.sh", env); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	first := snapshot()
	if out, err := s.run(t, "client/user-data.sh", env); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	if diff := cmp.Diff(first, snapshot()); diff != "" {
		t.Errorf("not idempotent: second run changed (-first +second):\n%s", diff)
	}
	if calls := s.calls(t); calls != nil {
		t.Errorf("with EGRESSD_CLIENT_ROOT the running system must be left alone, got %q", calls)
	}

	wantNoProxy := "localhost,127.0.0.1,::1,169.254.169.254,169.254.170.2,10.0.0.0/16,.internal," +
		"s3.eu-west-1.amazonaws.com,.s3.eu-west-1.amazonaws.com,dynamodb.eu-west-1.amazonaws.com," +
		"ssm.eu-west-1.amazonaws.com,.vpce.amazonaws.com"
	want := map[string]string{
		"HTTP_PROXY":  "http://proxy.egress.internal:3128",
		"HTTPS_PROXY": "http://proxy.egress.internal:3128",
		"http_proxy":  "http://proxy.egress.internal:3128",
		"https_proxy": "http://proxy.egress.internal:3128",
		"NO_PROXY":    wantNoProxy,
		"no_proxy":    wantNoProxy,
	}

	// Login shells: source the profile script in a clean shell.
	cmd := exec.Command("/bin/sh", "-c", ". \"$1\" && env", "sh", filepath.Join(root, "etc/profile.d/egressd-proxy.sh"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, proxyVars(strings.Split(string(out), "\n"))); diff != "" {
		t.Errorf("login shell environment (-want +got):\n%s", diff)
	}

	// systemd: one DefaultEnvironment= line in [Manager].
	u := parseUnit(t, filepath.Join(root, "etc/systemd/system.conf.d/egressd-proxy.conf"))
	de, ok := u.get("Manager", "DefaultEnvironment")
	if !ok {
		t.Fatal("no [Manager] DefaultEnvironment=")
	}
	var assignments []string
	for _, f := range strings.Fields(de) {
		assignments = append(assignments, strings.Trim(f, `"`))
	}
	if diff := cmp.Diff(want, proxyVars(assignments)); diff != "" {
		t.Errorf("systemd DefaultEnvironment (-want +got):\n%s", diff)
	}

	// /etc/environment keeps its other lines.
	envFile := first["etc/environment"]
	if !strings.HasPrefix(envFile, existing) {
		t.Errorf("/etc/environment lost its existing lines:\n%s", envFile)
	}
	if diff := cmp.Diff(want, proxyVars(strings.Split(envFile, "\n"))); diff != "" {
		t.Errorf("/etc/environment (-want +got):\n%s", diff)
	}
	for path, m := range map[string]fs.FileMode{
		"etc/profile.d/egressd-proxy.sh":               0o644,
		"etc/systemd/system.conf.d/egressd-proxy.conf": 0o644,
		"etc/environment":                              0o644,
	} {
		if got := mode(t, filepath.Join(root, path)); got != m {
			t.Errorf("%s mode %v, want %v", path, got, m)
		}
	}

	// What a real client does with it: Go's proxy selection (the same rules
	// as curl for these entries).
	cfg := httpproxy.Config{HTTPProxy: want["HTTP_PROXY"], HTTPSProxy: want["HTTPS_PROXY"], NoProxy: want["NO_PROXY"]}
	proxyFor := cfg.ProxyFunc()
	for _, tt := range []struct {
		url     string
		proxied bool
	}{
		{"https://github.com/", true},
		{"http://deb.debian.org/debian", true},
		{"https://sts.eu-west-1.amazonaws.com/", true},
		{"http://169.254.169.254/latest/meta-data/", false},
		{"http://169.254.170.2/v2/credentials", false},
		{"https://10.0.12.7:8443/", false},
		{"https://ip-10-0-1-5.eu-west-1.compute.internal/", false},
		{"https://bucket.s3.eu-west-1.amazonaws.com/key", false},
		{"https://s3.eu-west-1.amazonaws.com/bucket/key", false},
		{"https://dynamodb.eu-west-1.amazonaws.com/", false},
		{"https://ssm.eu-west-1.amazonaws.com/", false},
		{"https://vpce-0abc-xyz.ec2.eu-west-1.vpce.amazonaws.com/", false},
		{"https://s3.us-east-1.amazonaws.com/", true},
	} {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		p, err := proxyFor(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := p != nil; got != tt.proxied {
			t.Errorf("%s: proxied = %v, want %v", tt.url, got, tt.proxied)
		}
	}
}

func proxyVars(lines []string) map[string]string {
	out := map[string]string{}
	for _, l := range lines {
		l = strings.TrimPrefix(strings.TrimSpace(l), "export ")
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		switch k {
		case "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy":
			out[k] = v
		}
	}
	return out
}

func TestClientUserDataRejectsBadSettings(t *testing.T) {
	s := newStubs(t, map[string]string{"systemctl": ""})
	for _, env := range [][]string{
		{"EGRESSD_PROXY_URL=https://proxy:3128"},
		{"EGRESSD_PROXY_URL=http://proxy:3128 --evil"},
		{"EGRESSD_ENDPOINT_DNS_NAMES=*"},
		{"EGRESSD_VPC_CIDR=10.0.0.0/16\"quote"},
	} {
		root := t.TempDir()
		out, err := s.run(t, "client/user-data.sh", append(env, "EGRESSD_CLIENT_ROOT="+root))
		if err == nil {
			t.Errorf("%q: accepted\n%s", env, out)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/profile.d/egressd-proxy.sh")); err == nil {
			t.Errorf("%q: wrote files before refusing", env)
		}
	}
}

// ---------------------------------------------------------------------------
// Maintainer scripts
// ---------------------------------------------------------------------------

// maintainerStubs: getent answers STUB_USER_EXISTS (0 = the user and group
// exist), systemd-detect-virt answers STUB_CONTAINER (0 = in a container).
func maintainerStubs(t *testing.T) *stubs {
	return newStubs(t, map[string]string{
		"getent":              `exit "${STUB_USER_EXISTS:-2}"`,
		"groupadd":            "",
		"useradd":             "",
		"chown":               "",
		"systemctl":           "",
		"systemd-detect-virt": `exit "${STUB_CONTAINER:-1}"`,
	})
}

// scratchRoot is a DPKG_ROOT as dpkg leaves it after unpacking egressd.
func scratchRoot(t *testing.T, systemdRunning bool) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/egressd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/egressd/egressd.yaml"), []byte("listen: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if systemdRunning {
		if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestPostinstall(t *testing.T) {
	createUser := []string{
		"getent group egressd",
		"groupadd --system egressd",
		"getent passwd egressd",
		"useradd --system --gid egressd --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin --comment egressd egress proxy egressd",
	}
	userExists := []string{"getent group egressd", "getent passwd egressd"}
	chown := func(root string) []string {
		return []string{
			"chown root:egressd " + root + "/etc/egressd",
			"chown root:egressd " + root + "/etc/egressd/egressd.yaml",
		}
	}
	tests := []struct {
		name       string
		args       []string
		systemd    bool
		container  bool
		userExists bool
		want       func(root string) []string
	}{
		{
			// The example policy is not the operator's: enable, never start.
			name: "fresh install on a host: enable, no start", args: []string{"configure", ""}, systemd: true,
			want: func(root string) []string {
				return concat(createUser, chown(root), []string{
					"systemctl daemon-reload",
					"systemctl enable egressd.service",
				})
			},
		},
		{
			name: "fresh install in a container: enable, no start", args: []string{"configure"}, systemd: true, container: true,
			want: func(root string) []string {
				return concat(createUser, chown(root), []string{
					"systemctl daemon-reload",
					"systemctl enable egressd.service",
				})
			},
		},
		{
			name: "fresh install in an image build (no systemd running)", args: []string{"configure"},
			want: func(root string) []string {
				return concat(createUser, chown(root), []string{"systemctl enable egressd.service"})
			},
		},
		{
			name: "upgrade restarts a running egressd, keeps enablement", args: []string{"configure", "1.0.0"}, systemd: true, userExists: true,
			want: func(root string) []string {
				return concat(userExists, chown(root), []string{
					"systemctl daemon-reload",
					"systemctl try-reload-or-restart egressd-transparent.service",
					"systemctl try-restart egressd.service",
				})
			},
		},
		{
			name: "abort-upgrade does nothing", args: []string{"abort-upgrade", "1.0.0"}, systemd: true,
			want: func(string) []string { return nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := maintainerStubs(t)
			root := scratchRoot(t, tt.systemd)
			env := []string{"DPKG_ROOT=" + root, "STUB_CONTAINER=" + exitCode(tt.container), "STUB_USER_EXISTS=" + exitCode(tt.userExists)}
			if out, err := s.run(t, "package/postinstall.sh", env, tt.args...); err != nil {
				t.Fatalf("postinst %q: %v\n%s", tt.args, err, out)
			}
			if diff := cmp.Diff(tt.want(root), s.calls(t)); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			if tt.args[0] == "configure" {
				if got := mode(t, filepath.Join(root, "etc/egressd")); got != 0o750 {
					t.Errorf("/etc/egressd mode %v, want 0750", got)
				}
				if got := mode(t, filepath.Join(root, "etc/egressd/egressd.yaml")); got != 0o640 {
					t.Errorf("egressd.yaml mode %v, want 0640", got)
				}
			}
		})
	}
}

func exitCode(b bool) string {
	if b {
		return "0"
	}
	return "1"
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestPreremove(t *testing.T) {
	units := "egressd-asg-drain.service egressd-policy-sync.timer egressd-policy-sync.service egressd.service egressd-transparent.service"
	tests := []struct {
		name    string
		args    []string
		systemd bool
		want    []string
	}{
		{"remove stops and disables", []string{"remove"}, true, []string{"systemctl stop " + units, "systemctl disable " + units}},
		{"remove without systemd disables", []string{"remove"}, false, []string{"systemctl disable " + units}},
		{"upgrade leaves egressd running", []string{"upgrade", "1.1.0"}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := maintainerStubs(t)
			root := scratchRoot(t, tt.systemd)
			if out, err := s.run(t, "package/preremove.sh", []string{"DPKG_ROOT=" + root}, tt.args...); err != nil {
				t.Fatalf("prerm: %v\n%s", err, out)
			}
			if diff := cmp.Diff(tt.want, s.calls(t)); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPostremove(t *testing.T) {
	runtimeFiles := []string{"etc/egressd/.staging/egressd.yaml.1", "var/lib/egressd-policy-sync/cache", "etc/default/egressd-policy-sync"}
	tests := []struct {
		name      string
		arg       string
		want      []string
		wantGone  bool // runtime files removed
		keepsConf bool // /etc/egressd still exists (dpkg keeps conffiles on remove)
	}{
		{"remove", "remove", []string{"systemctl daemon-reload"}, false, true},
		{"purge", "purge", []string{"systemctl daemon-reload"}, true, false},
		{"upgrade", "upgrade", nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := maintainerStubs(t)
			root := scratchRoot(t, true)
			for _, f := range runtimeFiles {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, f)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.arg == "purge" {
				// dpkg has removed the conffile before postrm purge.
				if err := os.Remove(filepath.Join(root, "etc/egressd/egressd.yaml")); err != nil {
					t.Fatal(err)
				}
			}
			if out, err := s.run(t, "package/postremove.sh", []string{"DPKG_ROOT=" + root}, tt.arg); err != nil {
				t.Fatalf("postrm: %v\n%s", err, out)
			}
			if diff := cmp.Diff(tt.want, s.calls(t)); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			for _, f := range runtimeFiles {
				_, err := os.Stat(filepath.Join(root, f))
				if gone := errors.Is(err, fs.ErrNotExist); gone != tt.wantGone {
					t.Errorf("%s removed = %v, want %v", f, gone, tt.wantGone)
				}
			}
			if _, err := os.Stat(filepath.Join(root, "etc/egressd")); (err == nil) != tt.keepsConf {
				t.Errorf("/etc/egressd exists = %v, want %v", err == nil, tt.keepsConf)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Farm helpers
// ---------------------------------------------------------------------------

// policySyncStubs: aws s3 cp copies STUB_S3_OBJECT; egressd validate fails
// for files containing INVALID; systemctl is-active answers STUB_ACTIVE.
func policySyncStubs(t *testing.T) *stubs {
	return newStubs(t, map[string]string{
		"aws":       `[ "$1 $2 $3" = "s3 cp --only-show-errors" ] || exit 64` + "\n" + `cp "$STUB_S3_OBJECT" "$5"`,
		"egressd":   `[ "$1 $2" = "validate --config" ] || exit 64` + "\n" + `! grep -q INVALID "$3"`,
		"chown":     "",
		"systemctl": `[ "$1" = is-active ] && exit "${STUB_ACTIVE:-0}"; exit 0`,
	})
}

func TestPolicySync(t *testing.T) {
	const uri = "s3://bucket/egressd/egressd.yaml"
	tests := []struct {
		name     string
		current  string
		object   string
		active   bool
		wantErr  bool
		wantConf string
		want     func(conf, staging string) []string
	}{
		{
			name: "unchanged object: nothing to do", current: "policy: v1\n", object: "policy: v1\n", active: true,
			wantConf: "policy: v1\n",
			want: func(_, staging string) []string {
				return []string{"aws s3 cp --only-show-errors " + uri + " " + staging}
			},
		},
		{
			name: "changed valid object: swapped in and reloaded", current: "policy: v1\n", object: "policy: v2\n", active: true,
			wantConf: "policy: v2\n",
			want: func(_, staging string) []string {
				return []string{
					"aws s3 cp --only-show-errors " + uri + " " + staging,
					"egressd validate --config " + staging,
					"chown root:egressd " + staging,
					"systemctl is-active --quiet egressd.service",
					"systemctl reload egressd.service",
				}
			},
		},
		{
			name: "egressd stopped: swapped in, not reloaded", current: "policy: v1\n", object: "policy: v2\n", active: false,
			wantConf: "policy: v2\n",
			want: func(_, staging string) []string {
				return []string{
					"aws s3 cp --only-show-errors " + uri + " " + staging,
					"egressd validate --config " + staging,
					"chown root:egressd " + staging,
					"systemctl is-active --quiet egressd.service",
				}
			},
		},
		{
			name: "invalid object: old config stays", current: "policy: v1\n", object: "policy: INVALID\n", active: true,
			wantErr: true, wantConf: "policy: v1\n",
			want: func(_, staging string) []string {
				return []string{
					"aws s3 cp --only-show-errors " + uri + " " + staging,
					"egressd validate --config " + staging,
				}
			},
		},
		{
			name: "first pull: no config yet", object: "policy: v1\n", active: false,
			wantConf: "policy: v1\n",
			want: func(_, staging string) []string {
				return []string{
					"aws s3 cp --only-show-errors " + uri + " " + staging,
					"egressd validate --config " + staging,
					"chown root:egressd " + staging,
					"systemctl is-active --quiet egressd.service",
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := policySyncStubs(t)
			conf := t.TempDir()
			target := filepath.Join(conf, "egressd.yaml")
			if tt.current != "" {
				if err := os.WriteFile(target, []byte(tt.current), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			object := filepath.Join(t.TempDir(), "object.yaml")
			if err := os.WriteFile(object, []byte(tt.object), 0o644); err != nil {
				t.Fatal(err)
			}
			env := []string{"EGRESSD_CONFIG_URI=" + uri, "EGRESSD_CONFIG_DIR=" + conf, "STUB_S3_OBJECT=" + object, "STUB_ACTIVE=" + exitCode(tt.active)}
			out, err := s.run(t, "systemd/egressd-policy-sync.sh", env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("policy-sync error = %v, want error %v\n%s", err, tt.wantErr, out)
			}

			// The staging file name carries the shell's PID: read it from the log.
			calls := s.calls(t)
			staging := ""
			if len(calls) > 0 {
				f := strings.Fields(calls[0])
				staging = f[len(f)-1]
			}
			if filepath.Dir(staging) != filepath.Join(conf, ".staging") {
				t.Errorf("downloaded to %q, want a file in %s/.staging (same filesystem, not watched)", staging, conf)
			}
			if diff := cmp.Diff(tt.want(conf, staging), calls); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
			got, err := os.ReadFile(target)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.wantConf {
				t.Errorf("config = %q, want %q", got, tt.wantConf)
			}
			if m := mode(t, target); m != 0o640 {
				t.Errorf("config mode %v, want 0640", m)
			}
			left, _ := os.ReadDir(filepath.Join(conf, ".staging"))
			if len(left) != 0 {
				t.Errorf("staging directory not cleaned: %v", left)
			}
		})
	}

	t.Run("no object configured", func(t *testing.T) {
		s := policySyncStubs(t)
		if out, err := s.run(t, "systemd/egressd-policy-sync.sh", []string{"EGRESSD_CONFIG_DIR=" + t.TempDir()}); err == nil {
			t.Errorf("ran without EGRESSD_CONFIG_URI:\n%s", out)
		}
		if calls := s.calls(t); calls != nil {
			t.Errorf("commands without a URI: %q", calls)
		}
	})
}

// TestASGDrain runs the drain watcher against an IMDSv2 stand-in on
// loopback: it must stop egressd exactly once, when the lifecycle state
// turns Terminated, and only with a session token.
func TestASGDrain(t *testing.T) {
	const polls = 3 // InService answers before Terminated
	var stateRequests atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "missing ttl", http.StatusBadRequest)
			return
		}
		w.Write([]byte("token-1"))
	})
	mux.HandleFunc("GET /latest/meta-data/autoscaling/target-lifecycle-state", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token") != "token-1" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if stateRequests.Add(1) <= polls {
			w.Write([]byte("InService"))
			return
		}
		w.Write([]byte("Terminated"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	s := newStubs(t, map[string]string{"systemctl": ""})
	env := []string{"EGRESSD_IMDS_ENDPOINT=" + srv.URL, "EGRESSD_DRAIN_POLL_SECONDS=0.01"}
	out, err := s.run(t, "systemd/egressd-asg-drain.sh", env)
	if err != nil {
		t.Fatalf("asg-drain: %v\n%s", err, out)
	}
	if diff := cmp.Diff([]string{"systemctl stop egressd.service"}, s.calls(t)); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if got := stateRequests.Load(); got != polls+1 {
		t.Errorf("%d lifecycle state requests, want %d", got, polls+1)
	}
}
