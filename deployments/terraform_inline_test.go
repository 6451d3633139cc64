package deployments

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The in-line module (modules/egressd-inline) evaluated for a sample: three
// AZs, two client route tables in the first, data sources answered as AWS
// would in us-east-1.

func inlineVars(extra map[string]cty.Value) map[string]cty.Value {
	subnets := map[string]cty.Value{}
	for i, az := range farmAZs {
		subnets[az] = cty.StringVal("subnet-0" + string(rune('a'+i)))
	}
	vars := map[string]cty.Value{
		"name":             cty.StringVal("edge"),
		"vpc_id":           cty.StringVal("vpc-0abc"),
		"subnet_ids_by_az": cty.MapVal(subnets),
		"client_route_table_ids_by_az": cty.MapVal(map[string]cty.Value{
			"us-east-1a": strList("rtb-0aaa1111", "rtb-0aaa2222"),
			"us-east-1b": strList("rtb-0bbb1111"),
			"us-east-1c": strList("rtb-0ccc1111"),
		}),
		"client_cidrs":   strList("10.0.0.0/20", "10.0.16.0/20"),
		"ami_id":         cty.StringVal("ami-0abc"),
		"package_s3_uri": cty.StringVal(samplePackageURI),
		"package_sha256": cty.StringVal(sampleSHA256),
		"config_s3_uri":  cty.StringVal(sampleConfigURI),
	}
	for k, v := range extra {
		vars[k] = v
	}
	return vars
}

func inlineRoots() map[string]cty.Value {
	obj := func(k string, v cty.Value) cty.Value { return cty.ObjectVal(map[string]cty.Value{k: v}) }
	return map[string]cty.Value{
		"data": cty.ObjectVal(map[string]cty.Value{
			"aws_partition":       obj("current", obj("partition", cty.StringVal("aws"))),
			"aws_region":          obj("current", obj("region", cty.StringVal("us-east-1"))),
			"aws_caller_identity": obj("current", obj("account_id", cty.StringVal("123456789012"))),
			"aws_vpc":             obj("this", obj("cidr_block", cty.StringVal("10.0.0.0/16"))),
		}),
		"path": obj("module", cty.StringVal(inlineDir)),
	}
}

// renderInlineUserData renders the in-line module's user data as Terraform
// would, for the sample with extra variables.
func renderInlineUserData(t *testing.T, extra map[string]cty.Value) string {
	t.Helper()
	m := loadModules(t)[inlineDir]
	call := m.locals()["user_data"].(*hclsyntax.FunctionCallExpr)
	obj := m.eval(t, call.Args[1], inlineVars(extra), inlineRoots())
	src, err := os.ReadFile(filepath.Join(inlineDir, "user_data.sh.tftpl"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, diags := hclsyntax.ParseTemplate(src, "user_data.sh.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	out, diags := tmpl.Value(&hcl.EvalContext{Variables: obj.AsValueMap()})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return out.AsString()
}

// preconditionsHold evaluates a resource's lifecycle preconditions.
func (m *tfModule) preconditionsHold(t *testing.T, typ, name string, vars, roots map[string]cty.Value) (failed []string) {
	t.Helper()
	for _, lc := range nested(m.one(t, "resource", typ, name), "lifecycle") {
		for _, pc := range nested(lc, "precondition") {
			if !m.eval(t, attr(t, pc, "condition").Expr, vars, roots).True() {
				failed = append(failed, literalString(t, pc, "error_message"))
			}
		}
	}
	return failed
}

func TestTerraformInlineVariableValidations(t *testing.T) {
	m := loadModules(t)[inlineDir]
	rtbs := func(ids ...string) cty.Value { return cty.MapVal(map[string]cty.Value{"us-east-1a": strList(ids...)}) }
	for _, c := range []struct {
		variable string
		value    cty.Value
		ok       bool
	}{
		{"client_route_table_ids_by_az", rtbs("rtb-0123456789abcdef0"), true},
		{"client_route_table_ids_by_az", rtbs("rtb-01234567", "rtb-89abcdef"), true},
		{"client_route_table_ids_by_az", rtbs(), false},
		{"client_route_table_ids_by_az", rtbs("subnet-01234567"), false},
		{"client_route_table_ids_by_az", rtbs("rtb-0123;reboot"), false},
		{"client_route_table_ids_by_az", cty.MapValEmpty(cty.List(cty.String)), false},
		{"gateways_per_az", cty.NumberIntVal(1), true},
		{"gateways_per_az", cty.NumberIntVal(2), true},
		{"gateways_per_az", cty.NumberIntVal(0), false},
		{"gateways_per_az", cty.NumberFloatVal(1.5), false},
		{"client_cidrs", strList("10.0.0.0/20"), true},
		{"client_cidrs", strList("2600:1f18:abcd:1200::/56"), true},
		{"client_cidrs", strList("0.0.0.0/0"), false},
		{"client_cidrs", strList("203.0.113.0/24"), false},
		{"redirect_ports", numList(80, 443, 22), true},
		{"redirect_ports", cty.ListValEmpty(cty.Number), false},
		{"redirect_ports", numList(0), false},
		{"redirect_ports", numList(65536), false},
		{"transparent_port", cty.NumberIntVal(3130), true},
		{"transparent_port", cty.NumberIntVal(0), false},
		{"interception", cty.StringVal("redirect"), true},
		{"interception", cty.StringVal("tproxy"), true},
		{"interception", cty.StringVal("nat"), false},
		{"egress_mode", cty.StringVal("public_ip"), true},
		{"egress_mode", cty.StringVal("elastic_ip"), false},
		{"health_check_interval_seconds", cty.NumberIntVal(0), false},
		{"health_check_unhealthy_threshold", cty.NumberIntVal(1), false},
		{"handoff_seconds", cty.NumberIntVal(10), false},
		{"release", cty.StringVal("$(reboot)"), false},
		{"package_sha256", cty.StringVal("latest"), false},
		{"name", cty.StringVal("edge-inline"), true},
		{"name", cty.StringVal("edge inline"), false},
	} {
		if got := m.validates(t, c.variable, c.value); got != c.ok {
			t.Errorf("variable %q = %#v: accepted %v, want %v", c.variable, c.value, got, c.ok)
		}
	}

	// Cross-variable checks (preconditions of the launch template).
	for _, tt := range []struct {
		name  string
		extra map[string]cty.Value
		want  string
	}{
		{name: "sample"},
		{name: "clients in an AZ without a gateway", extra: map[string]cty.Value{
			"client_route_table_ids_by_az": cty.MapVal(map[string]cty.Value{"us-east-1d": strList("rtb-0ddd1111")}),
		}, want: "Every AZ of client_route_table_ids_by_az needs a gateway subnet"},
		{name: "no checksum", extra: map[string]cty.Value{"package_sha256": cty.NullVal(cty.String)}, want: "Set package_sha256"},
		{name: "no HTTPS egress", extra: map[string]cty.Value{"egress_ports": numList(80)}, want: "egress_ports must include 443"},
		{name: "timeout above interval", extra: map[string]cty.Value{"health_check_interval_seconds": cty.NumberIntVal(2), "health_check_timeout_seconds": cty.NumberIntVal(3)}, want: "must not exceed"},
	} {
		failed := m.preconditionsHold(t, "aws_launch_template", "this", inlineVars(tt.extra), inlineRoots())
		got := strings.Join(failed, "\n")
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("%s: failed preconditions %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestTerraformInlineIAM: the gateways may change routes in the client
// route tables and nowhere else, turn the source/destination check off on
// their own interfaces only, and report their own group's health.
func TestTerraformInlineIAM(t *testing.T) {
	m := loadModules(t)[inlineDir]
	vars, roots := inlineVars(nil), inlineRoots()
	const ec2 = "arn:aws:ec2:us-east-1:123456789012:"
	want := map[string]map[string]statement{
		"read_objects": {"ReadEgressdPackageAndConfig": {
			Actions:   []string{"s3:GetObject"},
			Resources: []string{"arn:aws:s3:::egressd-artifacts/releases/egressd_1.2.3_amd64.deb", "arn:aws:s3:::egressd-artifacts/config/egressd.yaml"},
		}},
		"route_takeover": {
			"ReadRoutesAndGateways": {Actions: []string{"ec2:DescribeRouteTables", "ec2:DescribeNetworkInterfaces"}, Resources: []string{"*"}},
			"PointClientDefaultRoutes": {
				Actions:   []string{"ec2:CreateRoute", "ec2:ReplaceRoute"},
				Resources: []string{ec2 + "route-table/rtb-0aaa1111", ec2 + "route-table/rtb-0aaa2222", ec2 + "route-table/rtb-0bbb1111", ec2 + "route-table/rtb-0ccc1111"},
			},
			"ForwardOnGatewayInterfaces": {
				Actions:    []string{"ec2:ModifyNetworkInterfaceAttribute"},
				Resources:  []string{ec2 + "network-interface/*"},
				Conditions: []string{"StringEquals aws:ResourceTag/egressd-farm=edge"},
			},
			"ReportOwnHealth": {
				Actions: []string{"autoscaling:SetInstanceHealth"},
				Resources: []string{
					"arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/edge-us-east-1a",
					"arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/edge-us-east-1b",
					"arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*:autoScalingGroupName/edge-us-east-1c",
				},
			},
		},
	}
	var docs []string
	for _, d := range m.blocks("data", "aws_iam_policy_document") {
		if d.Labels[1] != "assume_ec2" {
			docs = append(docs, d.Labels[1])
		}
	}
	sort.Strings(docs)
	if diff := cmp.Diff([]string{"read_objects", "route_takeover"}, docs); diff != "" {
		t.Errorf("permission documents (-want +got):\n%s", diff)
	}
	for doc, statements := range want {
		if diff := cmp.Diff(statements, m.policyStatements(t, doc, vars, roots)); diff != "" {
			t.Errorf("data.aws_iam_policy_document.%s (-want +got):\n%s", doc, diff)
		}
	}
	// The groups the role may report to are the groups the module creates.
	for _, az := range farmAZs {
		if got := m.resourceAttr(t, "aws_autoscaling_group", "this", "name", az, vars, roots).AsString(); got != "edge-"+az {
			t.Errorf("group of %s is named %q, want edge-%s", az, got, az)
		}
	}
	// The tag condition matches what the launch template tags.
	lt := m.one(t, "resource", "aws_launch_template", "this")
	tagged := map[string]bool{}
	for _, ts := range nested(lt, "tag_specifications") {
		if v, ok := m.eval(t, attr(t, ts, "tags").Expr, vars, roots).AsValueMap()["egressd-farm"]; ok && v.AsString() == "edge" {
			tagged[literalString(t, ts, "resource_type")] = true
		}
	}
	if !tagged["network-interface"] || !tagged["instance"] {
		t.Errorf("the launch template must tag instances and interfaces egressd-farm = name: %v", tagged)
	}
	for _, role := range m.resources("aws_iam_role") {
		if !hasRef(m.refs(attr(t, role, "permissions_boundary").Expr), "var.iam_permissions_boundary_arn") {
			t.Errorf("aws_iam_role %q: permissions_boundary must be var.iam_permissions_boundary_arn", role.Labels[1])
		}
	}
}

// TestTerraformInlineNetwork: what reaches the gateways and what they reach.
func TestTerraformInlineNetwork(t *testing.T) {
	m := loadModules(t)[inlineDir]
	for _, typ := range []string{"aws_lb", "aws_lb_listener", "aws_route", "aws_eip"} {
		if len(m.resources(typ)) > 0 {
			t.Errorf("the in-line module creates %s: routes belong to the takeover, and the gateways need no load balancer", typ)
		}
	}
	keys := func(v cty.Value) []string {
		var out []string
		for k := range v.AsValueMap() {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	vars, roots := inlineVars(map[string]cty.Value{"redirect_ports": numList(80, 443, 22)}), inlineRoots()
	want := []string{
		"tcp/22|10.0.0.0/20", "tcp/22|10.0.16.0/20", "tcp/443|10.0.0.0/20", "tcp/443|10.0.16.0/20",
		"tcp/80|10.0.0.0/20", "tcp/80|10.0.16.0/20", "udp/443|10.0.0.0/20", "udp/443|10.0.16.0/20",
	}
	if diff := cmp.Diff(want, keys(m.evalLocal(t, "client_ingress", vars, roots))); diff != "" {
		t.Errorf("ingress from clients (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"vpc"}, keys(m.evalLocal(t, "admin_ingress", vars, roots))); diff != "" {
		t.Errorf("admin ingress (-want +got):\n%s", diff)
	}
	for _, name := range []string{"admin_from_gateways"} {
		r := m.one(t, "resource", "aws_vpc_security_group_ingress_rule", name)
		if !hasRef(m.refs(attr(t, r, "referenced_security_group_id").Expr), "aws_security_group.gateway") {
			t.Errorf("%s must admit the gateways' own group", name)
		}
	}
	for _, v6 := range []bool{false, true} {
		v := inlineVars(map[string]cty.Value{"ipv6": cty.BoolVal(v6)})
		want := []string{"443|0.0.0.0/0", "80|0.0.0.0/0"}
		if v6 {
			want = []string{"443|0.0.0.0/0", "443|::/0", "80|0.0.0.0/0", "80|::/0"}
		}
		if diff := cmp.Diff(want, keys(m.evalLocal(t, "internet_egress", v, roots))); diff != "" {
			t.Errorf("ipv6=%v: egress (-want +got):\n%s", v6, diff)
		}
	}

	lt := m.one(t, "resource", "aws_launch_template", "this")
	ni := nested(lt, "network_interfaces")[0]
	for mode, public := range map[string]bool{"nat_gateway": false, "public_ip": true} {
		v := inlineVars(map[string]cty.Value{"egress_mode": cty.StringVal(mode)})
		if got := m.eval(t, attr(t, ni, "associate_public_ip_address").Expr, v, roots); got.True() != public {
			t.Errorf("%s: associate_public_ip_address = %#v", mode, got)
		}
	}
	md := nested(lt, "metadata_options")[0]
	if literalString(t, md, "http_tokens") != "required" || asInt(t, literal(t, md, "http_put_response_hop_limit")) != 1 {
		t.Errorf("IMDSv2 only, hop limit 1: nothing the gateway forwards may reach its metadata")
	}
}

// TestTerraformInlineGroups: one group per AZ of gateways_per_az, replaced
// by instance refreshes that launch before they terminate and roll back,
// and a termination hook that gives the handoff its time.
func TestTerraformInlineGroups(t *testing.T) {
	m := loadModules(t)[inlineDir]
	vars, roots := inlineVars(map[string]cty.Value{"gateways_per_az": cty.NumberIntVal(2)}), inlineRoots()
	asg := m.one(t, "resource", "aws_autoscaling_group", "this")
	if got := m.forEachKeys(t, asg, vars, roots); !cmp.Equal(got, farmAZs) {
		t.Errorf("groups for %q, want one per AZ", got)
	}
	for attrName, want := range map[string]int64{"min_size": 2, "desired_capacity": 2, "max_size": 4} {
		if got := asInt(t, m.eval(t, attr(t, asg, attrName).Expr, vars, roots)); got != want {
			t.Errorf("%s = %d, want %d", attrName, got, want)
		}
	}
	if got := literalString(t, asg, "health_check_type"); got != "EC2" {
		t.Errorf("health_check_type = %q: the gateways report their own health", got)
	}
	refresh := nested(asg, "instance_refresh")
	if len(refresh) != 1 {
		t.Fatalf("want one instance_refresh block")
	}
	prefs := nested(refresh[0], "preferences")[0]
	for name, want := range map[string]cty.Value{
		"min_healthy_percentage": cty.NumberIntVal(100),
		"max_healthy_percentage": cty.NumberIntVal(200),
		"auto_rollback":          cty.True,
		"skip_matching":          cty.True,
	} {
		if got := literal(t, prefs, name); !got.RawEquals(want) {
			t.Errorf("instance_refresh.preferences.%s = %#v, want %#v", name, got, want)
		}
	}
	hook := m.one(t, "resource", "aws_autoscaling_lifecycle_hook", "handoff")
	if literalString(t, hook, "lifecycle_transition") != "autoscaling:EC2_INSTANCE_TERMINATING" || literalString(t, hook, "default_result") != "CONTINUE" {
		t.Errorf("the handoff hook must hold terminating gateways and then continue")
	}
	if !hasRef(m.refs(attr(t, hook, "heartbeat_timeout").Expr), "var.handoff_seconds") {
		t.Errorf("the handoff hook's heartbeat must be var.handoff_seconds")
	}
}

// TestTerraformInlineUserData: the template gets exactly the variables it
// uses, renders to valid shell under EC2's size limit, and writes settings
// that the shipped rules loader and the route takeover accept.
func TestTerraformInlineUserData(t *testing.T) {
	m := loadModules(t)[inlineDir]
	call := m.locals()["user_data"].(*hclsyntax.FunctionCallExpr)
	var given []string
	for _, item := range call.Args[1].(*hclsyntax.ObjectConsExpr).Items {
		given = append(given, hcl.ExprAsKeyword(item.KeyExpr))
	}
	sort.Strings(given)
	src, err := os.ReadFile(filepath.Join(inlineDir, "user_data.sh.tftpl"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, diags := hclsyntax.ParseTemplate(src, "user_data.sh.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	var used []string
	for _, tr := range hclsyntax.Variables(tmpl) {
		used = append(used, tr.RootName())
	}
	if diff := cmp.Diff(given, sortedSet(used)); diff != "" {
		t.Errorf("templatefile variables given (-) vs used (+):\n%s", diff)
	}

	takeover := readFile(t, takeoverScript)
	ns := testenv.NewNetns(t)
	for _, tt := range []struct {
		name  string
		extra map[string]cty.Value
		want  []string
	}{
		{"redirect", nil,
			[]string{`EGRESSD_CLIENT_CIDRS="10.0.0.0/20 10.0.16.0/20"`, "EGRESSD_IPV4_MODE=redirect", "EGRESSD_IPV6_MODE=off", "EGRESSD_TRANSPARENT_PORT=3130",
				`EGRESSD_ROUTE_PLAN="us-east-1a rtb-0aaa1111 rtb-0aaa2222;us-east-1b rtb-0bbb1111;us-east-1c rtb-0ccc1111"`, "EGRESSD_ROUTE_IPV6=false",
				"systemctl enable egressd-transparent.service egressd.service egressd-policy-sync.timer egressd-route-takeover.service",
				"INTERCEPTION='redirect'"}},
		{"tproxy with IPv6", map[string]cty.Value{"interception": cty.StringVal("tproxy"), "ipv6": cty.True, "client_cidrs": strList("10.0.0.0/20", "2600:1f18:abcd:1200::/56")},
			[]string{"EGRESSD_IPV4_MODE=tproxy", "EGRESSD_IPV6_MODE=tproxy", "EGRESSD_ROUTE_IPV6=true", "INTERCEPTION='tproxy'", "AmbientCapabilities=CAP_NET_RAW"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			script := renderInlineUserData(t, tt.extra)
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			zw.Write([]byte(script))
			zw.Close()
			if gz.Len() > 8192 {
				t.Errorf("gzipped user data is %d bytes; EC2 takes 16384, keep it under half", gz.Len())
			}
			path := filepath.Join(t.TempDir(), "user-data.sh")
			if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
				t.Errorf("sh -n: %v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(script, w) {
					t.Errorf("rendered user data lacks %q", w)
				}
			}
			if !strings.Contains(script, takeover) {
				t.Errorf("the user data does not install files/egressd-route-takeover.sh as it is")
			}

			// The rules' settings the user data writes pass the shipped loader.
			var settings []string
			for _, line := range heredoc(t, script, "EGRESSD_TRANSPARENT_SETTINGS") {
				key, value, _ := strings.Cut(line, "=")
				settings = append(settings, key+"="+strings.Trim(value, `"`))
			}
			if out, exit := rules(t, ns, "check", settings...); exit != 0 {
				t.Errorf("the rendered settings fail the loader's check: exit %d\n%s", exit, out)
			}
			// Every takeover setting is one the script reads.
			for _, line := range heredoc(t, script, "EGRESSD_TAKEOVER_SETTINGS") {
				key, _, _ := strings.Cut(line, "=")
				if !strings.Contains(takeover, key) && !strings.HasPrefix(key, "AWS_") {
					t.Errorf("takeover setting %s is not read by the script", key)
				}
			}
		})
	}
	// The units the user data starts are the package's, and the settings
	// file it writes is the one the unit reads.
	script := renderInlineUserData(t, nil)
	if !strings.Contains(script, "cat >/etc/default/egressd-transparent <<") {
		t.Errorf("the user data does not write /etc/default/egressd-transparent")
	}
	if _, err := os.Stat("systemd/egressd-transparent.service"); err != nil {
		t.Error(err)
	}
}

// heredoc returns the non-comment lines of the here-document ending with
// marker in script.
func heredoc(t *testing.T, script, marker string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<<'` + marker + `'\n(.*?)\n` + marker + `\n`)
	m := re.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no here-document %s", marker)
	}
	var lines []string
	for _, l := range strings.Split(m[1], "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestTerraformInlineFailover: the output derives the detection time from
// the health check settings, and the docs give the same figure.
func TestTerraformInlineFailover(t *testing.T) {
	m := loadModules(t)[inlineDir]
	out := m.one(t, "output", "failover_detection_seconds")
	for _, tt := range []struct {
		interval, timeout, threshold int64
		want                         int64
	}{{5, 2, 3, 21}, {10, 2, 2, 24}, {1, 1, 2, 4}} {
		vars := inlineVars(map[string]cty.Value{
			"health_check_interval_seconds":    cty.NumberIntVal(tt.interval),
			"health_check_timeout_seconds":     cty.NumberIntVal(tt.timeout),
			"health_check_unhealthy_threshold": cty.NumberIntVal(tt.threshold),
		})
		if got := asInt(t, m.eval(t, attr(t, out, "value").Expr, vars, inlineRoots())); got != tt.want {
			t.Errorf("interval %d, timeout %d, threshold %d: %d s, want %d", tt.interval, tt.timeout, tt.threshold, got, tt.want)
		}
	}
	defaults := asInt(t, m.eval(t, attr(t, out, "value").Expr, inlineVars(nil), inlineRoots()))
	doc := readFile(t, "../docs/farm.md")
	if want := "3 × (5 s + 2 s) = 21 s"; defaults != 21 || !strings.Contains(doc, want) {
		t.Errorf("defaults give %d s; docs/farm.md must state %q", defaults, want)
	}
}
