package deployments

import (
	_ "embed" // the alert rules
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

//go:embed prometheus/egressd.rules.yaml
var alertRulesYAML []byte

// AlertRule is one alerting rule of prometheus/egressd.rules.yaml.
type AlertRule struct {
	Name string
	Expression
}

// AlertRules returns the alerting rules of prometheus/egressd.rules.yaml
// with the series and labels each expression names.
func AlertRules() ([]AlertRule, error) {
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(alertRulesYAML, &f); err != nil {
		return nil, fmt.Errorf("prometheus/egressd.rules.yaml: %w", err)
	}
	var rules []AlertRule
	var errs []error
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			e, err := newExpression(fmt.Sprintf("group %q alert %q", g.Name, r.Alert), r.Expr)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			rules = append(rules, AlertRule{Name: r.Alert, Expression: e})
		}
	}
	return rules, errors.Join(errs...)
}
