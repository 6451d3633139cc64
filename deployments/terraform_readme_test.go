package deployments

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// readmeCell makes text fit a Markdown table cell.
func readmeCell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// readmeVariableRow is the README's table row for a variable: name, type,
// default (or "required") and description, from the HCL.
func readmeVariableRow(t *testing.T, m *tfModule, b *hclsyntax.Block) string {
	t.Helper()
	def := "required"
	if a := b.Body.Attributes["default"]; a != nil {
		def = "`" + readmeCell(m.text(a.Expr)) + "`"
	}
	desc := literalString(t, b, "description")
	return "| `" + b.Labels[0] + "` | `" + readmeCell(m.text(attr(t, b, "type").Expr)) + "` | " + def + " | " + readmeCell(desc) + " |"
}

func readmeOutputRow(t *testing.T, m *tfModule, b *hclsyntax.Block) string {
	t.Helper()
	return "| `" + b.Labels[0] + "` | " + readmeCell(literalString(t, b, "description")) + " |"
}

// TestTerraformModuleREADMEs: each module's README has a row for every
// input and output, with the HCL's type, default and description, and no
// row for one that does not exist.
func TestTerraformModuleREADMEs(t *testing.T) {
	for _, dir := range []string{farmDir, endpointDir, inlineDir} {
		m := loadModules(t)[dir]
		data, err := os.ReadFile(filepath.Join(dir, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		readme := string(data)
		rows := map[string]bool{}
		for _, line := range strings.Split(readme, "\n") {
			if strings.HasPrefix(line, "| `") {
				name, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
				rows[name] = true
			}
		}
		want := map[string]bool{}
		for _, b := range m.blocks("variable") {
			want[b.Labels[0]] = true
			if row := readmeVariableRow(t, m, b); !strings.Contains(readme, row+"\n") {
				t.Errorf("%s/README.md: the row of input %q is missing or stale; want\n%s", dir, b.Labels[0], row)
			}
		}
		for _, b := range m.blocks("output") {
			want[b.Labels[0]] = true
			if row := readmeOutputRow(t, m, b); !strings.Contains(readme, row+"\n") {
				t.Errorf("%s/README.md: the row of output %q is missing or stale; want\n%s", dir, b.Labels[0], row)
			}
		}
		for name := range rows {
			if !want[name] {
				t.Errorf("%s/README.md: row %q names no input or output", dir, name)
			}
		}
	}
}
