package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

const committedSchema = "../../docs/egressd.schema.json"

// TestSchemaIsCurrent: the committed docs/egressd.schema.json is what the
// config types generate now. A config key added, removed or described
// differently changes it: regenerate it with the command in the message.
func TestSchemaIsCurrent(t *testing.T) {
	got, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(committedSchema)
	if err != nil {
		t.Fatalf("%v: generate it with %s", err, RegenerateSchema)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/egressd.schema.json is out of date with the config types; regenerate it:\n\t%s\n(diff, -committed +generated):\n%s",
			RegenerateSchema, cmp.Diff(string(want), string(got)))
	}
}

// TestSchemaDescribesEveryKey: every key of the config types has a
// description, a type, and no key is described that does not exist.
func TestSchemaDescribesEveryKey(t *testing.T) {
	keys := SchemaKeys()
	if len(keys) < 40 {
		t.Fatalf("only %d keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		if strings.TrimSpace(fieldDocs[k]) == "" {
			t.Errorf("%s has no description in fieldDocs (proxy/config/schema_docs.go)", k)
		}
	}
	for k := range fieldDocs {
		if !slices.Contains(keys, k) {
			t.Errorf("fieldDocs describes %s, which is not a config key", k)
		}
	}
	for k := range fieldRules {
		if !slices.Contains(keys, strings.TrimSuffix(k, "[]")) {
			t.Errorf("fieldRules has %s, which is not a config key", k)
		}
	}
}

// TestMarshalDefaults: `egressd config defaults` is a config file that
// loads (parse, validate, compile) to exactly the defaults, and that the
// schema accepts.
func TestMarshalDefaults(t *testing.T) {
	out, err := MarshalDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := LoadBytes(out, "defaults.yaml")
	if err != nil {
		t.Fatalf("the defaults do not load: %v\n%s", err, out)
	}
	if d := cmp.Diff(defaults(), *c, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("loaded defaults differ (-want +got):\n%s", d)
	}
	for _, k := range []string{"dns.min_ttl", "log.access_file", "policy.rules"} {
		if !strings.Contains(string(out), "# "+fieldDocs[k]) {
			t.Errorf("the description of %s is not in the output", k)
		}
	}
	validate(t, mustSchema(t), "defaults.yaml", out, true)
}

// TestSchemaAcceptsShippedConfigs: every config egressd ships validates
// against the schema, so editors do not flag a valid file; and files
// egressd refuses for their shape are refused by the schema too.
func TestSchemaAcceptsShippedConfigs(t *testing.T) {
	schema := mustSchema(t)
	files := map[string][]byte{"default.yaml": defaultYAML}
	for _, p := range []string{
		"../../deployments/egressd.example.yaml",
		"../../deployments/farm/egressd.farm.yaml",
		"../../deployments/terraform/examples/vpc/egressd.yaml",
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p)] = b
	}
	// The Kubernetes ConfigMap carries the config as a string.
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	b, err := os.ReadFile("../../deployments/kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		if strings.HasSuffix(k, ".yaml") {
			files["configmap:"+k] = []byte(v)
		}
	}
	for name, data := range files {
		if _, _, err := LoadBytes(data, name); err != nil {
			t.Errorf("%s does not load: %v", name, err)
			continue
		}
		validate(t, schema, name, data, true)
	}

	for name, bad := range map[string]string{
		"unknown key":        "dns:\n  server: [\"10.0.0.2:53\"]\n",
		"mode":               "policy:\n  mode: audit\n",
		"duration":           "timeouts:\n  idle: 5 minutes\n",
		"size":               "limits:\n  max_header_bytes: 64 kilobytes\n",
		"port":               "policy:\n  tls_ports: [0]\n",
		"rule without name":  "policy:\n  rules:\n    - hosts: [a.test]\n      ports: [443]\n",
		"boolean":            "admin:\n  pprof: yes please\n",
		"log level":          "log:\n  level: verbose\n",
		"group mode":         "policy:\n  groups:\n    web:\n      mode: maybe\n",
		"list where a value": "listen:\n  http: [\"127.0.0.1:3128\"]\n",
	} {
		if _, _, err := LoadBytes([]byte(bad), name); err == nil {
			t.Errorf("%s: egressd accepts %q; pick a case it refuses", name, bad)
		}
		validate(t, schema, name, []byte(bad), false)
	}
}

func mustSchema(t *testing.T) map[string]any {
	t.Helper()
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// validate checks a YAML document against the schema with a validator of
// the keywords Schema emits (type, properties, additionalProperties, items,
// enum, pattern, minimum, maximum, required).
func validate(t *testing.T, schema map[string]any, name string, data []byte, wantValid bool) {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var errs []string
	check(schema, doc, "", &errs)
	switch {
	case wantValid && len(errs) > 0:
		t.Errorf("%s: the schema refuses a config egressd accepts:\n%s", name, strings.Join(errs, "\n"))
	case !wantValid && len(errs) == 0:
		t.Errorf("%s: the schema accepts a config egressd refuses", name)
	}
}

func check(s map[string]any, v any, path string, errs *[]string) {
	fail := func(format string, a ...any) { *errs = append(*errs, path+": "+fmt.Sprintf(format, a...)) }
	if types, ok := s["type"]; ok {
		var allowed []string
		switch ts := types.(type) {
		case string:
			allowed = []string{ts}
		case []any:
			for _, x := range ts {
				allowed = append(allowed, x.(string))
			}
		}
		if !slices.Contains(allowed, jsonType(v)) {
			fail("%v (%s) is not %v", v, jsonType(v), allowed)
			return
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return reflect.DeepEqual(e, v) }) {
		fail("%v is not one of %v", v, enum)
	}
	switch x := v.(type) {
	case string:
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(x) {
			fail("%q does not match %s", x, p)
		}
	case int:
		if m, ok := s["minimum"].(float64); ok && float64(x) < m {
			fail("%d < %v", x, m)
		}
		if m, ok := s["maximum"].(float64); ok && float64(x) > m {
			fail("%d > %v", x, m)
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range x {
				check(items, e, fmt.Sprintf("%s[%d]", path, i), errs)
			}
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range anyStrings(s["required"]) {
			if _, ok := x[r]; !ok {
				fail("%s is required", r)
			}
		}
		for k, e := range x {
			p := strings.TrimPrefix(path+"."+k, ".")
			if ps, ok := props[k].(map[string]any); ok {
				check(ps, e, p, errs)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					*errs = append(*errs, p+": unknown key")
				}
			case map[string]any:
				check(ap, e, p, errs)
			}
		}
	}
}

func anyStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, e := range l {
			out = append(out, e.(string))
		}
	}
	return out
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int, int64, uint64:
		return "integer"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
