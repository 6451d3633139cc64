package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse: Parse never panics, and a config that parses survives a
// Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	f.Add(defaultYAML)
	if b, err := os.ReadFile(filepath.Join("..", "..", "deployments", "egressd.example.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("listen: {http: \":0\"}\npolicy: {rules: [{name: a, hosts: [\"*.a.b\"], ports: [1]}]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("limits: {max_header_bytes: 1GiB}\ntimeouts: {idle: 1h}\n"))
	f.Add([]byte("policy:\n  groups: {g: {users: [u]}}\n  rules:\n    - {name: r, groups: [g], cidrs: [10.20.0.0/16], ports: [8443]}\n"))
	f.Add([]byte("policy:\n  ech: deny\n  nat64_prefixes: [\"64:ff9b:1:abcd::/96\", \"2a00::/32\"]\n  allow_ranges: [\"64:ff9b:1:abcd::/96\"]\n"))
	f.Add([]byte("policy: {nat64_prefixes: [], ech: allow}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := Parse(out, "marshaled.yaml")
		if err != nil {
			t.Fatalf("re-parse of marshaled config: %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, c2, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
