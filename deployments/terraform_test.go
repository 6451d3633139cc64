package deployments

import (
	"bytes"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Terraform cannot run here (no provider downloads), so these tests parse
// every .tf file with hashicorp/hcl and assert the structure that egress
// control depends on, plus a small "validate": every reference resolves.

const (
	farmDir     = "terraform/modules/egressd-farm"
	endpointDir = "terraform/modules/egressd-endpoint-service"
	inlineDir   = "terraform/modules/egressd-inline"
	exampleDir  = "terraform/examples/vpc"
)

// tfModule is one directory of .tf files.
type tfModule struct {
	dir    string
	bodies []*hclsyntax.Body
	src    map[string][]byte // file name => contents, for expression source text
}

func loadModules(t *testing.T) map[string]*tfModule {
	t.Helper()
	modules := map[string]*tfModule{}
	parser := hclparse.NewParser()
	err := filepath.WalkDir("terraform", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".tf" {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, diags := parser.ParseHCL(src, path)
		if diags.HasErrors() {
			t.Errorf("%s: %s", path, diags.Error())
			return nil
		}
		dir := filepath.Dir(path)
		m := modules[dir]
		if m == nil {
			m = &tfModule{dir: dir, src: map[string][]byte{}}
			modules[dir] = m
		}
		m.bodies = append(m.bodies, f.Body.(*hclsyntax.Body))
		m.src[path] = src
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{farmDir, endpointDir, inlineDir, exampleDir} {
		if modules[dir] == nil {
			t.Fatalf("no .tf files in %s", dir)
		}
	}
	return modules
}

// blocks returns the top-level blocks of a type whose labels start with labels.
func (m *tfModule) blocks(typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, body := range m.bodies {
		for _, b := range body.Blocks {
			if b.Type == typ && len(b.Labels) >= len(labels) && slices.Equal(b.Labels[:len(labels)], labels) {
				out = append(out, b)
			}
		}
	}
	return out
}

func (m *tfModule) resources(typ string) []*hclsyntax.Block { return m.blocks("resource", typ) }

// one returns the single block of a type and name, failing otherwise.
func (m *tfModule) one(t *testing.T, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	bs := m.blocks(typ, labels...)
	if len(bs) != 1 {
		t.Fatalf("%s: want exactly one %s %q, found %d", m.dir, typ, labels, len(bs))
	}
	return bs[0]
}

// text returns an expression's source text.
func (m *tfModule) text(e hclsyntax.Expression) string {
	r := e.Range()
	return string(r.SliceBytes(m.src[r.Filename]))
}

// locals maps each local value's name to its expression.
func (m *tfModule) locals() map[string]hclsyntax.Expression {
	out := map[string]hclsyntax.Expression{}
	for _, b := range m.blocks("locals") {
		for name, a := range b.Body.Attributes {
			out[name] = a.Expr
		}
	}
	return out
}

// variable returns a variable block by name.
func (m *tfModule) variable(t *testing.T, name string) *hclsyntax.Block {
	t.Helper()
	return m.one(t, "variable", name)
}

// defaultOf returns a variable's literal default.
func (m *tfModule) defaultOf(t *testing.T, name string) cty.Value {
	t.Helper()
	a := attr(t, m.variable(t, name), "default")
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("variable %q: default is not a literal: %s", name, diags.Error())
	}
	return v
}

func attr(t *testing.T, b *hclsyntax.Block, name string) *hclsyntax.Attribute {
	t.Helper()
	a := b.Body.Attributes[name]
	if a == nil {
		t.Fatalf("%s %q (%s): no attribute %q", b.Type, b.Labels, b.Range(), name)
	}
	return a
}

func nested(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, nb := range b.Body.Blocks {
		if nb.Type == typ {
			out = append(out, nb)
		}
	}
	return out
}

// literal evaluates an attribute that must be a constant.
func literal(t *testing.T, b *hclsyntax.Block, name string) cty.Value {
	t.Helper()
	a := attr(t, b, name)
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s %q: %s is not a literal: %s", b.Type, b.Labels, name, diags.Error())
	}
	return v
}

func literalString(t *testing.T, b *hclsyntax.Block, name string) string {
	t.Helper()
	v := literal(t, b, name)
	if v.Type() != cty.String {
		t.Fatalf("%s %q: %s is %s, want a string", b.Type, b.Labels, name, v.Type().FriendlyName())
	}
	return v.AsString()
}

// refName renders a traversal as var.x, local.x, data.t.n, module.m or t.n.
func refName(tr hcl.Traversal) string {
	parts := []string{tr.RootName()}
	want := 1
	switch tr.RootName() {
	case "data":
		want = 2
	case "each", "count", "path", "self", "terraform":
		want = 1
	}
	for _, step := range tr[1:] {
		if len(parts) > want {
			break
		}
		if a, ok := step.(hcl.TraverseAttr); ok {
			parts = append(parts, a.Name)
		} else {
			break
		}
	}
	return strings.Join(parts, ".")
}

// refs returns the references of an expression, following local values.
func (m *tfModule) refs(e hclsyntax.Expression) []string {
	locals := m.locals()
	seen := map[string]bool{}
	var walk func(hclsyntax.Expression)
	walk = func(e hclsyntax.Expression) {
		for _, tr := range hclsyntax.Variables(e) {
			name := refName(tr)
			if seen[name] {
				continue
			}
			seen[name] = true
			if local, ok := strings.CutPrefix(name, "local."); ok && locals[local] != nil {
				walk(locals[local])
			}
		}
	}
	walk(e)
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// localsText returns the source of an expression and of every local value it
// reaches, for substring checks.
func (m *tfModule) deepText(e hclsyntax.Expression) string {
	texts := []string{m.text(e)}
	locals := m.locals()
	for _, r := range m.refs(e) {
		if local, ok := strings.CutPrefix(r, "local."); ok && locals[local] != nil {
			texts = append(texts, m.text(locals[local]))
		}
	}
	return strings.Join(texts, "\n")
}

// evalDefaults evaluates an expression with every variable at its default
// and every local value that can be computed without data sources,
// resources or functions Terraform has and these tests do not.
func (m *tfModule) evalDefaults(t *testing.T, e hclsyntax.Expression) cty.Value {
	t.Helper()
	return m.eval(t, e, nil, nil)
}

// evalContext is Terraform's evaluation context for a module: variables at
// their defaults unless vars sets them, the functions of tfFunctions, roots
// (resource types, "data", "module", "path") as given, and every local value
// that can be computed from those.
func (m *tfModule) evalContext(vars, roots map[string]cty.Value) *hcl.EvalContext {
	values := map[string]cty.Value{}
	types := map[string]cty.Type{}
	for _, b := range m.blocks("variable") {
		if a := b.Body.Attributes["type"]; a != nil {
			if ty, diags := typeexpr.TypeConstraint(a.Expr); !diags.HasErrors() {
				types[b.Labels[0]] = ty
			}
		}
		if a := b.Body.Attributes["default"]; a != nil {
			if v, diags := a.Expr.Value(nil); !diags.HasErrors() {
				values[b.Labels[0]] = v
			}
		}
	}
	for name, v := range vars {
		values[name] = v
	}
	// As Terraform does, every value takes its variable's declared type.
	for name, v := range values {
		if ty, ok := types[name]; ok {
			if cv, err := convert.Convert(v, ty); err == nil {
				values[name] = cv
			}
		}
	}
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(values)}, Functions: tfFunctions()}
	for name, v := range roots {
		ctx.Variables[name] = v
	}
	locals := map[string]cty.Value{}
	for progress := true; progress; {
		progress = false
		ctx.Variables["local"] = cty.ObjectVal(locals)
		for name, expr := range m.locals() {
			if _, done := locals[name]; done {
				continue
			}
			if v, diags := expr.Value(ctx); !diags.HasErrors() && v.IsWhollyKnown() {
				locals[name] = v
				progress = true
			}
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)
	return ctx
}

// eval evaluates an expression in evalContext(vars, roots).
func (m *tfModule) eval(t *testing.T, e hclsyntax.Expression, vars, roots map[string]cty.Value) cty.Value {
	t.Helper()
	v, diags := e.Value(m.evalContext(vars, roots))
	if diags.HasErrors() {
		t.Fatalf("evaluate %q: %s", m.text(e), diags.Error())
	}
	return v
}

func asInt(t *testing.T, v cty.Value) int64 {
	t.Helper()
	if v.Type() != cty.Number {
		t.Fatalf("%#v is not a number", v)
	}
	i, acc := v.AsBigFloat().Int64()
	if acc != big.Exact {
		t.Fatalf("%#v is not an integer", v)
	}
	return i
}

func hasRef(refs []string, want string) bool { return slices.Contains(refs, want) }

// attrRefs returns the references of a block's attribute; when it uses
// each.key or each.value, the references of the block's for_each too.
func (m *tfModule) attrRefs(t *testing.T, b *hclsyntax.Block, name string) []string {
	t.Helper()
	refs := m.refs(attr(t, b, name).Expr)
	if fe := b.Body.Attributes["for_each"]; fe != nil && (hasRef(refs, "each.key") || hasRef(refs, "each.value")) {
		refs = sortedSet(append(refs, m.refs(fe.Expr)...))
	}
	return refs
}

// ---------------------------------------------------------------------------

func TestTerraformVariablesAndOutputsDocumented(t *testing.T) {
	for dir, m := range loadModules(t) {
		for _, b := range m.blocks("variable") {
			d, ok := b.Body.Attributes["description"]
			if !ok {
				t.Errorf("%s: variable %q has no description", dir, b.Labels[0])
				continue
			}
			if v, diags := d.Expr.Value(nil); diags.HasErrors() || v.Type() != cty.String || len(strings.TrimSpace(v.AsString())) < 10 {
				t.Errorf("%s: variable %q: description must be a literal sentence", dir, b.Labels[0])
			}
			if _, ok := b.Body.Attributes["type"]; !ok {
				t.Errorf("%s: variable %q has no type", dir, b.Labels[0])
			}
		}
		for _, b := range m.blocks("output") {
			if _, ok := b.Body.Attributes["description"]; !ok {
				t.Errorf("%s: output %q has no description", dir, b.Labels[0])
			}
		}
	}
}

// TestTerraformReferencesResolve is a small `terraform validate`: every
// var., local., data., module. and resource reference names something the
// module declares.
func TestTerraformReferencesResolve(t *testing.T) {
	for dir, m := range loadModules(t) {
		declared := map[string]bool{}
		for _, b := range m.blocks("variable") {
			declared["var."+b.Labels[0]] = true
		}
		for name := range m.locals() {
			declared["local."+name] = true
		}
		for _, b := range m.blocks("resource") {
			declared[b.Labels[0]+"."+b.Labels[1]] = true
		}
		for _, b := range m.blocks("data") {
			declared["data."+b.Labels[0]+"."+b.Labels[1]] = true
		}
		for _, b := range m.blocks("module") {
			declared["module."+b.Labels[0]] = true
		}
		builtins := map[string]bool{"each": true, "count": true, "path": true, "self": true, "terraform": true}
		variableBody := map[*hclsyntax.Body]*hclsyntax.Body{}
		for _, b := range m.blocks("variable") {
			variableBody[b.Body] = b.Body
		}

		var walkBody func(body *hclsyntax.Body, iterators map[string]bool)
		walkBody = func(body *hclsyntax.Body, iterators map[string]bool) {
			for name, a := range body.Attributes {
				if name == "type" && body == variableBody[body] || name == "ignore_changes" {
					continue // a type constraint or attribute names, not references
				}
				for _, tr := range hclsyntax.Variables(a.Expr) {
					root := tr.RootName()
					if builtins[root] || iterators[root] {
						continue
					}
					if name := refName(tr); !declared[name] {
						t.Errorf("%s: %s refers to undeclared %s", dir, a.SrcRange, name)
					}
				}
			}
			for _, b := range body.Blocks {
				inner := iterators
				if b.Type == "dynamic" {
					inner = map[string]bool{b.Labels[0]: true}
					if it := b.Body.Attributes["iterator"]; it != nil {
						inner[hcl.ExprAsKeyword(it.Expr)] = true
					}
					for k := range iterators {
						inner[k] = true
					}
				}
				walkBody(b.Body, inner)
			}
		}
		for _, body := range m.bodies {
			walkBody(body, map[string]bool{})
		}
	}
}

func TestTerraformFarmLoadBalancer(t *testing.T) {
	m := loadModules(t)[farmDir]

	lb := m.one(t, "resource", "aws_lb", "this")
	if v := literal(t, lb, "internal"); !v.True() {
		t.Errorf("aws_lb.this: internal = %#v, want true", v)
	}
	if got := literalString(t, lb, "load_balancer_type"); got != "network" {
		t.Errorf("aws_lb.this: load_balancer_type = %q, want network", got)
	}
	if !hasRef(m.refs(attr(t, lb, "enable_cross_zone_load_balancing").Expr), "var.cross_zone_enabled") {
		t.Errorf("aws_lb.this: enable_cross_zone_load_balancing must come from var.cross_zone_enabled")
	}
	if v := m.defaultOf(t, "cross_zone_enabled"); v.True() {
		t.Errorf("cross_zone_enabled defaults to true, want false")
	}
	if !hasRef(m.refs(attr(t, lb, "security_groups").Expr), "aws_security_group.nlb") {
		t.Errorf("aws_lb.this must carry aws_security_group.nlb")
	}
	if got := len(m.resources("aws_lb")); got != 1 {
		t.Errorf("%d aws_lb resources, want 1 (for_each over shared or per-AZ)", got)
	}

	// Listeners: TCP on the HTTP and SOCKS5 ports, one per target group.
	ports := m.evalDefaults(t, m.locals()["proxy_ports"])
	want := map[string]int64{"http": 3128, "socks5": 1080}
	got := map[string]int64{}
	for k, v := range ports.AsValueMap() {
		got[k] = asInt(t, v)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("default listener ports (-want +got):\n%s", diff)
	}
	listener := m.one(t, "resource", "aws_lb_listener", "this")
	if got := literalString(t, listener, "protocol"); got != "TCP" {
		t.Errorf("aws_lb_listener.this: protocol = %q, want TCP", got)
	}
	if !hasRef(m.refs(attr(t, listener, "for_each").Expr), "local.target_groups") {
		t.Errorf("aws_lb_listener.this must have one listener per target group")
	}
}

func TestTerraformFarmTargetGroups(t *testing.T) {
	m := loadModules(t)[farmDir]
	tg := m.one(t, "resource", "aws_lb_target_group", "this")

	if got := literalString(t, tg, "protocol"); got != "TCP" {
		t.Errorf("protocol = %q, want TCP", got)
	}
	hcs := nested(tg, "health_check")
	if len(hcs) != 1 {
		t.Fatalf("want one health_check block, got %d", len(hcs))
	}
	hc := hcs[0]
	if got := literalString(t, hc, "path"); got != "/readyz" {
		t.Errorf("health_check.path = %q, want /readyz", got)
	}
	if got := literalString(t, hc, "protocol"); got != "HTTP" {
		t.Errorf("health_check.protocol = %q, want HTTP", got)
	}
	if !hasRef(m.refs(attr(t, hc, "port").Expr), "var.admin_port") {
		t.Errorf("health_check.port must be var.admin_port")
	}
	if got := asInt(t, m.defaultOf(t, "admin_port")); got != 9090 {
		t.Errorf("admin_port default = %d, want 9090", got)
	}

	// Deregistration delay: derived from drain, equal to drain_delay + drain.
	dereg := attr(t, tg, "deregistration_delay").Expr
	refs := m.refs(dereg)
	if !hasRef(refs, "var.drain_seconds") || !hasRef(refs, "var.drain_delay_seconds") {
		t.Errorf("deregistration_delay must derive from var.drain_seconds and var.drain_delay_seconds, refs %q", refs)
	}
	drain := asInt(t, m.defaultOf(t, "drain_seconds"))
	delay := asInt(t, m.defaultOf(t, "drain_delay_seconds"))
	if got := asInt(t, m.evalDefaults(t, dereg)); got != drain+delay {
		t.Errorf("deregistration_delay = %d with defaults, want drain_delay + drain = %d", got, drain+delay)
	}
	if drain != 30 {
		t.Errorf("drain_seconds default = %d, want 30 (timeouts.drain default)", drain)
	}
	interval := asInt(t, m.defaultOf(t, "health_check_interval_seconds"))
	unhealthy := asInt(t, m.defaultOf(t, "health_check_unhealthy_threshold"))
	if delay < interval*unhealthy {
		t.Errorf("drain_delay_seconds default %d < interval %d * unhealthy threshold %d: the NLB would not see /readyz 503 in time", delay, interval, unhealthy)
	}

	// Draining targets keep their connections.
	ths := nested(tg, "target_health_state")
	if len(ths) != 1 {
		t.Fatalf("want one target_health_state block, got %d", len(ths))
	}
	if v := literal(t, ths[0], "enable_unhealthy_connection_termination"); v.True() {
		t.Errorf("target_health_state.enable_unhealthy_connection_termination must be false: an NLB would cut every tunnel of a draining proxy")
	}

	// PROXY protocol v2 is an option, off by default, and turns client IP
	// preservation off (the source is then the NLB, which egressd trusts).
	if !hasRef(m.refs(attr(t, tg, "proxy_protocol_v2").Expr), "var.proxy_protocol_v2") {
		t.Errorf("proxy_protocol_v2 must come from var.proxy_protocol_v2")
	}
	if !hasRef(m.refs(attr(t, tg, "preserve_client_ip").Expr), "var.proxy_protocol_v2") {
		t.Errorf("preserve_client_ip must follow var.proxy_protocol_v2")
	}
	if v := m.defaultOf(t, "proxy_protocol_v2"); v.True() {
		t.Errorf("proxy_protocol_v2 defaults to true, want false")
	}
}

func TestTerraformFarmAutoScaling(t *testing.T) {
	m := loadModules(t)[farmDir]

	asg := m.one(t, "resource", "aws_autoscaling_group", "this")
	if got := m.refs(attr(t, asg, "for_each").Expr); !slices.Equal(got, []string{"var.subnet_ids_by_az"}) {
		t.Errorf("aws_autoscaling_group.this: for_each refs %q, want one group per var.subnet_ids_by_az entry", got)
	}
	zones, ok := attr(t, asg, "vpc_zone_identifier").Expr.(*hclsyntax.TupleConsExpr)
	if !ok || len(zones.Exprs) != 1 || m.text(zones.Exprs[0]) != "each.value" {
		t.Errorf("aws_autoscaling_group.this: vpc_zone_identifier = %s, want [each.value] (one AZ per group)", m.text(attr(t, asg, "vpc_zone_identifier").Expr))
	}
	if got := literalString(t, asg, "health_check_type"); got != "ELB" {
		t.Errorf("health_check_type = %q, want ELB", got)
	}
	if !hasRef(m.refs(attr(t, asg, "target_group_arns").Expr), "aws_lb_target_group.this") {
		t.Errorf("the groups must register in aws_lb_target_group.this")
	}
	if len(nested(asg, "launch_template")) != 1 {
		t.Errorf("the groups must use the launch template")
	}

	hook := m.one(t, "resource", "aws_autoscaling_lifecycle_hook", "drain")
	if got := literalString(t, hook, "lifecycle_transition"); got != "autoscaling:EC2_INSTANCE_TERMINATING" {
		t.Errorf("lifecycle_transition = %q, want autoscaling:EC2_INSTANCE_TERMINATING", got)
	}
	if got := literalString(t, hook, "default_result"); got != "CONTINUE" {
		t.Errorf("default_result = %q, want CONTINUE", got)
	}
	if !hasRef(m.refs(attr(t, hook, "for_each").Expr), "aws_autoscaling_group.this") {
		t.Errorf("one lifecycle hook per group")
	}
	heartbeat := asInt(t, m.evalDefaults(t, attr(t, hook, "heartbeat_timeout").Expr))
	stop := asInt(t, m.defaultOf(t, "drain_seconds")) + asInt(t, m.defaultOf(t, "drain_delay_seconds"))
	if heartbeat <= stop || heartbeat > 7200 {
		t.Errorf("heartbeat_timeout = %d with defaults, want > drain_delay + drain = %d and <= 7200", heartbeat, stop)
	}

	lt := m.one(t, "resource", "aws_launch_template", "this")
	md := nested(lt, "metadata_options")
	if len(md) != 1 || literalString(t, md[0], "http_tokens") != "required" {
		t.Errorf("the launch template must require IMDSv2 (metadata_options.http_tokens = required)")
	}
}

func TestTerraformFarmUserDataTemplate(t *testing.T) {
	m := loadModules(t)[farmDir]
	call, ok := m.locals()["user_data"].(*hclsyntax.FunctionCallExpr)
	if !ok || call.Name != "templatefile" || len(call.Args) != 2 {
		t.Fatalf("local.user_data must be templatefile(path, vars)")
	}
	if got := m.text(call.Args[0]); got != `"${path.module}/user_data.sh.tftpl"` {
		t.Errorf("template path = %s", got)
	}
	obj, ok := call.Args[1].(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatalf("templatefile variables must be an object constructor")
	}
	var given []string
	for _, item := range obj.Items {
		given = append(given, hcl.ExprAsKeyword(item.KeyExpr))
	}
	sort.Strings(given)

	src, err := os.ReadFile(filepath.Join(farmDir, "user_data.sh.tftpl"))
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
	used = sortedSet(used)
	if diff := cmp.Diff(given, used); diff != "" {
		t.Errorf("templatefile variables given (-) vs used by the template (+):\n%s", diff)
	}

	// Render with sample values and check the shell syntax and key steps.
	vars := map[string]cty.Value{}
	for _, name := range used {
		vars[name] = cty.StringVal("sample-" + name)
	}
	vars["package_s3_uri"] = cty.StringVal("s3://bucket/egressd_1.2.3_amd64.deb")
	vars["config_s3_uri"] = cty.StringVal("s3://bucket/egressd.yaml")
	vars["admin_port"] = cty.NumberIntVal(9090)
	out, diags := tmpl.Value(&hcl.EvalContext{Variables: vars})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	script := out.AsString()
	path := filepath.Join(t.TempDir(), "user-data.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
		t.Errorf("sh -n rendered user data: %v\n%s", err, out)
	}
	for _, want := range []string{
		"aws s3 cp --only-show-errors \"$PACKAGE_URI\"",
		"apt-get install -y -q -o Dpkg::Options::=--force-confold",
		"/usr/lib/egressd/policy-sync",
		"TimeoutStopSec=$STOP_TIMEOUT",
		"systemctl enable egressd.service egressd-policy-sync.timer egressd-asg-drain.service",
		"EGRESSD_CONFIG_URI=$CONFIG_URI",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("rendered user data lacks %q", want)
		}
	}
}

// TestTerraformNoOpenIngress: no ingress rule in any module admits 0.0.0.0/0
// or ::/0, and every CIDR variable that feeds an ingress rule refuses the
// whole address space (TestTerraformCIDRVariablesRefuseWide checks them all).
func TestTerraformNoOpenIngress(t *testing.T) {
	open := []string{"0.0.0.0/0", "::/0"}
	for dir, m := range loadModules(t) {
		var ingress []*hclsyntax.Block
		for _, b := range m.resources("aws_security_group") {
			ingress = append(ingress, nested(b, "ingress")...)
		}
		for _, b := range m.resources("aws_security_group_rule") {
			if a := b.Body.Attributes["type"]; a != nil && strings.Contains(m.text(a.Expr), "ingress") {
				ingress = append(ingress, b)
			}
		}
		ingress = append(ingress, m.resources("aws_vpc_security_group_ingress_rule")...)
		for _, b := range m.resources("aws_default_security_group") {
			ingress = append(ingress, nested(b, "ingress")...)
		}

		for _, b := range ingress {
			for name, a := range b.Body.Attributes {
				text := m.deepText(a.Expr)
				for _, cidr := range open {
					if strings.Contains(text, cidr) {
						t.Errorf("%s: %s %q: %s admits %s", dir, b.Type, b.Labels, name, cidr)
					}
				}
				for _, r := range m.refs(a.Expr) {
					v, ok := strings.CutPrefix(r, "var.")
					if !ok || !strings.HasSuffix(v, "_cidrs") {
						continue
					}
					refuses := true
					for _, wide := range [][]string{{"0.0.0.0/0"}, {"::/0"}, {"0.0.0.0/1", "128.0.0.0/1"}} {
						if m.validates(t, v, strList(wide...)) {
							refuses = false
						}
					}
					if !refuses {
						t.Errorf("%s: variable %q feeds ingress rule %q but its validation accepts the whole address space", dir, v, b.Labels)
					}
				}
			}
		}
	}
}

func TestTerraformFarmSecurityGroups(t *testing.T) {
	m := loadModules(t)[farmDir]

	// Proxy ports reach the NLB only from client_cidrs.
	clients := m.one(t, "resource", "aws_vpc_security_group_ingress_rule", "nlb_from_clients")
	if !hasRef(m.refs(attr(t, clients, "for_each").Expr), "var.client_cidrs") {
		t.Errorf("nlb_from_clients must iterate over var.client_cidrs")
	}
	// The instances take proxy and admin traffic from the NLB's group, and
	// the admin port from admin_cidrs (default: the VPC CIDR).
	fromNLB := m.one(t, "resource", "aws_vpc_security_group_ingress_rule", "instance_from_nlb")
	if !hasRef(m.refs(attr(t, fromNLB, "referenced_security_group_id").Expr), "aws_security_group.nlb") {
		t.Errorf("instance_from_nlb must reference the NLB's security group")
	}
	admin := m.one(t, "resource", "aws_vpc_security_group_ingress_rule", "instance_admin")
	refs := m.refs(admin.Body.Attributes["for_each"].Expr)
	if !hasRef(refs, "var.admin_cidrs") || !hasRef(refs, "data.aws_vpc.this") {
		t.Errorf("instance_admin must admit var.admin_cidrs or the VPC CIDR, refs %q", refs)
	}
	if _, ok := admin.Body.Attributes["referenced_security_group_id"]; ok {
		t.Errorf("instance_admin must be CIDR based")
	}
	if !strings.Contains(m.text(attr(t, admin, "from_port").Expr), "var.admin_port") {
		t.Errorf("instance_admin must open only var.admin_port")
	}

	// Egress to 0.0.0.0/0 only on egress_ports, default 80 and 443.
	internet := m.one(t, "resource", "aws_vpc_security_group_egress_rule", "instance_internet")
	if !hasRef(m.refs(attr(t, internet, "for_each").Expr), "var.egress_ports") {
		t.Errorf("instance_internet must iterate over var.egress_ports")
	}
	var ports []int64
	for _, v := range m.defaultOf(t, "egress_ports").AsValueSlice() {
		ports = append(ports, asInt(t, v))
	}
	if diff := cmp.Diff([]int64{80, 443}, ports); diff != "" {
		t.Errorf("egress_ports default (-want +got):\n%s", diff)
	}
}

func TestTerraformEndpointService(t *testing.T) {
	m := loadModules(t)[endpointDir]
	svc := m.one(t, "resource", "aws_vpc_endpoint_service", "this")
	if !hasRef(m.refs(attr(t, svc, "network_load_balancer_arns").Expr), "var.nlb_arns") {
		t.Errorf("the endpoint service must front var.nlb_arns")
	}
	if !hasRef(m.refs(attr(t, svc, "acceptance_required").Expr), "var.acceptance_required") || !m.defaultOf(t, "acceptance_required").True() {
		t.Errorf("acceptance_required must come from a variable that defaults to true")
	}
	p := m.one(t, "resource", "aws_vpc_endpoint_service_allowed_principal", "this")
	if !hasRef(m.refs(attr(t, p, "for_each").Expr), "var.allowed_principals") {
		t.Errorf("allowed principals must come from var.allowed_principals")
	}
	refusesStar := false
	for _, val := range nested(m.variable(t, "allowed_principals"), "validation") {
		if strings.Contains(m.text(attr(t, val, "condition").Expr), `p != "*"`) {
			refusesStar = true
		}
	}
	if !refusesStar {
		t.Errorf("allowed_principals must refuse \"*\"")
	}
}

func TestTerraformExampleVPC(t *testing.T) {
	m := loadModules(t)[exampleDir]

	// Clients have no route to the internet: no route in their tables at all,
	// besides the local route and the gateway endpoints' prefix lists.
	for _, rt := range m.blocks("resource", "aws_route_table", "client") {
		if len(nested(rt, "route")) > 0 {
			t.Errorf("aws_route_table.client must have no inline routes")
		}
	}
	for _, r := range m.resources("aws_route") {
		if hasRef(m.attrRefs(t, r, "route_table_id"), "aws_route_table.client") {
			t.Errorf("aws_route.%s adds a route to the client route tables", r.Labels[1])
		}
	}
	defaultRoute := func(r *hclsyntax.Block) bool {
		for _, name := range []string{"destination_cidr_block", "destination_ipv6_cidr_block"} {
			if a := r.Body.Attributes[name]; a != nil {
				if text := m.text(a.Expr); strings.Contains(text, "0.0.0.0/0") || strings.Contains(text, "::/0") {
					return true
				}
			}
		}
		return false
	}

	// Default routes only in the proxies' (egress) and the NAT gateways'
	// (public) tables; TestTerraformExampleEgressModes checks which, per mode.
	for _, r := range m.resources("aws_route") {
		refs := m.attrRefs(t, r, "route_table_id")
		if defaultRoute(r) && !hasRef(refs, "aws_route_table.egress") && !hasRef(refs, "aws_route_table.public") {
			t.Errorf("aws_route.%s: a default route outside the egress and public tables", r.Labels[1])
		}
	}

	// S3 and DynamoDB gateway endpoints in the clients' route tables.
	for name, service := range map[string]string{"s3": ".s3", "dynamodb": ".dynamodb"} {
		ep := m.one(t, "resource", "aws_vpc_endpoint", name)
		if got := literalString(t, ep, "vpc_endpoint_type"); got != "Gateway" {
			t.Errorf("aws_vpc_endpoint.%s: type %q, want Gateway", name, got)
		}
		if !strings.HasSuffix(strings.Trim(m.text(attr(t, ep, "service_name").Expr), `"`), service) {
			t.Errorf("aws_vpc_endpoint.%s: service_name %s", name, m.text(attr(t, ep, "service_name").Expr))
		}
		if !hasRef(m.refs(attr(t, ep, "route_table_ids").Expr), "aws_route_table.client") {
			t.Errorf("aws_vpc_endpoint.%s must be attached to the client route tables", name)
		}
	}

	// Flow logs: all traffic to CloudWatch Logs, with a role for the service.
	fl := m.one(t, "resource", "aws_flow_log", "this")
	if got := literalString(t, fl, "traffic_type"); got != "ALL" {
		t.Errorf("flow log traffic_type = %q, want ALL", got)
	}
	if got := literalString(t, fl, "log_destination_type"); got != "cloud-watch-logs" {
		t.Errorf("flow log destination type = %q, want cloud-watch-logs", got)
	}
	if !hasRef(m.refs(attr(t, fl, "log_destination").Expr), "aws_cloudwatch_log_group.flow_logs") {
		t.Errorf("flow logs must go to aws_cloudwatch_log_group.flow_logs")
	}
	if !hasRef(m.refs(attr(t, fl, "iam_role_arn").Expr), "aws_iam_role.flow_logs") {
		t.Errorf("flow logs need aws_iam_role.flow_logs")
	}
	if !hasRef(m.refs(attr(t, fl, "vpc_id").Expr), "aws_vpc.this") {
		t.Errorf("flow logs must cover the VPC")
	}
	trust := m.one(t, "data", "aws_iam_policy_document", "flow_logs_assume")
	if !strings.Contains(m.text(trust.Body.Blocks[0].Body.Blocks[0].Body.Attributes["identifiers"].Expr), "vpc-flow-logs.amazonaws.com") {
		t.Errorf("the flow logs role must trust vpc-flow-logs.amazonaws.com")
	}
}

// TestTerraformExampleCallsFarm checks the module call against the farm
// module's variables: every argument exists and every required one is set.
func TestTerraformExampleCallsFarm(t *testing.T) {
	mods := loadModules(t)
	ex, farm := mods[exampleDir], mods[farmDir]
	call := ex.one(t, "module", "egressd")
	if got := literalString(t, call, "source"); got != "../../modules/egressd-farm" {
		t.Errorf("module source = %q", got)
	}
	declared := map[string]bool{}
	var required []string
	for _, v := range farm.blocks("variable") {
		declared[v.Labels[0]] = true
		if _, ok := v.Body.Attributes["default"]; !ok {
			required = append(required, v.Labels[0])
		}
	}
	for name := range call.Body.Attributes {
		if name != "source" && name != "providers" && !declared[name] {
			t.Errorf("module egressd sets %q, which the farm module does not declare", name)
		}
	}
	for _, name := range required {
		if _, ok := call.Body.Attributes[name]; !ok {
			t.Errorf("module egressd does not set required variable %q", name)
		}
	}
	if !hasRef(ex.refs(attr(t, call, "subnet_ids_by_az").Expr), "aws_subnet.egress") {
		t.Errorf("the farm must run in the egress subnets")
	}
	if !hasRef(ex.refs(attr(t, call, "client_cidrs").Expr), "local.client_cidrs") {
		t.Errorf("the farm must admit the client subnets")
	}
	if _, err := os.Stat(filepath.Join(exampleDir, "../../../client/user-data.sh")); err != nil {
		t.Errorf("the example's client user data file: %v", err)
	}
}

// TestTerraformFmt: every .tf and .tfvars file is laid out as `terraform
// fmt` writes it. Terraform is in none of the package registries the project
// reaches, so scripts/setup.sh cannot install it; the test runs its
// formatter instead, hclwrite.Format, which terraform fmt applies after
// rewriting pre-0.12 syntax (interpolation-only strings, quoted type names)
// that these files, parsed and evaluated by the tests above, do not use.
func TestTerraformFmt(t *testing.T) {
	var checked int
	err := filepath.WalkDir("terraform", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".tf" && filepath.Ext(path) != ".tfvars") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, diags := hclwrite.ParseConfig(src, path, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s: %v", path, diags)
			return nil
		}
		checked++
		if got := hclwrite.Format(src); !bytes.Equal(got, src) {
			t.Errorf("%s is not formatted (terraform fmt would rewrite it; -want +got):\n%s", path,
				cmp.Diff(strings.Split(string(got), "\n"), strings.Split(string(src), "\n")))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 16 {
		t.Fatalf("checked %d Terraform files, want every one under terraform/ (16 or more)", checked)
	}
}
