package config

import (
	"strings"
	"testing"
)

// TestDLPErrorsNameKeyAndLine: a rule naming a missing profile, a bad
// pattern and a bad oversize value are each refused with key and line.
func TestDLPErrorsNameKeyAndLine(t *testing.T) {
	_, err := Parse([]byte(`policy:
  rules:
    - name: up
      hosts: ["upload.test"]
      ports: [80]
      dlp: strikt
dlp:
  oversize: drop
  profiles:
    strict:
      detectors: [github_token]
      patterns:
        - { name: id, regex: "[0-9]+" }
`), "t.yaml")
	if err == nil {
		t.Fatal("parsed")
	}
	for _, want := range []string{
		`t.yaml:6: policy.rules[0].dlp: "strikt": no such profile in dlp.profiles`,
		`t.yaml:8: dlp.oversize: "drop": must be block, allow or stream`,
		`t.yaml:13: dlp.profiles.strict.patterns[0].regex: "[0-9]+": must start with at least 3 literal characters`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
