package deployments

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The in-line module's route takeover (files/egressd-route-takeover.sh),
// run with /bin/sh against a stand-in for the EC2 and Auto Scaling APIs
// (the stub `aws` below, keeping route tables in files), IMDSv2 and the
// gateways' /readyz on loopback addresses.

const takeoverScript = "terraform/modules/egressd-inline/files/egressd-route-takeover.sh"

// routeStub keeps the routes in $ROUTES ("rtb dest target state" lines; a
// table without a line has no such route) and the gateways' interfaces in
// $ENIS ("eni ip az").
const routeStub = `
routes=$ROUTES enis=$ENIS
case "$1 $2" in
"ec2 describe-route-tables")
	shift 2
	ids= query=
	while [ $# -gt 0 ]; do
		case $1 in
		--route-table-ids) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do ids="$ids $1"; shift; done; continue ;;
		--query) query=$2; shift ;;
		esac
		shift
	done
	dest=0.0.0.0/0
	case $query in *"DestinationIpv6CidrBlock=='::/0'"*) dest=::/0 ;; esac
	for id in $ids; do
		awk -v id="$id" -v d="$dest" '
			$1 == id && $2 == d { t = $3; if (t !~ /^eni-/) t = "None"; printf "%s\t%s\t%s\n", id, t, $4; found = 1 }
			END { if (!found) printf "%s\tNone\tNone\n", id }' "$routes"
	done ;;
"ec2 create-route" | "ec2 replace-route")
	action=$2 rtb=$4 dest=$6 eni=$8
	exists=$(awk -v r="$rtb" -v d="$dest" '$1 == r && $2 == d' "$routes")
	if [ "$action" = create-route ] && [ -n "$exists" ]; then echo "An error occurred (RouteAlreadyExists)" >&2; exit 254; fi
	if [ "$action" = replace-route ] && [ -z "$exists" ]; then echo "An error occurred (InvalidRoute.NotFound)" >&2; exit 254; fi
	awk -v r="$rtb" -v d="$dest" '!($1 == r && $2 == d)' "$routes" >"$routes.new"
	echo "$rtb $dest $eni active" >>"$routes.new"
	sort "$routes.new" >"$routes" ;;
"ec2 describe-network-interfaces")
	case $3 in
	--network-interface-ids)
		line=$(awk -v e="$4" '$1 == e { printf "%s\t%s\n", $2, $3 }' "$enis")
		[ -n "$line" ] || { echo "An error occurred (InvalidNetworkInterfaceID.NotFound)" >&2; exit 254; }
		echo "$line" ;;
	--filters)
		[ "$4" = "Name=tag:egressd-farm,Values=edge" ] || { echo "unexpected filter $4" >&2; exit 4; }
		awk '{ printf "%s\t%s\t%s\n", $1, $2, $3 }' "$enis" ;;
	esac ;;
"ec2 modify-network-interface-attribute") ;;
"autoscaling set-instance-health") ;;
*) echo "unexpected aws $*" >&2; exit 3 ;;
esac`

// takeoverIMDS answers IMDSv2 as the instance i-0self (eni-self in
// us-east-1a) in lifecycle state lifecycle.
func takeoverIMDS(t *testing.T, lifecycle string) *httptest.Server {
	t.Helper()
	meta := map[string]string{
		"instance-id":                 "i-0self",
		"placement/availability-zone": "us-east-1a",
		"mac":                         "0e:00:00:00:00:01",
		"network/interfaces/macs/0e:00:00:00:00:01/interface-id": "eni-self",
		"autoscaling/target-lifecycle-state":                     lifecycle,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("token-1"))
	})
	mux.HandleFunc("GET /latest/meta-data/", func(w http.ResponseWriter, r *http.Request) {
		v, ok := meta[strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")]
		if r.Header.Get("X-aws-ec2-metadata-token") != "token-1" || !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(v))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// gatewayHealth serves /readyz on every address of status (a loopback IP)
// with its status code, all on one port, and returns the port. Status 0:
// nothing listens there.
func gatewayHealth(t *testing.T, status map[string]int) int {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := map[string]net.Listener{"127.0.0.1": first}
		ok := true
		for ip, code := range status {
			if ip == "127.0.0.1" || code == 0 {
				continue
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			lns[ip] = ln
		}
		if !ok {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		for ip, ln := range lns {
			code := status[ip]
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/readyz" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(code)
			}))
			srv.Listener.Close()
			srv.Listener = ln
			srv.Start()
			t.Cleanup(srv.Close)
		}
		return port
	}
	t.Fatal("no port free on every gateway address")
	return 0
}

func TestInlineRouteTakeover(t *testing.T) {
	// The gateways: this one (eni-self, 127.0.0.1, us-east-1a), a healthy
	// one of the same AZ, a healthy and a failing one in us-east-1b, and
	// one whose interface is gone.
	const enis = "eni-self 127.0.0.1 us-east-1a\neni-a2 127.0.0.4 us-east-1a\neni-b1 127.0.0.2 us-east-1b\neni-b2 127.0.0.3 us-east-1b\n"
	const plan = "us-east-1a rtb-a1 rtb-a2;us-east-1b rtb-b1;us-east-1c rtb-c1"
	healthy := map[string]int{"127.0.0.1": 200, "127.0.0.4": 200, "127.0.0.2": 200, "127.0.0.3": 503}

	for _, tt := range []struct {
		name      string
		routes    string // before
		passes    int
		selfDown  bool // this gateway's egressd answers 503
		ipv6      bool
		lifecycle string
		want      string // routes after
		message   string
		calls     []string // aws calls that must have been made
	}{
		{
			name: "boot: this AZ's tables get a route at once", passes: 1,
			want:    "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\n",
			message: "rtb-a1 0.0.0.0/0 -> eni-self: no default route (now i-0self in us-east-1a)",
			calls:   []string{"aws ec2 modify-network-interface-attribute --network-interface-id eni-self --no-source-dest-check"},
		},
		{
			name: "another AZ's missing route waits for the threshold", passes: 2,
			want: "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\n",
		},
		{
			name: "another AZ's missing route after the threshold", passes: 3,
			want: "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-self active\nrtb-c1 0.0.0.0/0 eni-self active\n",
		},
		{
			name: "this AZ's table comes back from a healthy gateway in another AZ", passes: 1,
			routes:  "rtb-a1 0.0.0.0/0 eni-b1 active\nrtb-a2 0.0.0.0/0 eni-self active\n",
			want:    "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\n",
			message: "back to its AZ from eni-b1 in us-east-1b",
		},
		{
			name: "a healthy gateway of the table's AZ keeps it", passes: 4,
			routes: "rtb-a1 0.0.0.0/0 eni-a2 active\nrtb-a2 0.0.0.0/0 eni-a2 active\nrtb-b1 0.0.0.0/0 eni-b1 active\nrtb-c1 0.0.0.0/0 eni-b1 active\n",
			want:   "rtb-a1 0.0.0.0/0 eni-a2 active\nrtb-a2 0.0.0.0/0 eni-a2 active\nrtb-b1 0.0.0.0/0 eni-b1 active\nrtb-c1 0.0.0.0/0 eni-b1 active\n",
		},
		{
			name: "a failing gateway keeps its table for threshold-1 checks", passes: 2,
			routes: "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-b2 active\nrtb-c1 0.0.0.0/0 eni-b1 active\n",
			want:   "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-b2 active\nrtb-c1 0.0.0.0/0 eni-b1 active\n",
		},
		{
			name: "a failing gateway's table is taken at the threshold", passes: 3,
			routes:  "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-b2 active\nrtb-c1 0.0.0.0/0 eni-b1 active\n",
			want:    "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-self active\nrtb-c1 0.0.0.0/0 eni-b1 active\n",
			message: "rtb-b1 0.0.0.0/0 -> eni-self: eni-b2 failed 3 health checks",
		},
		{
			name: "an interface that cannot be found counts as failed", passes: 3,
			routes: "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-b1 active\nrtb-c1 0.0.0.0/0 eni-gone active\n",
			want:   "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-b1 active\nrtb-c1 0.0.0.0/0 eni-self active\n",
		},
		{
			name: "a blackhole is taken at once", passes: 1,
			routes:  "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-c1 0.0.0.0/0 eni-gone blackhole\n",
			want:    "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-c1 0.0.0.0/0 eni-self active\n",
			message: "eni-gone is gone",
		},
		{
			name: "a NAT gateway route of this AZ is taken at once", passes: 1,
			routes: "rtb-a1 0.0.0.0/0 nat-0abc active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 nat-0abc active\n",
			want:   "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 nat-0abc active\n",
		},
		{
			name: "a gateway whose egressd is not ready changes nothing and reports itself", passes: 4, selfDown: true,
			routes:  "rtb-b1 0.0.0.0/0 eni-b2 active\nrtb-c1 0.0.0.0/0 eni-gone blackhole\n",
			want:    "rtb-b1 0.0.0.0/0 eni-b2 active\nrtb-c1 0.0.0.0/0 eni-gone blackhole\n",
			message: "marked i-0self unhealthy",
			calls:   []string{"aws autoscaling set-instance-health --instance-id i-0self --health-status Unhealthy"},
		},
		{
			name: "IPv6: ::/0 too", passes: 1, ipv6: true,
			routes: "rtb-a2 ::/0 eni-b1 active\n",
			want:   "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a1 ::/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-a2 ::/0 eni-self active\n",
			calls:  []string{"aws ec2 create-route --route-table-id rtb-a1 --destination-ipv6-cidr-block ::/0 --network-interface-id eni-self", "aws ec2 replace-route --route-table-id rtb-a2 --destination-ipv6-cidr-block ::/0 --network-interface-id eni-self"},
		},
		{
			name: "terminated: tables handed to healthy peers, the table's AZ first", passes: 5, lifecycle: "Terminated",
			routes:  "rtb-a1 0.0.0.0/0 eni-self active\nrtb-a2 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-self active\nrtb-c1 0.0.0.0/0 eni-b2 active\n",
			want:    "rtb-a1 0.0.0.0/0 eni-a2 active\nrtb-a2 0.0.0.0/0 eni-a2 active\nrtb-b1 0.0.0.0/0 eni-b1 active\nrtb-c1 0.0.0.0/0 eni-b2 active\n",
			message: "rtb-b1 0.0.0.0/0 -> eni-b1: handed off by i-0self",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			routes := filepath.Join(dir, "routes")
			enisFile := filepath.Join(dir, "enis")
			if err := os.WriteFile(routes, []byte(tt.routes), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(enisFile, []byte(enis), 0o644); err != nil {
				t.Fatal(err)
			}
			status := map[string]int{}
			for k, v := range healthy {
				status[k] = v
			}
			if tt.selfDown {
				status["127.0.0.1"] = 503
			}
			port := gatewayHealth(t, status)
			lifecycle := tt.lifecycle
			if lifecycle == "" {
				lifecycle = "InService"
			}
			imds := takeoverIMDS(t, lifecycle)
			s := newStubs(t, map[string]string{"aws": routeStub})
			env := []string{
				"ROUTES=" + routes, "ENIS=" + enisFile,
				"EGRESSD_ROUTE_PLAN=" + plan,
				"EGRESSD_FARM_NAME=edge",
				fmt.Sprintf("EGRESSD_ROUTE_IPV6=%v", tt.ipv6),
				fmt.Sprintf("EGRESSD_ADMIN_PORT=%d", port),
				"EGRESSD_HEALTH_INTERVAL_SECONDS=0",
				"EGRESSD_HEALTH_TIMEOUT_SECONDS=2",
				"EGRESSD_HEALTH_UNHEALTHY_THRESHOLD=3",
				"EGRESSD_SELF_GRACE_SECONDS=0",
				"EGRESSD_IMDS_ENDPOINT=" + imds.URL,
				"EGRESSD_TAKEOVER_STATE=" + filepath.Join(dir, "state"),
				fmt.Sprintf("EGRESSD_TAKEOVER_PASSES=%d", tt.passes),
			}
			out, err := s.run(t, takeoverScript, env, "run")
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			after, err := os.ReadFile(routes)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(after)); diff != "" {
				t.Errorf("routes after %d checks (-want +got):\n%s\n%s", tt.passes, diff, out)
			}
			if !strings.Contains(out, tt.message) {
				t.Errorf("output lacks %q:\n%s", tt.message, out)
			}
			calls := s.calls(t)
			for _, want := range tt.calls {
				if !slices.Contains(calls, want) {
					t.Errorf("no call %q in:\n%s", want, strings.Join(calls, "\n"))
				}
			}
			for _, c := range calls {
				// Only the client route tables, only at this gateway or a peer.
				if strings.Contains(c, "-route ") && !strings.Contains(c, "--network-interface-id eni-") {
					t.Errorf("a route to something else than a gateway: %q", c)
				}
				if strings.Contains(c, "set-instance-health") && !tt.selfDown {
					t.Errorf("a healthy gateway reported itself: %q", c)
				}
			}
		})
	}
}

// TestInlineRouteHandoff: a planned stop hands each table to a healthy
// peer of its AZ, else of another AZ, and keeps it when there is none.
func TestInlineRouteHandoff(t *testing.T) {
	const plan = "us-east-1a rtb-a1;us-east-1b rtb-b1"
	const routesBefore = "rtb-a1 0.0.0.0/0 eni-self active\nrtb-b1 0.0.0.0/0 eni-self active\n"
	for _, tt := range []struct {
		name    string
		status  map[string]int
		want    string
		message string
	}{
		{
			name:   "a healthy peer in another AZ takes both",
			status: map[string]int{"127.0.0.1": 200, "127.0.0.2": 200, "127.0.0.3": 503},
			want:   "rtb-a1 0.0.0.0/0 eni-b1 active\nrtb-b1 0.0.0.0/0 eni-b1 active\n",
		},
		{
			name:    "no healthy peer: the tables stay",
			status:  map[string]int{"127.0.0.1": 200, "127.0.0.2": 503, "127.0.0.3": 0},
			want:    routesBefore,
			message: "no healthy gateway to take rtb-a1 0.0.0.0/0",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			routes := filepath.Join(dir, "routes")
			enisFile := filepath.Join(dir, "enis")
			os.WriteFile(routes, []byte(routesBefore), 0o644)
			os.WriteFile(enisFile, []byte("eni-self 127.0.0.1 us-east-1a\neni-b1 127.0.0.2 us-east-1b\neni-b2 127.0.0.3 us-east-1b\n"), 0o644)
			port := gatewayHealth(t, tt.status)
			imds := takeoverIMDS(t, "InService")
			s := newStubs(t, map[string]string{"aws": routeStub})
			out, err := s.run(t, takeoverScript, []string{
				"ROUTES=" + routes, "ENIS=" + enisFile, "EGRESSD_ROUTE_PLAN=" + plan, "EGRESSD_FARM_NAME=edge",
				fmt.Sprintf("EGRESSD_ADMIN_PORT=%d", port), "EGRESSD_IMDS_ENDPOINT=" + imds.URL,
				"EGRESSD_TAKEOVER_STATE=" + filepath.Join(dir, "state"),
			}, "handoff")
			if err != nil {
				t.Fatalf("handoff: %v\n%s", err, out)
			}
			after, _ := os.ReadFile(routes)
			if diff := cmp.Diff(tt.want, string(after)); diff != "" {
				t.Errorf("routes after handoff (-want +got):\n%s\n%s", diff, out)
			}
			if !strings.Contains(out, tt.message) {
				t.Errorf("output lacks %q:\n%s", tt.message, out)
			}
		})
	}
}
