package deployments

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The farm module evaluated for a sample farm: three AZs, the required
// variables set, data sources answered as AWS would in us-east-1, and the
// resources' attributes that other expressions read computed from the
// module's own expressions.

var farmAZs = []string{"us-east-1a", "us-east-1b", "us-east-1c"}

func strList(ss ...string) cty.Value {
	if len(ss) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	vals := make([]cty.Value, len(ss))
	for i, s := range ss {
		vals[i] = cty.StringVal(s)
	}
	return cty.ListVal(vals)
}

func numList(ns ...int64) cty.Value {
	vals := make([]cty.Value, len(ns))
	for i, n := range ns {
		vals[i] = cty.NumberIntVal(n)
	}
	return cty.ListVal(vals)
}

const (
	samplePackageURI = "s3://egressd-artifacts/releases/egressd_1.2.3_amd64.deb"
	sampleConfigURI  = "s3://egressd-artifacts/config/egressd.yaml"
	sampleSHA256     = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// farmVars are the sample farm's variables, with extra ones set on top.
func farmVars(extra map[string]cty.Value) map[string]cty.Value {
	subnets := map[string]cty.Value{}
	for i, az := range farmAZs {
		subnets[az] = cty.StringVal("subnet-0" + string(rune('a'+i)))
	}
	vars := map[string]cty.Value{
		"vpc_id":           cty.StringVal("vpc-0abc"),
		"subnet_ids_by_az": cty.MapVal(subnets),
		"client_cidrs":     strList("10.0.0.0/20", "10.0.16.0/20"),
		"ami_id":           cty.StringVal("ami-0abc"),
		"package_s3_uri":   cty.StringVal(samplePackageURI),
		"package_sha256":   cty.StringVal(sampleSHA256),
		"config_s3_uri":    cty.StringVal(sampleConfigURI),
	}
	for k, v := range extra {
		vars[k] = v
	}
	return vars
}

// farmRoots answers the data sources and the resource attributes that the
// farm's locals and outputs read. Names (groups, alarms) are computed from
// the module's own expressions, so that the tests see what Terraform would.
func farmRoots(t *testing.T, m *tfModule, vars map[string]cty.Value) map[string]cty.Value {
	t.Helper()
	roots := map[string]cty.Value{
		"data": cty.ObjectVal(map[string]cty.Value{
			"aws_partition":       cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"partition": cty.StringVal("aws")})}),
			"aws_region":          cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"region": cty.StringVal("us-east-1")})}),
			"aws_caller_identity": cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"account_id": cty.StringVal("123456789012")})}),
			"aws_vpc":             cty.ObjectVal(map[string]cty.Value{"this": cty.ObjectVal(map[string]cty.Value{"cidr_block": cty.StringVal("10.0.0.0/16")})}),
		}),
		"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(farmDir)}),
		"aws_launch_template": cty.ObjectVal(map[string]cty.Value{"this": cty.ObjectVal(map[string]cty.Value{
			"id": cty.StringVal("lt-0123456789abcdef0"), "latest_version": cty.NumberIntVal(7),
		})}),
	}
	groups := map[string]cty.Value{}
	alarms := map[string]cty.Value{}
	for _, az := range farmAZs {
		name := m.resourceAttr(t, "aws_autoscaling_group", "this", "name", az, vars, roots)
		groups[az] = cty.ObjectVal(map[string]cty.Value{"name": name})
		alarm := m.resourceAttr(t, "aws_cloudwatch_metric_alarm", "unhealthy_targets", "alarm_name", az, vars, roots)
		alarms[az] = cty.ObjectVal(map[string]cty.Value{"alarm_name": alarm})
	}
	roots["aws_autoscaling_group"] = cty.ObjectVal(map[string]cty.Value{"this": cty.MapVal(groups)})
	roots["aws_cloudwatch_metric_alarm"] = cty.ObjectVal(map[string]cty.Value{"unhealthy_targets": cty.MapVal(alarms)})
	return roots
}

// resourceAttr evaluates one attribute of a for_each resource for the
// instance with the given key.
func (m *tfModule) resourceAttr(t *testing.T, typ, name, attrName, key string, vars, roots map[string]cty.Value) cty.Value {
	t.Helper()
	b := m.one(t, "resource", typ, name)
	ctx := m.evalContext(vars, roots)
	ctx.Variables["each"] = cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(key), "value": cty.StringVal(key)})
	v, diags := attr(t, b, attrName).Expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s.%s[%q].%s: %s", typ, name, key, attrName, diags.Error())
	}
	return v
}

// evalLocal evaluates a local value of the sample farm.
func (m *tfModule) evalLocal(t *testing.T, name string, vars, roots map[string]cty.Value) cty.Value {
	t.Helper()
	e := m.locals()[name]
	if e == nil {
		t.Fatalf("%s: no local %q", m.dir, name)
	}
	return m.eval(t, e, vars, roots)
}

// count evaluates a resource's count (1 when it has none).
func (m *tfModule) count(t *testing.T, b *hclsyntax.Block, vars, roots map[string]cty.Value) int64 {
	t.Helper()
	a := b.Body.Attributes["count"]
	if a == nil {
		return 1
	}
	return asInt(t, m.eval(t, a.Expr, vars, roots))
}

// forEachKeys evaluates a for_each and returns its keys, sorted.
func (m *tfModule) forEachKeys(t *testing.T, b *hclsyntax.Block, vars, roots map[string]cty.Value) []string {
	t.Helper()
	v := m.eval(t, attr(t, b, "for_each").Expr, vars, roots)
	var keys []string
	switch {
	case v.Type().IsSetType() || v.Type().IsListType() || v.Type().IsTupleType():
		for _, e := range v.AsValueSlice() {
			keys = append(keys, e.AsString())
		}
	default:
		for k := range v.AsValueMap() {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// validates reports whether value passes every validation block of a
// variable; a condition that cannot be evaluated is a refusal, as in
// Terraform.
func (m *tfModule) validates(t *testing.T, name string, value cty.Value) bool {
	t.Helper()
	vb := m.variable(t, name)
	ctx := m.evalContext(map[string]cty.Value{name: value}, nil)
	for _, val := range nested(vb, "validation") {
		v, diags := attr(t, val, "condition").Expr.Value(ctx)
		if diags.HasErrors() || v.IsNull() || !v.IsKnown() || v.False() {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------------------

// TestTerraformVariableValidations: the variables accept what they are for
// and refuse anything wider or malformed.
func TestTerraformVariableValidations(t *testing.T) {
	mods := loadModules(t)
	sha := strings.Repeat("ab", 32)
	cases := []struct {
		dir, variable string
		value         cty.Value
		ok            bool
	}{
		{farmDir, "client_cidrs", strList("10.0.0.0/16"), true},
		{farmDir, "client_cidrs", strList("172.31.0.0/16", "192.168.1.0/24", "100.64.0.0/10"), true},
		{farmDir, "client_cidrs", strList("2600:1f18:abcd:1200::/56"), true},
		{farmDir, "client_cidrs", strList("10.1.2.3/32"), true},
		{farmDir, "client_cidrs", strList(), false},
		{farmDir, "client_cidrs", strList("0.0.0.0/0"), false},
		{farmDir, "client_cidrs", strList("0.0.0.0/1", "128.0.0.0/1"), false},
		{farmDir, "client_cidrs", strList("8.8.8.0/24"), false},
		{farmDir, "client_cidrs", strList("10.0.0.0/16", "203.0.113.0/24"), false},
		{farmDir, "client_cidrs", strList("10.0.0.0/7"), false},
		{farmDir, "client_cidrs", strList("172.0.0.0/8"), false},
		{farmDir, "client_cidrs", strList("::/0"), false},
		{farmDir, "client_cidrs", strList("2000::/3"), false},
		{farmDir, "client_cidrs", strList("fd00::/8"), false},
		{farmDir, "client_cidrs", strList("10.0.0.0/33"), false},
		{farmDir, "client_cidrs", strList("banana"), false},
		{farmDir, "admin_cidrs", cty.NullVal(cty.List(cty.String)), true},
		{farmDir, "admin_cidrs", strList(), true},
		{farmDir, "admin_cidrs", strList("10.20.0.0/24"), true},
		{farmDir, "admin_cidrs", strList("0.0.0.0/0"), false},
		{farmDir, "admin_cidrs", strList("198.51.100.0/24"), false},
		{farmDir, "dns_server_cidrs", strList("10.0.0.2/32", "1.1.1.1/32", "2001:4860:4860::8888/128"), true},
		{farmDir, "dns_server_cidrs", strList("8.8.0.0/16"), false},
		{farmDir, "dns_server_cidrs", strList("0.0.0.0/0"), false},
		{farmDir, "dns_server_cidrs", strList("2001:4860::/32"), false},
		{farmDir, "egress_mode", cty.StringVal("nat_gateway"), true},
		{farmDir, "egress_mode", cty.StringVal("public_ip"), true},
		{farmDir, "egress_mode", cty.StringVal("elastic_ip"), true},
		{farmDir, "egress_mode", cty.StringVal("nat"), false},
		{farmDir, "elastic_ip_pool_size", cty.NullVal(cty.Number), true},
		{farmDir, "elastic_ip_pool_size", cty.NumberIntVal(6), true},
		{farmDir, "elastic_ip_pool_size", cty.NumberIntVal(0), false},
		{farmDir, "elastic_ip_pool_size", cty.NumberFloatVal(2.5), false},
		{farmDir, "release", cty.StringVal("1.4.0-policy42"), true},
		{farmDir, "release", cty.StringVal(""), false},
		{farmDir, "release", cty.StringVal("a b"), false},
		{farmDir, "release", cty.StringVal("$(reboot)"), false},
		{farmDir, "package_sha256", cty.StringVal(sha), true},
		{farmDir, "package_sha256", cty.NullVal(cty.String), true},
		{farmDir, "package_sha256", cty.StringVal(strings.ToUpper(sha)), false},
		{farmDir, "package_sha256", cty.StringVal(sha[1:]), false},
		{farmDir, "package_sha256sums_s3_uri", cty.StringVal("s3://egressd-artifacts/releases/SHA256SUMS"), true},
		{farmDir, "package_sha256sums_s3_uri", cty.StringVal("https://example.com/SHA256SUMS"), false},
		{farmDir, "package_sha256sums_s3_uri", cty.StringVal("s3://bucket"), false},
		{farmDir, "package_s3_uri", cty.StringVal("s3://b/egressd.tar.gz"), false},
		{farmDir, "instance_refresh_checkpoint_percentages", numList(50, 100), true},
		{farmDir, "instance_refresh_checkpoint_percentages", numList(100), true},
		{farmDir, "instance_refresh_checkpoint_percentages", numList(100, 50), false},
		{farmDir, "instance_refresh_checkpoint_percentages", numList(50), false},
		{farmDir, "instance_refresh_checkpoint_percentages", numList(0, 100), false},
		{farmDir, "instance_refresh_checkpoint_percentages", numList(50, 50, 100), false},
		{farmDir, "instance_refresh_min_healthy_percentage", cty.NumberIntVal(40), false},
		{farmDir, "instance_refresh_max_healthy_percentage", cty.NumberIntVal(250), false},
		{farmDir, "log_retention_days", cty.NumberIntVal(90), true},
		{farmDir, "log_retention_days", cty.NumberIntVal(45), false},
		{farmDir, "ebs_kms_key_arn", cty.StringVal("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"), true},
		{farmDir, "ebs_kms_key_arn", cty.StringVal("alias/aws/ebs"), false},
		{farmDir, "log_kms_key_arn", cty.StringVal("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"), true},
		{farmDir, "iam_permissions_boundary_arn", cty.StringVal("arn:aws:iam::123456789012:policy/boundary"), true},
		{farmDir, "iam_permissions_boundary_arn", cty.StringVal("boundary"), false},
		{farmDir, "network_out_target_gbps", cty.NullVal(cty.Number), true},
		{farmDir, "network_out_target_gbps", cty.NumberIntVal(0), false},
		{farmDir, "alarm_actions", strList("arn:aws:sns:us-east-1:123456789012:oncall"), true},
		{farmDir, "alarm_actions", strList("oncall"), false},
		{farmDir, "cloudwatch_agent_sha256", cty.StringVal("nope"), false},
		{exampleDir, "egress_mode", cty.StringVal("public_ip"), true},
		{exampleDir, "egress_mode", cty.StringVal("internet"), false},
		{exampleDir, "vpc_cidr", cty.StringVal("10.0.0.0/16"), true},
		{exampleDir, "vpc_cidr", cty.StringVal("10.0.0.0/24"), false},
		{exampleDir, "vpc_cidr", cty.StringVal("8.0.0.0/8"), false},
		{exampleDir, "vpc_cidr", cty.StringVal("0.0.0.0/0"), false},
		{exampleDir, "package_sha256", cty.StringVal(sha), true},
		{exampleDir, "package_sha256", cty.StringVal("latest"), false},
		{exampleDir, "region", cty.StringVal("us-east-1"), true},
		{exampleDir, "region", cty.StringVal("us-east-1; rm"), false},
		{endpointDir, "allowed_principals", strList("*"), false},
	}
	for _, c := range cases {
		if got := mods[c.dir].validates(t, c.variable, c.value); got != c.ok {
			t.Errorf("%s: variable %q = %#v: accepted %v, want %v", c.dir, c.variable, c.value, got, c.ok)
		}
	}
}

// TestTerraformCIDRVariablesRefuseWide: every CIDR variable of every module
// refuses the whole address space, in one piece or in halves.
func TestTerraformCIDRVariablesRefuseWide(t *testing.T) {
	wide := [][]string{{"0.0.0.0/0"}, {"::/0"}, {"0.0.0.0/1", "128.0.0.0/1"}, {"2000::/3"}, {"0.0.0.0/4"}}
	checked := 0
	for dir, m := range loadModules(t) {
		for _, b := range m.blocks("variable") {
			name := b.Labels[0]
			if !strings.HasSuffix(name, "_cidrs") && !strings.HasSuffix(name, "_cidr") {
				continue
			}
			checked++
			list := strings.Contains(m.text(attr(t, b, "type").Expr), "list")
			for _, cidrs := range wide {
				var v cty.Value
				if list {
					v = strList(cidrs...)
				} else if len(cidrs) == 1 {
					v = cty.StringVal(cidrs[0])
				} else {
					continue
				}
				if m.validates(t, name, v) {
					t.Errorf("%s: variable %q accepts %q", dir, name, cidrs)
				}
			}
		}
	}
	if checked < 4 {
		t.Errorf("checked %d CIDR variables, want at least 4 (client, admin, DNS, VPC)", checked)
	}
}

// TestTerraformFarmEgressModes: what each egress_mode gives the instances
// (a public address or not, an Elastic IP pool and the right to claim from
// it), and that no mode changes who may connect to them.
func TestTerraformFarmEgressModes(t *testing.T) {
	m := loadModules(t)[farmDir]
	if got := m.defaultOf(t, "egress_mode").AsString(); got != "nat_gateway" {
		t.Errorf("egress_mode default %q: the module's default must not give existing farms public addresses", got)
	}

	lt := m.one(t, "resource", "aws_launch_template", "this")
	if _, ok := lt.Body.Attributes["vpc_security_group_ids"]; ok {
		t.Errorf("the launch template sets its security group on network_interfaces, not vpc_security_group_ids")
	}
	nis := nested(lt, "network_interfaces")
	if len(nis) != 1 {
		t.Fatalf("the launch template needs one network_interfaces block, has %d", len(nis))
	}
	if !hasRef(m.refs(attr(t, nis[0], "security_groups").Expr), "aws_security_group.instance") {
		t.Errorf("network_interfaces.security_groups must be the instances' security group")
	}
	pool := m.one(t, "resource", "aws_eip", "pool")
	eipPolicy := m.one(t, "resource", "aws_iam_role_policy", "elastic_ip")

	for _, tt := range []struct {
		mode     string
		public   bool
		poolSize int64
	}{
		{"nat_gateway", false, 0},
		{"public_ip", true, 0},
		{"elastic_ip", true, 27}, // 1.5 x (3 AZs x 6 at most)
	} {
		vars := farmVars(map[string]cty.Value{"egress_mode": cty.StringVal(tt.mode)})
		roots := farmRoots(t, m, vars)
		if got := m.eval(t, attr(t, nis[0], "associate_public_ip_address").Expr, vars, roots); got.True() != tt.public {
			t.Errorf("%s: associate_public_ip_address = %#v, want %v", tt.mode, got, tt.public)
		}
		if got := m.count(t, pool, vars, roots); got != tt.poolSize {
			t.Errorf("%s: %d pool addresses, want %d", tt.mode, got, tt.poolSize)
		}
		claim := int64(0)
		if tt.mode == "elastic_ip" {
			claim = 1
		}
		if got := m.count(t, eipPolicy, vars, roots); got != claim {
			t.Errorf("%s: claim-egress-address policy count %d, want %d", tt.mode, got, claim)
		}

		// Who may connect: the same in every mode, and never the internet.
		clients := m.evalLocal(t, "client_ingress", vars, roots)
		var keys []string
		for k := range clients.AsValueMap() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		want := []string{"http|10.0.0.0/20", "http|10.0.16.0/20", "socks5|10.0.0.0/20", "socks5|10.0.16.0/20"}
		if diff := cmp.Diff(want, keys); diff != "" {
			t.Errorf("%s: NLB ingress from clients (-want +got):\n%s", tt.mode, diff)
		}
		admin := m.evalLocal(t, "admin_ingress", vars, roots)
		if diff := cmp.Diff(map[string]cty.Value{"vpc": cty.StringVal("10.0.0.0/16")}, admin.AsValueMap(), cmp.Comparer(cty.Value.RawEquals)); diff != "" {
			t.Errorf("%s: admin ingress (-want +got):\n%s", tt.mode, diff)
		}
	}

	// No ingress rule, and no security group, depends on the egress mode.
	for _, typ := range []string{"aws_security_group", "aws_vpc_security_group_ingress_rule"} {
		for _, b := range m.resources(typ) {
			for name, a := range b.Body.Attributes {
				for _, r := range m.refs(a.Expr) {
					if r == "var.egress_mode" || r == "local.public_address" || r == "var.elastic_ip_pool_size" {
						t.Errorf("%s.%s: %s depends on the egress mode (%s)", typ, b.Labels[1], name, r)
					}
				}
			}
		}
	}
	// Only two CIDR-based ingress rules: clients to the NLB, admin CIDRs to
	// the admin port. Everything else comes through the NLB's group.
	var cidrRules []string
	for _, b := range m.resources("aws_vpc_security_group_ingress_rule") {
		if _, ok := b.Body.Attributes["cidr_ipv4"]; ok {
			cidrRules = append(cidrRules, b.Labels[1])
		}
	}
	sort.Strings(cidrRules)
	if diff := cmp.Diff([]string{"instance_admin", "nlb_from_clients"}, cidrRules); diff != "" {
		t.Errorf("CIDR-based ingress rules (-want +got):\n%s", diff)
	}

	// IPv6 egress: the ::/0 rules and an address per instance, only when asked.
	for _, v6 := range []bool{false, true} {
		vars := farmVars(map[string]cty.Value{"egress_ipv6": cty.BoolVal(v6)})
		egress := m.evalLocal(t, "internet_egress", vars, nil)
		var keys []string
		for k := range egress.AsValueMap() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		want := []string{"443|0.0.0.0/0", "80|0.0.0.0/0"}
		if v6 {
			want = []string{"443|0.0.0.0/0", "443|::/0", "80|0.0.0.0/0", "80|::/0"}
		}
		if diff := cmp.Diff(want, keys); diff != "" {
			t.Errorf("egress_ipv6=%v: egress rules (-want +got):\n%s", v6, diff)
		}
		count := m.eval(t, attr(t, nis[0], "ipv6_address_count").Expr, vars, nil)
		if got := !count.IsNull(); got != v6 {
			t.Errorf("egress_ipv6=%v: ipv6_address_count = %#v", v6, count)
		}
	}
}

// policyStatements evaluates a policy document's statements for the sample
// farm: sid => (actions, resources, conditions as "test variable=values").
type statement struct {
	Actions, Resources, Conditions []string
}

func (m *tfModule) policyStatements(t *testing.T, doc string, vars, roots map[string]cty.Value) map[string]statement {
	t.Helper()
	out := map[string]statement{}
	for _, st := range nested(m.one(t, "data", "aws_iam_policy_document", doc), "statement") {
		if len(nested(st, "principals")) > 0 {
			continue
		}
		if got := literalString(t, st, "effect"); got != "Allow" {
			t.Errorf("%s: effect %q", doc, got)
		}
		var s statement
		for _, v := range m.eval(t, attr(t, st, "actions").Expr, vars, roots).AsValueSlice() {
			s.Actions = append(s.Actions, v.AsString())
		}
		for _, v := range m.eval(t, attr(t, st, "resources").Expr, vars, roots).AsValueSlice() {
			s.Resources = append(s.Resources, v.AsString())
		}
		for _, c := range nested(st, "condition") {
			var values []string
			for _, v := range m.eval(t, attr(t, c, "values").Expr, vars, roots).AsValueSlice() {
				values = append(values, v.AsString())
			}
			s.Conditions = append(s.Conditions, literalString(t, c, "test")+" "+m.eval(t, attr(t, c, "variable").Expr, vars, roots).AsString()+"="+strings.Join(values, ","))
		}
		out[literalString(t, st, "sid")] = s
	}
	return out
}

func TestTerraformFarmIAM(t *testing.T) {
	m := loadModules(t)[farmDir]
	for _, forbidden := range []string{"aws_iam_policy", "aws_iam_policy_attachment", "aws_iam_user"} {
		if bs := m.resources(forbidden); len(bs) > 0 {
			t.Errorf("the farm module must not create %s", forbidden)
		}
	}
	for _, role := range m.resources("aws_iam_role") {
		if _, ok := role.Body.Attributes["managed_policy_arns"]; ok {
			t.Errorf("aws_iam_role %q must not attach managed policies", role.Labels[1])
		}
		if !hasRef(m.refs(attr(t, role, "permissions_boundary").Expr), "var.iam_permissions_boundary_arn") {
			t.Errorf("aws_iam_role %q: permissions_boundary must be var.iam_permissions_boundary_arn", role.Labels[1])
		}
	}
	trust := m.one(t, "data", "aws_iam_policy_document", "assume_ec2")
	st := nested(trust, "statement")[0]
	if got := m.text(attr(t, st, "actions").Expr); got != `["sts:AssumeRole"]` {
		t.Errorf("trust statement actions = %s", got)
	}
	if !strings.Contains(m.text(attr(t, nested(st, "principals")[0], "identifiers").Expr), "ec2.amazonaws.com") {
		t.Errorf("the role must be assumable by EC2 only")
	}

	const arnPrefix = "arn:aws:ec2:us-east-1:123456789012:"
	vars := farmVars(map[string]cty.Value{
		"name":                      cty.StringVal("edge"),
		"egress_mode":               cty.StringVal("elastic_ip"),
		"package_sha256sums_s3_uri": cty.StringVal("s3://egressd-artifacts/releases/SHA256SUMS"),
	})
	roots := farmRoots(t, m, vars)
	want := map[string]map[string]statement{
		"read_objects": {"ReadEgressdPackageAndConfig": {
			Actions: []string{"s3:GetObject"},
			Resources: []string{
				"arn:aws:s3:::egressd-artifacts/releases/egressd_1.2.3_amd64.deb",
				"arn:aws:s3:::egressd-artifacts/config/egressd.yaml",
				"arn:aws:s3:::egressd-artifacts/releases/SHA256SUMS",
			},
		}},
		"elastic_ip": {
			"FindPoolAddresses": {Actions: []string{"ec2:DescribeAddresses"}, Resources: []string{"*"}},
			"ClaimAndReleasePoolAddresses": {
				Actions:    []string{"ec2:AssociateAddress", "ec2:DisassociateAddress"},
				Resources:  []string{arnPrefix + "elastic-ip/*"},
				Conditions: []string{"StringEquals aws:ResourceTag/egressd-pool=edge"},
			},
			"OnFarmInstancesOnly": {
				Actions:    []string{"ec2:AssociateAddress", "ec2:DisassociateAddress"},
				Resources:  []string{arnPrefix + "instance/*", arnPrefix + "network-interface/*"},
				Conditions: []string{"StringEquals aws:ResourceTag/egressd-farm=edge"},
			},
		},
		"write_logs": {"WriteFarmLogGroup": {
			Actions:   []string{"logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"},
			Resources: []string{"arn:aws:logs:us-east-1:123456789012:log-group:/egressd/edge:*"},
		}},
	}
	var docs []string
	for _, d := range m.blocks("data", "aws_iam_policy_document") {
		if d.Labels[1] != "assume_ec2" {
			docs = append(docs, d.Labels[1])
		}
	}
	sort.Strings(docs)
	if diff := cmp.Diff([]string{"elastic_ip", "read_objects", "write_logs"}, docs); diff != "" {
		t.Errorf("permission documents (-want +got):\n%s", diff)
	}
	for doc, statements := range want {
		if diff := cmp.Diff(statements, m.policyStatements(t, doc, vars, roots)); diff != "" {
			t.Errorf("data.aws_iam_policy_document.%s (-want +got):\n%s", doc, diff)
		}
	}
	// Without a SHA256SUMS URI the role reads exactly the package and config.
	plain := farmVars(nil)
	got := m.policyStatements(t, "read_objects", plain, farmRoots(t, m, plain))["ReadEgressdPackageAndConfig"].Resources
	if diff := cmp.Diff([]string{"arn:aws:s3:::egressd-artifacts/releases/egressd_1.2.3_amd64.deb", "arn:aws:s3:::egressd-artifacts/config/egressd.yaml"}, got); diff != "" {
		t.Errorf("read_objects without SHA256SUMS (-want +got):\n%s", diff)
	}

	// The tag conditions match what the module tags: the pool's addresses,
	// and the farm's instances and network interfaces.
	poolTags := m.eval(t, attr(t, m.one(t, "resource", "aws_eip", "pool"), "tags").Expr, vars, mergeRoots(roots, map[string]cty.Value{
		"count": cty.ObjectVal(map[string]cty.Value{"index": cty.NumberIntVal(0)}),
	}))
	if got := poolTags.AsValueMap()["egressd-pool"]; got.IsNull() || got.AsString() != "edge" {
		t.Errorf("pool addresses are tagged %#v, want egressd-pool = edge", poolTags)
	}
	lt := m.one(t, "resource", "aws_launch_template", "this")
	tagged := map[string]bool{}
	for _, ts := range nested(lt, "tag_specifications") {
		tags := m.eval(t, attr(t, ts, "tags").Expr, vars, roots).AsValueMap()
		if v, ok := tags["egressd-farm"]; ok && v.AsString() == "edge" {
			tagged[literalString(t, ts, "resource_type")] = true
		}
	}
	if !tagged["instance"] || !tagged["network-interface"] {
		t.Errorf("the launch template must tag instances and network interfaces egressd-farm = name, tags %v", tagged)
	}

	// Each permission comes with its feature.
	for res, gate := range map[string]string{
		"aws_iam_role_policy.elastic_ip":                  "var.egress_mode",
		"aws_iam_role_policy.write_logs":                  "var.ship_logs",
		"aws_iam_role_policy_attachment.ssm":              "var.enable_ssm",
		"aws_cloudwatch_log_group.this":                   "var.ship_logs",
		"aws_eip.pool":                                    "var.egress_mode",
		"aws_autoscaling_policy.network_out":              "var.network_out_target_gbps",
		"terraform_data.rollout":                          "var.instance_refresh_on_apply",
		"aws_vpc_security_group_egress_rule.instance_dns": "var.dns_server_cidrs",
	} {
		typ, name, _ := strings.Cut(res, ".")
		b := m.one(t, "resource", typ, name)
		a := b.Body.Attributes["count"]
		if a == nil {
			a = b.Body.Attributes["for_each"]
		}
		if a == nil || !hasRef(m.refs(a.Expr), gate) {
			t.Errorf("%s must exist only with %s", res, gate)
		}
	}
	attachments := m.resources("aws_iam_role_policy_attachment")
	if len(attachments) != 1 {
		t.Fatalf("%d policy attachments, want 1 (SSM)", len(attachments))
	}
	if got := m.eval(t, attr(t, attachments[0], "policy_arn").Expr, vars, roots).AsString(); got != "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" {
		t.Errorf("SSM attachment policy_arn = %q", got)
	}
	for _, on := range []bool{false, true} {
		v := farmVars(map[string]cty.Value{"enable_ssm": cty.BoolVal(on)})
		if got := m.count(t, attachments[0], v, nil); (got == 1) != on {
			t.Errorf("enable_ssm=%v: %d SSM attachments", on, got)
		}
	}
}

func mergeRoots(a, b map[string]cty.Value) map[string]cty.Value {
	out := map[string]cty.Value{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// TestTerraformFarmRelease: running instances change only with var.release,
// one AZ at a time, with checkpoints, automatic rollback and skip matching.
func TestTerraformFarmRelease(t *testing.T) {
	m := loadModules(t)[farmDir]
	asg := m.one(t, "resource", "aws_autoscaling_group", "this")
	if len(nested(asg, "instance_refresh")) != 0 {
		t.Errorf("the groups must not refresh on every launch template change (no instance_refresh block)")
	}
	lc := nested(asg, "lifecycle")
	if len(lc) != 1 {
		t.Fatalf("aws_autoscaling_group.this needs a lifecycle block")
	}
	if got := m.text(attr(t, lc[0], "ignore_changes").Expr); !strings.Contains(got, "launch_template") || !strings.Contains(got, "desired_capacity") {
		t.Errorf("ignore_changes = %s, want launch_template (moved by rollouts) and desired_capacity", got)
	}

	rollout := m.one(t, "resource", "terraform_data", "rollout")
	if got := m.refs(attr(t, rollout, "triggers_replace").Expr); !slices.Equal(got, []string{"var.release"}) {
		t.Errorf("terraform_data.rollout triggers on %q, want only var.release", got)
	}
	provs := nested(rollout, "provisioner")
	if len(provs) != 1 || provs[0].Labels[0] != "local-exec" {
		t.Fatalf("terraform_data.rollout needs one local-exec provisioner")
	}
	if got := m.text(attr(t, provs[0], "command").Expr); !strings.Contains(got, "rollout.sh") {
		t.Errorf("the rollout command %s must run rollout.sh", got)
	}
	if !hasRef(m.refs(attr(t, provs[0], "environment").Expr), "local.rollout_environment") {
		t.Errorf("the rollout must get local.rollout_environment")
	}
	if _, err := os.Stat(filepath.Join(farmDir, "rollout.sh")); err != nil {
		t.Fatal(err)
	}

	// A release changes the user data, hence a new launch template version.
	call := m.locals()["user_data"].(*hclsyntax.FunctionCallExpr)
	found := false
	for _, item := range call.Args[1].(*hclsyntax.ObjectConsExpr).Items {
		if hcl.ExprAsKeyword(item.KeyExpr) == "release" && hasRef(m.refs(item.ValueExpr), "var.release") {
			found = true
		}
	}
	if !found {
		t.Errorf("the user data template must get release = var.release")
	}

	// The plan: one line per AZ, in AZ order, each refresh rolled back by its
	// own AZ's unhealthy-targets alarm.
	vars := farmVars(nil)
	roots := farmRoots(t, m, vars)
	lines := m.evalLocal(t, "rollout_plan_lines", vars, roots).AsValueSlice()
	if len(lines) != len(farmAZs) {
		t.Fatalf("%d plan lines, want one per AZ", len(lines))
	}
	for i, az := range farmAZs {
		group, prefs, _ := strings.Cut(lines[i].AsString(), " ")
		if group != "egressd-"+az {
			t.Errorf("plan line %d is for %q, want egressd-%s", i, group, az)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(prefs), &got); err != nil {
			t.Fatalf("plan line %d: %v", i, err)
		}
		want := map[string]any{
			"MinHealthyPercentage":      100.0,
			"MaxHealthyPercentage":      150.0,
			"InstanceWarmup":            300.0,
			"CheckpointPercentages":     []any{50.0, 100.0},
			"CheckpointDelay":           300.0,
			"SkipMatching":              true,
			"AutoRollback":              true,
			"ScaleInProtectedInstances": "Refresh",
			"StandbyInstances":          "Terminate",
			"AlarmSpecification":        map[string]any{"Alarms": []any{"egressd-" + az + "-unhealthy-targets"}},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s refresh preferences (-want +got):\n%s", az, diff)
		}
	}
	env := m.evalLocal(t, "rollout_environment", vars, roots).AsValueMap()
	if got := env["EGRESSD_ROLLOUT_TEMPLATE_VERSION"].AsString(); got != "7" {
		t.Errorf("the rollout brings version %q, want the template's latest (7)", got)
	}
}

// TestTerraformFarmRolloutCommand runs the module's output rollout_command,
// as a pipeline would, against a stand-in AWS CLI: every group, in AZ
// order, is refreshed to the latest version with its own preferences.
func TestTerraformFarmRolloutCommand(t *testing.T) {
	m := loadModules(t)[farmDir]
	vars := farmVars(nil)
	roots := farmRoots(t, m, vars)
	command := m.eval(t, attr(t, m.one(t, "output", "rollout_command"), "value").Expr, vars, roots).AsString()
	lines := m.evalLocal(t, "rollout_plan_lines", vars, roots).AsValueSlice()

	s := newStubs(t, map[string]string{"aws": `
case "$1 $2" in
"autoscaling describe-auto-scaling-groups") echo 6 ;;
"autoscaling start-instance-refresh") echo "refresh-$4" ;;
"autoscaling describe-instance-refreshes") printf 'Successful\t100\tdone\n' ;;
*) exit 3 ;;
esac`})
	script := filepath.Join(t.TempDir(), "rollout-command.sh")
	if err := os.WriteFile(script, []byte(command+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := s.run(t, script, nil)
	if err != nil {
		t.Fatalf("rollout_command: %v\n%s\n%s", err, out, command)
	}
	var want []string
	for i, az := range farmAZs {
		group := "egressd-" + az
		_, prefs, _ := strings.Cut(lines[i].AsString(), " ")
		want = append(want,
			"aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "+group+" --query AutoScalingGroups[0].LaunchTemplate.Version --output text",
			"aws autoscaling start-instance-refresh --auto-scaling-group-name "+group+` --strategy Rolling --desired-configuration {"LaunchTemplate":{"LaunchTemplateId":"lt-0123456789abcdef0","Version":"7"}} --preferences `+prefs+" --query InstanceRefreshId --output text",
			"aws autoscaling describe-instance-refreshes --auto-scaling-group-name "+group+" --instance-refresh-ids refresh-"+group+" --query InstanceRefreshes[0].[Status,PercentageComplete,StatusReason] --output text",
		)
	}
	if diff := cmp.Diff(want, s.calls(t)); diff != "" {
		t.Errorf("AWS CLI calls (-want +got):\n%s", diff)
	}
}

func TestTerraformFarmAlarmsAndScaling(t *testing.T) {
	m := loadModules(t)[farmDir]
	vars := farmVars(nil)
	roots := farmRoots(t, m, vars)

	for name, want := range map[string][3]string{
		"unhealthy_targets":  {"AWS/NetworkELB", "UnHealthyHostCount", "GreaterThanThreshold"},
		"no_healthy_targets": {"AWS/NetworkELB", "HealthyHostCount", "LessThanThreshold"},
		"cpu":                {"AWS/EC2", "CPUUtilization", "GreaterThanThreshold"},
	} {
		a := m.one(t, "resource", "aws_cloudwatch_metric_alarm", name)
		got := [3]string{literalString(t, a, "namespace"), literalString(t, a, "metric_name"), literalString(t, a, "comparison_operator")}
		if got != want {
			t.Errorf("alarm %s: %q, want %q", name, got, want)
		}
		if keys := m.forEachKeys(t, a, vars, roots); !slices.Equal(keys, farmAZs) {
			t.Errorf("alarm %s: one per AZ, got %q", name, keys)
		}
		if !hasRef(m.refs(attr(t, a, "alarm_actions").Expr), "var.alarm_actions") {
			t.Errorf("alarm %s must notify var.alarm_actions", name)
		}
	}
	for _, name := range []string{"unhealthy_targets", "no_healthy_targets"} {
		dims := m.resourceAttr(t, "aws_cloudwatch_metric_alarm", name, "dimensions", "us-east-1b", vars, mergeRoots(roots, fakeLB(t)))
		if got := dims.AsValueMap()["AvailabilityZone"].AsString(); got != "us-east-1b" {
			t.Errorf("alarm %s for us-east-1b watches AZ %q", name, got)
		}
		if got := dims.AsValueMap()["TargetGroup"].AsString(); got != "targetgroup/shared-http" {
			t.Errorf("alarm %s watches target group %q", name, got)
		}
	}
	unhealthy := m.one(t, "resource", "aws_cloudwatch_metric_alarm", "unhealthy_targets")
	if got := m.refs(attr(t, unhealthy, "evaluation_periods").Expr); !slices.Equal(got, []string{"var.alarm_unhealthy_minutes"}) {
		t.Errorf("unhealthy_targets evaluation_periods refs %q", got)
	}

	// Network output: metric math over NetworkOut, in Gbit/s per instance.
	net := m.one(t, "resource", "aws_cloudwatch_metric_alarm", "network_out")
	var expr, metric string
	for _, q := range nested(net, "metric_query") {
		if e := q.Body.Attributes["expression"]; e != nil {
			expr = literalString(t, q, "expression")
		}
		for _, mb := range nested(q, "metric") {
			metric = literalString(t, mb, "metric_name")
		}
	}
	if metric != "NetworkOut" || expr != "bytes * 8 / PERIOD(bytes) / 1000000000" {
		t.Errorf("network_out alarm: metric %q, expression %q", metric, expr)
	}
	if !hasRef(m.refs(attr(t, net, "threshold").Expr), "var.alarm_network_out_gbps") {
		t.Errorf("network_out alarm threshold must be var.alarm_network_out_gbps")
	}

	// Scaling: CPU and network output, both target tracking.
	policy := m.one(t, "resource", "aws_autoscaling_policy", "network_out")
	ttc := nested(policy, "target_tracking_configuration")[0]
	if got := literalString(t, nested(ttc, "predefined_metric_specification")[0], "predefined_metric_type"); got != "ASGAverageNetworkOut" {
		t.Errorf("network policy metric %q", got)
	}
	for _, tt := range []struct {
		detailed bool
		want     float64
	}{{true, 0.5e9 / 8 * 60}, {false, 0.5e9 / 8 * 300}} {
		v := m.eval(t, attr(t, ttc, "target_value").Expr, farmVars(map[string]cty.Value{"detailed_monitoring": cty.BoolVal(tt.detailed)}), nil)
		if got, _ := v.AsBigFloat().Float64(); got != tt.want {
			t.Errorf("detailed_monitoring=%v: network target %v bytes per period, want %v", tt.detailed, got, tt.want)
		}
	}
	if got := m.resources("aws_autoscaling_policy"); len(got) != 2 {
		t.Errorf("%d scaling policies, want CPU and network", len(got))
	}
	lt := m.one(t, "resource", "aws_launch_template", "this")
	if got := m.text(attr(t, lt, "user_data").Expr); got != "base64gzip(local.user_data)" {
		t.Errorf("launch template user_data = %s, want base64gzip(local.user_data)", got)
	}
	if !hasRef(m.refs(attr(t, nested(lt, "monitoring")[0], "enabled").Expr), "var.detailed_monitoring") {
		t.Errorf("the launch template's monitoring must follow var.detailed_monitoring")
	}
	ebs := nested(nested(lt, "block_device_mappings")[0], "ebs")[0]
	if !literal(t, ebs, "encrypted").True() || !hasRef(m.refs(attr(t, ebs, "kms_key_id").Expr), "var.ebs_kms_key_arn") {
		t.Errorf("root volumes must be encrypted, with var.ebs_kms_key_arn")
	}
}

// fakeLB answers the load balancer and target group ARN suffixes.
func fakeLB(t *testing.T) map[string]cty.Value {
	t.Helper()
	return map[string]cty.Value{
		"aws_lb": cty.ObjectVal(map[string]cty.Value{"this": cty.MapVal(map[string]cty.Value{
			"shared": cty.ObjectVal(map[string]cty.Value{"arn_suffix": cty.StringVal("net/shared/1")}),
		})}),
		"aws_lb_target_group": cty.ObjectVal(map[string]cty.Value{"this": cty.MapVal(map[string]cty.Value{
			"shared/http":   cty.ObjectVal(map[string]cty.Value{"arn_suffix": cty.StringVal("targetgroup/shared-http")}),
			"shared/socks5": cty.ObjectVal(map[string]cty.Value{"arn_suffix": cty.StringVal("targetgroup/shared-socks5")}),
		})}),
	}
}

// renderFarmUserData renders the user data template with the sample farm's
// variables as Terraform would.
func renderFarmUserData(t *testing.T, extra map[string]cty.Value) string {
	t.Helper()
	m := loadModules(t)[farmDir]
	vars := farmVars(extra)
	roots := farmRoots(t, m, vars)
	call := m.locals()["user_data"].(*hclsyntax.FunctionCallExpr)
	obj := m.eval(t, call.Args[1], vars, roots)
	src, err := os.ReadFile(filepath.Join(farmDir, "user_data.sh.tftpl"))
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

func TestTerraformFarmUserDataRendered(t *testing.T) {
	for _, mode := range []string{"nat_gateway", "elastic_ip"} {
		script := renderFarmUserData(t, map[string]cty.Value{"egress_mode": cty.StringVal(mode)})
		// EC2 takes at most 16 KiB of user data before base64; the launch
		// template gzips it (cloud-init unpacks it). Keep room for long URIs.
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write([]byte(script))
		zw.Close()
		if gz.Len() > 8192 {
			t.Errorf("%s: gzipped user data is %d bytes; EC2 takes 16384, keep it under half", mode, gz.Len())
		}
		path := filepath.Join(t.TempDir(), "user-data.sh")
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", mode, err, out)
		}
		for _, want := range []string{
			"EGRESS_MODE='" + mode + "'",
			"PACKAGE_SHA256='" + sampleSHA256 + "'",
			"RELEASE='1'",
			"EIP_POOL='egressd'",
			"SHIP_LOGS='true'",
		} {
			if !strings.Contains(script, want) {
				t.Errorf("%s: rendered user data lacks %q", mode, want)
			}
		}
	}

	// The files egressd's output goes to are the files the agent ships.
	m := loadModules(t)[farmDir]
	vars := farmVars(nil)
	cfg := m.evalLocal(t, "cloudwatch_agent_config", vars, farmRoots(t, m, vars)).AsString()
	var agent struct {
		Logs struct {
			FlushInterval int `json:"force_flush_interval"`
			Collected     struct {
				Files struct {
					List []struct {
						Path   string `json:"file_path"`
						Group  string `json:"log_group_name"`
						Stream string `json:"log_stream_name"`
					} `json:"collect_list"`
				} `json:"files"`
			} `json:"logs_collected"`
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(cfg), &agent); err != nil {
		t.Fatal(err)
	}
	script := renderFarmUserData(t, nil)
	streams := map[string]string{}
	for _, f := range agent.Logs.Collected.Files.List {
		if f.Group != "/egressd/egressd" {
			t.Errorf("%s ships to %q", f.Path, f.Group)
		}
		streams[f.Stream] = f.Path
	}
	want := map[string]string{
		"{instance_id}/access":    "/var/log/egressd/access.log",
		"{instance_id}/egressd":   "/var/log/egressd/egressd.log",
		"{instance_id}/bootstrap": "/var/log/cloud-init-output.log",
	}
	if diff := cmp.Diff(want, streams); diff != "" {
		t.Errorf("agent streams (-want +got):\n%s", diff)
	}
	if line := "StandardError=append:" + want["{instance_id}/egressd"]; !strings.Contains(script, line) {
		t.Errorf("the user data does not send egressd's stderr where the agent reads it: no %q", line)
	}
	// The access log is the config's log.access_file (the example's config
	// sets it, TestAWSExampleConfigMatchesFarmModule checks), rotated by the
	// package's logrotate config.
	if !strings.Contains(readFile(t, "logrotate/egressd"), want["{instance_id}/access"]+" {") {
		t.Errorf("the package's logrotate config does not rotate %s", want["{instance_id}/access"])
	}
	if agent.Logs.FlushInterval <= 0 || agent.Logs.FlushInterval >= int(asInt(t, m.defaultOf(t, "lifecycle_hook_margin_seconds"))) {
		t.Errorf("the agent flushes every %d s: it must flush within the lifecycle hook's margin", agent.Logs.FlushInterval)
	}
	group := m.one(t, "resource", "aws_cloudwatch_log_group", "this")
	for attrName, ref := range map[string]string{"retention_in_days": "var.log_retention_days", "kms_key_id": "var.log_kms_key_arn", "name": "local.log_group_name"} {
		if !hasRef(m.refs(attr(t, group, attrName).Expr), ref) {
			t.Errorf("log group %s must come from %s", attrName, ref)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// farmAgentFiles returns the files the farm's CloudWatch agent ships, by
// stream name.
func farmAgentFiles(t *testing.T) map[string]string {
	t.Helper()
	m := loadModules(t)[farmDir]
	vars := farmVars(nil)
	var agent struct {
		Logs struct {
			Collected struct {
				Files struct {
					List []struct {
						Path   string `json:"file_path"`
						Stream string `json:"log_stream_name"`
					} `json:"collect_list"`
				} `json:"files"`
			} `json:"logs_collected"`
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(m.evalLocal(t, "cloudwatch_agent_config", vars, farmRoots(t, m, vars)).AsString()), &agent); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range agent.Logs.Collected.Files.List {
		files[strings.TrimPrefix(f.Stream, "{instance_id}/")] = f.Path
	}
	return files
}

// TestTerraformProviderV6: the modules need AWS provider 6 and use none of
// the attributes it deprecated (data.aws_region's name).
func TestTerraformProviderV6(t *testing.T) {
	for dir, m := range loadModules(t) {
		for _, tf := range m.blocks("terraform") {
			for _, rp := range nested(tf, "required_providers") {
				aws := m.eval(t, attr(t, rp, "aws").Expr, nil, nil).AsValueMap()
				if v := aws["version"].AsString(); !strings.HasPrefix(v, ">= 6.") {
					t.Errorf("%s: aws provider %q, want >= 6", dir, v)
				}
			}
		}
		var walk func(body *hclsyntax.Body)
		walk = func(body *hclsyntax.Body) {
			for _, a := range body.Attributes {
				for _, tr := range hclsyntax.Variables(a.Expr) {
					if len(tr) >= 4 && tr.RootName() == "data" {
						if typ, ok := tr[1].(hcl.TraverseAttr); ok && typ.Name == "aws_region" {
							if last, ok := tr[3].(hcl.TraverseAttr); ok && last.Name == "name" {
								t.Errorf("%s: %s uses data.aws_region's deprecated name", dir, a.SrcRange)
							}
						}
					}
				}
			}
			for _, b := range body.Blocks {
				walk(b.Body)
			}
		}
		for _, body := range m.bodies {
			walk(body)
		}
	}
}

// TestTerraformExampleEgressModes: the example VPC's routes in each
// egress_mode, with and without IPv6. The clients' subnets never get a route
// out.
func TestTerraformExampleEgressModes(t *testing.T) {
	m := loadModules(t)[exampleDir]
	if got := m.defaultOf(t, "egress_mode").AsString(); got != "public_ip" {
		t.Errorf("the example's egress_mode default is %q, want public_ip (no NAT gateway charge)", got)
	}
	azs := []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}
	call := m.one(t, "module", "egressd")
	for name, ref := range map[string]string{"egress_mode": "var.egress_mode", "egress_ipv6": "var.enable_ipv6", "package_sha256": "var.package_sha256", "release": "var.release"} {
		if got := m.refs(attr(t, call, name).Expr); !slices.Equal(got, []string{ref}) {
			t.Errorf("module egressd: %s refs %q, want %s", name, got, ref)
		}
	}

	for _, tt := range []struct {
		mode   string
		single bool
		ipv6   bool
		nat    []string
		igw    []string
	}{
		{"public_ip", false, false, nil, azs},
		{"elastic_ip", false, true, nil, azs},
		{"nat_gateway", false, false, azs, nil},
		{"nat_gateway", true, true, azs, nil},
	} {
		vars := map[string]cty.Value{
			"egress_mode":        cty.StringVal(tt.mode),
			"single_nat_gateway": cty.BoolVal(tt.single),
			"enable_ipv6":        cty.BoolVal(tt.ipv6),
		}
		name := tt.mode
		if tt.ipv6 {
			name += "+ipv6"
		}
		keys := func(typ, res string) []string {
			return m.forEachKeys(t, m.one(t, "resource", typ, res), vars, nil)
		}
		if got := keys("aws_route", "egress_via_nat"); !slices.Equal(got, tt.nat) {
			t.Errorf("%s: NAT routes in %q, want %q", name, got, tt.nat)
		}
		if got := keys("aws_route", "egress_via_igw"); !slices.Equal(got, tt.igw) {
			t.Errorf("%s: internet gateway routes in %q, want %q", name, got, tt.igw)
		}
		var nats []string
		if tt.mode == "nat_gateway" {
			nats = azs
			if tt.single {
				nats = azs[:1]
			}
		}
		if got := keys("aws_nat_gateway", "this"); !slices.Equal(got, nats) {
			t.Errorf("%s: NAT gateways in %q, want %q", name, got, nats)
		}
		if got := keys("aws_subnet", "public"); !slices.Equal(got, nats) {
			t.Errorf("%s: public subnets in %q, want %q", name, got, nats)
		}
		var v6 []string
		if tt.ipv6 {
			v6 = azs
		}
		if got := keys("aws_route", "egress_ipv6"); !slices.Equal(got, v6) {
			t.Errorf("%s: IPv6 routes in %q, want %q", name, got, v6)
		}
		eigw := int64(0)
		if tt.ipv6 {
			eigw = 1
		}
		if got := m.count(t, m.one(t, "resource", "aws_egress_only_internet_gateway", "this"), vars, nil); got != eigw {
			t.Errorf("%s: %d egress-only internet gateways, want %d", name, got, eigw)
		}
	}

	// Where each default route goes.
	for res, target := range map[string]string{"egress_via_nat": "nat_gateway_id", "egress_via_igw": "gateway_id", "egress_ipv6": "egress_only_gateway_id"} {
		r := m.one(t, "resource", "aws_route", res)
		if !hasRef(m.refs(attr(t, r, "route_table_id").Expr), "aws_route_table.egress") {
			t.Errorf("aws_route.%s must be in the egress route tables", res)
		}
		if _, ok := r.Body.Attributes[target]; !ok {
			t.Errorf("aws_route.%s must set %s", res, target)
		}
	}
	if got := literalString(t, m.one(t, "resource", "aws_route", "egress_ipv6"), "destination_ipv6_cidr_block"); got != "::/0" {
		t.Errorf("the IPv6 route covers %q", got)
	}
	// The client subnets get no IPv6 block, hence no IPv6 route either.
	client := m.one(t, "resource", "aws_subnet", "client")
	for _, a := range []string{"ipv6_cidr_block", "assign_ipv6_address_on_creation", "map_public_ip_on_launch"} {
		if _, ok := client.Body.Attributes[a]; ok {
			t.Errorf("aws_subnet.client must not set %s", a)
		}
	}
}
