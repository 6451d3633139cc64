package deployments

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/zclconf/go-cty/cty"
)

// The farm module's shell: the user data's package checksum check, the
// Elastic IP claim (files/egressd-eip.sh) and the rollout (rollout.sh), run
// with /bin/sh against stand-ins for S3, EC2 and Auto Scaling (the stub
// `aws` below) and IMDSv2 (an HTTP server on loopback).

// s3Stub serves `aws s3 cp s3://bucket/key DEST` from the directory in
// $S3_ROOT, and fails like the CLI for a missing object.
const s3Stub = `
[ "$1 $2" = "s3 cp" ] || exit 3
src=${4#s3://}
[ -f "$S3_ROOT/$src" ] || { echo "fatal error: An error occurred (404) when calling the HeadObject operation: Key \"$src\" does not exist" >&2; exit 1; }
cp "$S3_ROOT/$src" "$5"`

// TestFarmUserDataPackageChecksum runs the checks of both modules' user
// data: the farm's and the in-line gateways'.
func TestFarmUserDataPackageChecksum(t *testing.T) {
	for _, mod := range []struct {
		name   string
		render func(*testing.T, map[string]cty.Value) string
	}{{"farm", renderFarmUserData}, {"inline", renderInlineUserData}} {
		t.Run(mod.name, func(t *testing.T) { testUserDataPackageChecksum(t, mod.render) })
	}
}

func testUserDataPackageChecksum(t *testing.T, render func(*testing.T, map[string]cty.Value) string) {
	pkg := []byte("!<arch>\negressd 1.2.3 package bytes\n")
	sum := sha256.Sum256(pkg)
	good := hex.EncodeToString(sum[:])
	other := strings.Repeat("0", 64)
	const sumsURI = "s3://egressd-artifacts/releases/SHA256SUMS"

	for _, tt := range []struct {
		name    string
		sha256  string // package_sha256, "" for null
		sums    string // SHA256SUMS contents, "" for no sums URI
		noPkg   bool   // the .deb is missing from the bucket
		ok      bool
		message string
	}{
		{name: "pinned checksum", sha256: good, ok: true},
		{name: "pinned checksum differs", sha256: other, message: "checksum mismatch for egressd_1.2.3_amd64.deb (package_sha256)"},
		{name: "SHA256SUMS", sums: other + "  dist/egressd_1.2.3_arm64.deb\n" + good + "  dist/egressd_1.2.3_amd64.deb\n", ok: true},
		{name: "SHA256SUMS binary mode, upper case", sums: strings.ToUpper(good) + " *egressd_1.2.3_amd64.deb\n", ok: true},
		{name: "SHA256SUMS and pinned agree", sha256: good, sums: good + "  egressd_1.2.3_amd64.deb\n", ok: true},
		{name: "SHA256SUMS differs", sums: other + "  egressd_1.2.3_amd64.deb\n", message: "checksum mismatch for egressd_1.2.3_amd64.deb (" + sumsURI + ")"},
		{name: "pinned right, SHA256SUMS wrong", sha256: good, sums: other + "  egressd_1.2.3_amd64.deb\n", message: "checksum mismatch"},
		{name: "SHA256SUMS without the package", sums: good + "  egressd_1.2.2_amd64.deb\n", message: "has no single valid line for egressd_1.2.3_amd64.deb"},
		{name: "SHA256SUMS names it twice", sums: good + "  egressd_1.2.3_amd64.deb\n" + other + "  x/egressd_1.2.3_amd64.deb\n", message: "has no single valid line"},
		{name: "SHA256SUMS line not a checksum", sums: "abc  egressd_1.2.3_amd64.deb\n", message: "has no single valid line"},
		{name: "no checksum at all", message: "no checksum for egressd_1.2.3_amd64.deb"},
		{name: "package missing", sha256: good, noPkg: true, message: "refusing to install"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "egressd-artifacts", "releases")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if !tt.noPkg {
				if err := os.WriteFile(filepath.Join(dir, "egressd_1.2.3_amd64.deb"), pkg, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			extra := map[string]cty.Value{"package_sha256": cty.NullVal(cty.String)}
			if tt.sha256 != "" {
				extra["package_sha256"] = cty.StringVal(tt.sha256)
			}
			if tt.sums != "" {
				extra["package_sha256sums_s3_uri"] = cty.StringVal(sumsURI)
				if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(tt.sums), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			work := t.TempDir()
			out, err, s := runUserDataFunction(t, render, extra, work, "install_package", map[string]string{"aws": s3Stub, "apt-get": ""}, "S3_ROOT="+root)

			installs := 0
			for _, c := range s.calls(t) {
				if strings.HasPrefix(c, "apt-get") {
					installs++
					if want := "apt-get install -y -q -o Dpkg::Options::=--force-confold " + filepath.Join(work, "egressd.deb"); c != want {
						t.Errorf("install: %q, want %q", c, want)
					}
				}
			}
			if tt.ok {
				if err != nil {
					t.Fatalf("install_package: %v\n%s", err, out)
				}
				if installs != 1 || !strings.Contains(out, "checksum verified") {
					t.Errorf("%d installs, output:\n%s", installs, out)
				}
				got, err := os.ReadFile(filepath.Join(work, "egressd.deb"))
				if err != nil || string(got) != string(pkg) {
					t.Errorf("the installed file is not the package: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("install_package succeeded:\n%s", out)
			}
			if installs != 0 {
				t.Errorf("the package was installed although its checksum was not verified")
			}
			if !strings.Contains(out, tt.message) {
				t.Errorf("output lacks %q:\n%s", tt.message, out)
			}
			if _, err := os.Stat(filepath.Join(work, "egressd.deb")); err == nil {
				t.Errorf("the unverified package was left in %s", work)
			}
		})
	}
}

// runUserDataFunction renders a module's user data with extra variables and
// runs one of its functions (EGRESSD_BOOTSTRAP_FUNCTIONS_ONLY skips main),
// with $work set as main sets it.
func runUserDataFunction(t *testing.T, render func(*testing.T, map[string]cty.Value) string, extra map[string]cty.Value, work, function string, stubBodies map[string]string, env ...string) (string, error, *stubs) {
	t.Helper()
	dir := t.TempDir()
	userData := filepath.Join(dir, "user-data.sh")
	if err := os.WriteFile(userData, []byte(render(t, extra)), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "run.sh")
	body := ". '" + userData + "'\nwork='" + work + "'\n" + function + "\n"
	if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	s := newStubs(t, stubBodies)
	out, err := s.run(t, wrapper, append([]string{"EGRESSD_BOOTSTRAP_FUNCTIONS_ONLY=1"}, env...))
	return out, err, s
}

// ---------------------------------------------------------------------------
// Elastic IP pool
// ---------------------------------------------------------------------------

// ec2Stub keeps the pool in $EIP_STATE, one address a line:
// "<allocation> <association or -> <instance or ->". EIP_STEAL_FIRST: the
// first associate-address finds its address just taken by another instance.
// EIP_CUT: associate-address associates, but its answer is lost.
const ec2Stub = `
state=$EIP_STATE
case "$1 $2" in
"ec2 describe-addresses")
	shift 2
	tag= instance= query=
	while [ $# -gt 0 ]; do
		case $1 in
		Name=tag:*) tag=$1 ;;
		Name=instance-id,Values=*) instance=${1#Name=instance-id,Values=} ;;
		--query) query=$2; shift ;;
		esac
		shift
	done
	[ "$tag" = "Name=tag:egressd-pool,Values=edge" ] || { echo "unexpected pool filter $tag" >&2; exit 4; }
	case $query in
	'Addresses[?AssociationId==null].AllocationId') awk '$3 == "-" { printf "%s\t", $1 }' "$state" ;;
	'Addresses[].AllocationId') awk -v i="$instance" '$3 == i { printf "%s\t", $1 }' "$state" ;;
	'Addresses[].AssociationId') awk -v i="$instance" '$3 == i { printf "%s\t", $2 }' "$state" ;;
	*) echo "unexpected query $query" >&2; exit 4 ;;
	esac
	echo
	;;
"ec2 associate-address")
	allocation=$4 instance=$6
	[ "$7" = --no-allow-reassociation ] || exit 4
	if [ -n "${EIP_STEAL_FIRST:-}" ] && [ ! -e "$state.stolen" ]; then
		touch "$state.stolen"
		awk -v a="$allocation" '$1 == a { $2 = "eipassoc-thief"; $3 = "i-0thief" } { print }' "$state" >"$state.new" && mv "$state.new" "$state"
	fi
	if ! awk -v a="$allocation" '$1 == a && $3 == "-" { found = 1 } END { exit !found }' "$state"; then
		echo "An error occurred (Resource.AlreadyAssociated)" >&2
		exit 254
	fi
	awk -v a="$allocation" -v i="$instance" '$1 == a { $2 = "eipassoc-" a; $3 = i } { print }' "$state" >"$state.new" && mv "$state.new" "$state"
	if [ -n "${EIP_CUT:-}" ]; then
		echo "Connection was closed before we received a valid response" >&2
		exit 255
	fi
	echo "eipassoc-$allocation"
	;;
"ec2 disassociate-address")
	awk -v s="$4" '$2 == s { $2 = "-"; $3 = "-" } { print }' "$state" >"$state.new" && mv "$state.new" "$state"
	;;
*) exit 3 ;;
esac`

// imdsStandIn answers IMDSv2 with an instance ID, only with a token.
func imdsStandIn(t *testing.T, instanceID string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "missing ttl", http.StatusBadRequest)
			return
		}
		w.Write([]byte("token-1"))
	})
	mux.HandleFunc("GET /latest/meta-data/instance-id", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token") != "token-1" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(instanceID))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestFarmElasticIPClaim(t *testing.T) {
	srv := imdsStandIn(t, "i-0self")
	const script = "terraform/modules/egressd-farm/files/egressd-eip.sh"

	for _, tt := range []struct {
		name       string
		state      string
		env        []string
		action     string
		ok         bool
		held       int // pool addresses i-0self holds afterwards
		associates int // associate-address calls
		message    string
	}{
		{name: "free address", state: "eipalloc-1 eipassoc-1 i-0other\neipalloc-2 - -\neipalloc-3 - -\n", action: "claim", ok: true, held: 1, associates: 1, message: "claimed eipalloc-"},
		{name: "address taken meanwhile", state: "eipalloc-2 - -\neipalloc-3 - -\n", env: []string{"EIP_STEAL_FIRST=1"}, action: "claim", ok: true, held: 1, associates: 2, message: "was taken; trying the next address"},
		{name: "answer lost", state: "eipalloc-2 - -\neipalloc-3 - -\n", env: []string{"EIP_CUT=1"}, action: "claim", ok: true, held: 1, associates: 1, message: "claimed eipalloc-"},
		{name: "already held", state: "eipalloc-2 - -\neipalloc-3 eipassoc-3 i-0self\n", action: "claim", ok: true, held: 1, associates: 0, message: "holds eipalloc-3"},
		{name: "pool exhausted", state: "eipalloc-1 eipassoc-1 i-0a\neipalloc-2 eipassoc-2 i-0b\n", action: "claim", held: 0, associates: 0, message: "gave up: no address of pool edge after 2 attempts"},
		{name: "release", state: "eipalloc-1 eipassoc-1 i-0other\neipalloc-2 eipassoc-2 i-0self\n", action: "release", ok: true, held: 0, message: "released eipassoc-2"},
		{name: "release without address", state: "eipalloc-1 eipassoc-1 i-0other\n", action: "release", ok: true, held: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "pool")
			if err := os.WriteFile(state, []byte(tt.state), 0o644); err != nil {
				t.Fatal(err)
			}
			s := newStubs(t, map[string]string{"aws": ec2Stub})
			env := append([]string{
				"EIP_STATE=" + state,
				"EGRESSD_EIP_POOL=edge",
				"EGRESSD_IMDS_ENDPOINT=" + srv.URL,
				"EGRESSD_EIP_ATTEMPTS=2",
				"EGRESSD_EIP_RETRY_SECONDS=0",
			}, tt.env...)
			out, err := s.run(t, script, env, tt.action)
			if (err == nil) != tt.ok {
				t.Fatalf("egressd-eip %s: err %v, want ok=%v\n%s", tt.action, err, tt.ok, out)
			}
			if !strings.Contains(out, tt.message) {
				t.Errorf("output lacks %q:\n%s", tt.message, out)
			}
			after, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			held := strings.Count(string(after), " i-0self\n")
			if held != tt.held {
				t.Errorf("i-0self holds %d addresses, want %d:\n%s", held, tt.held, after)
			}
			associates := 0
			for _, c := range s.calls(t) {
				if strings.HasPrefix(c, "aws ec2 associate-address") {
					associates++
				}
				if strings.HasPrefix(c, "aws ec2 disassociate-address") && !strings.Contains(c, "--association-id eipassoc-2 ") {
					t.Errorf("released the wrong association: %q", c)
				}
			}
			if associates != tt.associates {
				t.Errorf("%d associate-address calls, want %d:\n%s", associates, tt.associates, strings.Join(s.calls(t), "\n"))
			}
			// Others' addresses are never touched.
			for _, line := range strings.Split(tt.state, "\n") {
				if strings.Contains(line, "i-0other") && !strings.Contains(string(after), line) {
					t.Errorf("another instance's address changed: %q\n%s", line, after)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// rollout.sh
// ---------------------------------------------------------------------------

// autoscalingStub: $ROLLOUT_STATE/<group>.version holds a group's launch
// template version; each describe-instance-refreshes answers the next line
// of <group>.status (the last line repeats).
const autoscalingStub = `
state=$ROLLOUT_STATE
case "$1 $2" in
"autoscaling describe-auto-scaling-groups") cat "$state/$4.version" ;;
"autoscaling start-instance-refresh")
	[ -e "$state/$4.start-fails" ] && { echo "An error occurred (InstanceRefreshInProgress)" >&2; exit 254; }
	echo "refresh-$4" ;;
"autoscaling describe-instance-refreshes")
	n=$(cat "$state/$4.polls" 2>/dev/null || echo 0)
	n=$((n + 1))
	echo "$n" >"$state/$4.polls"
	lines=$(wc -l <"$state/$4.status")
	[ "$n" -le "$lines" ] || n=$lines
	sed -n "${n}p" "$state/$4.status" ;;
"autoscaling rollback-instance-refresh") echo "rollback-$4" ;;
*) exit 3 ;;
esac`

func TestFarmRollout(t *testing.T) {
	const script = "terraform/modules/egressd-farm/rollout.sh"
	prefs := map[string]string{
		"farm-a": `{"AutoRollback":true,"AlarmSpecification":{"Alarms":["farm-a-unhealthy-targets"]}}`,
		"farm-b": `{"AutoRollback":true,"AlarmSpecification":{"Alarms":["farm-b-unhealthy-targets"]}}`,
		"farm-c": `{"AutoRollback":true,"AlarmSpecification":{"Alarms":["farm-c-unhealthy-targets"]}}`,
	}
	plan := "farm-a " + prefs["farm-a"] + "\nfarm-b " + prefs["farm-b"] + "\nfarm-c " + prefs["farm-c"]
	describe := func(g string) string {
		return "aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names " + g + " --query AutoScalingGroups[0].LaunchTemplate.Version --output text"
	}
	start := func(g string) string {
		return "aws autoscaling start-instance-refresh --auto-scaling-group-name " + g + ` --strategy Rolling --desired-configuration {"LaunchTemplate":{"LaunchTemplateId":"lt-0abc","Version":"7"}} --preferences ` + prefs[g] + " --query InstanceRefreshId --output text"
	}
	poll := func(g string) string {
		return "aws autoscaling describe-instance-refreshes --auto-scaling-group-name " + g + " --instance-refresh-ids refresh-" + g + " --query InstanceRefreshes[0].[Status,PercentageComplete,StatusReason] --output text"
	}

	for _, tt := range []struct {
		name    string
		version map[string]string
		status  map[string]string
		fails   []string // groups whose refresh cannot start
		timeout string
		ok      bool
		calls   []string
		message string
	}{
		{
			name:    "one AZ after the other",
			version: map[string]string{"farm-a": "7", "farm-b": "6", "farm-c": "6"},
			status: map[string]string{
				"farm-b": "Pending\t0\t\nInProgress\t50\t\nBaking\t100\t\nSuccessful\t100\tdone\n",
				"farm-c": "Successful\t100\tdone\n",
			},
			ok: true,
			calls: []string{
				describe("farm-a"),
				describe("farm-b"), start("farm-b"), poll("farm-b"), poll("farm-b"), poll("farm-b"), poll("farm-b"),
				describe("farm-c"), start("farm-c"), poll("farm-c"),
			},
			message: "launch template lt-0abc version 7 is out (3 groups)",
		},
		{
			name:    "rolled back: the AZs after it keep their version",
			version: map[string]string{"farm-a": "6", "farm-b": "6", "farm-c": "6"},
			status: map[string]string{
				"farm-a": "Successful\t100\t\n",
				"farm-b": "InProgress\t50\t\nRollbackInProgress\t50\tAlarm farm-b-unhealthy-targets in ALARM\nRollbackSuccessful\t0\tAlarm farm-b-unhealthy-targets in ALARM\n",
			},
			calls: []string{
				describe("farm-a"), start("farm-a"), poll("farm-a"),
				describe("farm-b"), start("farm-b"), poll("farm-b"), poll("farm-b"), poll("farm-b"),
			},
			message: "farm-b: refresh refresh-farm-b ended RollbackSuccessful: Alarm farm-b-unhealthy-targets in ALARM",
		},
		{
			name:    "too slow: rolled back",
			version: map[string]string{"farm-a": "6", "farm-b": "6", "farm-c": "6"},
			status:  map[string]string{"farm-a": "InProgress\t10\t\n"},
			timeout: "0",
			calls: []string{
				describe("farm-a"), start("farm-a"), poll("farm-a"),
				"aws autoscaling rollback-instance-refresh --auto-scaling-group-name farm-a",
			},
			message: "still InProgress after 0s: rolling it back",
		},
		{
			name:    "refresh cannot start",
			version: map[string]string{"farm-a": "6", "farm-b": "6", "farm-c": "6"},
			fails:   []string{"farm-a"},
			calls:   []string{describe("farm-a"), start("farm-a")},
			message: "farm-a: cannot start an instance refresh",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			for g, v := range tt.version {
				os.WriteFile(filepath.Join(state, g+".version"), []byte(v+"\n"), 0o644)
			}
			for g, st := range tt.status {
				os.WriteFile(filepath.Join(state, g+".status"), []byte(st), 0o644)
			}
			for _, g := range tt.fails {
				os.WriteFile(filepath.Join(state, g+".start-fails"), nil, 0o644)
			}
			s := newStubs(t, map[string]string{"aws": autoscalingStub})
			env := []string{
				"ROLLOUT_STATE=" + state,
				"EGRESSD_ROLLOUT_TEMPLATE_ID=lt-0abc",
				"EGRESSD_ROLLOUT_TEMPLATE_VERSION=7",
				"EGRESSD_ROLLOUT_PLAN=" + plan,
				"EGRESSD_ROLLOUT_POLL_SECONDS=0",
			}
			if tt.timeout != "" {
				env = append(env, "EGRESSD_ROLLOUT_TIMEOUT_SECONDS="+tt.timeout)
			}
			out, err := s.run(t, script, env)
			if (err == nil) != tt.ok {
				t.Fatalf("rollout: err %v, want ok=%v\n%s", err, tt.ok, out)
			}
			if diff := cmp.Diff(tt.calls, s.calls(t)); diff != "" {
				t.Errorf("AWS CLI calls (-want +got):\n%s", diff)
			}
			if !strings.Contains(out, tt.message) {
				t.Errorf("output lacks %q:\n%s", tt.message, out)
			}
			if !tt.ok && !strings.Contains(out, "the groups after it keep their version") {
				t.Errorf("a failed rollout must say the remaining AZs were left alone:\n%s", out)
			}
		})
	}

	t.Run("no AWS CLI", func(t *testing.T) {
		s := newStubs(t, nil)
		out, err := s.run(t, script, []string{"EGRESSD_ROLLOUT_TEMPLATE_ID=lt-0abc", "EGRESSD_ROLLOUT_TEMPLATE_VERSION=7", "EGRESSD_ROLLOUT_PLAN=" + plan})
		if err == nil || !strings.Contains(out, "instance_refresh_on_apply = false") {
			t.Errorf("rollout without the AWS CLI: err %v\n%s", err, out)
		}
	})
}
