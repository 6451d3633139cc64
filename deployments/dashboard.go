package deployments

import (
	_ "embed" // the dashboard and its metric list
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

//go:embed grafana/egressd.json
var dashboardJSON []byte

//go:embed grafana/metrics.txt
var metricsTxt string

// Expression is one PromQL expression of the Grafana dashboard: a panel
// target, an annotation, or the selector of a template variable query.
type Expression struct {
	Where   string   // "panel <title> target <refId>", "annotation <name>", "variable <name>"
	PromQL  string   // the expression as written, Grafana variables included
	Metrics []string // series names it selects, sorted, deduplicated
	Labels  []string // label names it matches, groups or joins on, sorted, deduplicated
}

// MetricFamily is one line of grafana/metrics.txt: a family the dashboard
// queries, its Prometheus type and its labels (job, instance and le are
// implied).
type MetricFamily struct {
	Name   string
	Type   string // counter, gauge, histogram or summary
	Labels []string
}

// DashboardMetricFamilies returns the families listed in grafana/metrics.txt.
func DashboardMetricFamilies() ([]MetricFamily, error) {
	var families []MetricFamily
	var errs []error
	for i, line := range strings.Split(metricsTxt, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			errs = append(errs, fmt.Errorf("metrics.txt line %d: want <name> <type> <labels|->, got %q", i+1, line))
			continue
		}
		switch fields[1] {
		case "counter", "gauge", "histogram", "summary":
		default:
			errs = append(errs, fmt.Errorf("metrics.txt line %d: unknown type %q", i+1, fields[1]))
		}
		f := MetricFamily{Name: fields[0], Type: fields[1]}
		if fields[2] != "-" {
			f.Labels = strings.Split(fields[2], ",")
		}
		families = append(families, f)
	}
	return families, errors.Join(errs...)
}

// FamilyOf maps a series name used in PromQL to the family that exports it:
// the name itself, or for histograms and summaries the name without its
// _bucket, _sum or _count suffix. typeOf reports a family's type and whether
// it exists (from metrics.txt, or from a prometheus.Gatherer's output).
func FamilyOf(series string, typeOf func(family string) (string, bool)) (string, bool) {
	if _, ok := typeOf(series); ok {
		return series, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(series, suffix)
		if !found {
			continue
		}
		typ, ok := typeOf(base)
		if ok && (typ == "histogram" || (typ == "summary" && suffix != "_bucket")) {
			return base, true
		}
	}
	return "", false
}

// dashboard is the part of Grafana's dashboard model that holds queries.
type dashboard struct {
	Panels      []panel `json:"panels"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // collapsed rows nest their panels
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// DashboardExpressions returns every PromQL expression of
// grafana/egressd.json with the series and labels it names.
func DashboardExpressions() ([]Expression, error) {
	var d dashboard
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		return nil, fmt.Errorf("grafana/egressd.json: %w", err)
	}
	var exprs []Expression
	var errs []error
	add := func(where, promql string) {
		e, err := newExpression(where, promql)
		if err != nil {
			errs = append(errs, err)
			return
		}
		exprs = append(exprs, e)
	}

	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			for _, t := range p.Targets {
				add(fmt.Sprintf("panel %q target %s", p.Title, t.RefID), t.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			add(fmt.Sprintf("annotation %q", a.Name), a.Expr)
		}
	}

	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// The query is a string (older Grafana) or {"query": "..."}.
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				errs = append(errs, fmt.Errorf("variable %q: query is neither a string nor an object", v.Name))
				continue
			}
			q = obj.Query
		}
		where := fmt.Sprintf("variable %q", v.Name)
		selector, label, err := labelValuesQuery(q)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		e, err := newExpression(where, selector)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.PromQL = q
		e.Labels = sortedSet(append(e.Labels, label))
		exprs = append(exprs, e)
	}
	return exprs, errors.Join(errs...)
}

func newExpression(where, promql string) (Expression, error) {
	if strings.TrimSpace(promql) == "" {
		return Expression{}, fmt.Errorf("%s: empty expression", where)
	}
	metrics, labels, err := scanPromQL(promql)
	if err != nil {
		return Expression{}, fmt.Errorf("%s: %w", where, err)
	}
	if len(metrics) == 0 {
		return Expression{}, fmt.Errorf("%s: no metric in %q", where, promql)
	}
	return Expression{Where: where, PromQL: promql, Metrics: metrics, Labels: labels}, nil
}

// labelValuesQuery splits Grafana's label_values(<selector>, <label>).
func labelValuesQuery(q string) (selector, label string, err error) {
	q = strings.TrimSpace(q)
	inner, ok := strings.CutPrefix(q, "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return "", "", fmt.Errorf("only label_values(selector, label) queries are supported, got %q", q)
	}
	inner = strings.TrimSuffix(inner, ")")
	i := strings.LastIndex(inner, ",")
	if i < 0 {
		return "", "", fmt.Errorf("label_values without a selector names no metric: %q", q)
	}
	return strings.TrimSpace(inner[:i]), strings.TrimSpace(inner[i+1:]), nil
}

// PromQL words that are never metric names.
var (
	promAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	promLabelLists   = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	promKeywords     = []string{"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
)

// scanPromQL is a small PromQL lexer: it returns the metric names (bare
// identifiers that are not functions, aggregations or keywords) and the
// label names (in {...} matchers and in by/without/on/ignoring/group_*
// lists). It understands strings, ranges [..], numbers and durations,
// and Grafana's $variables; it does not check the grammar beyond brackets.
func scanPromQL(s string) (metrics, labels []string, err error) {
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])) {
			i++
		}
	}
	ident := func() string {
		start := i
		for i < len(s) && isIdentChar(s[i], i > start) {
			i++
		}
		return s[start:i]
	}
	skipString := func() error {
		quote := s[i]
		i++
		for i < len(s) {
			switch {
			case s[i] == '\\' && quote != '`':
				i += 2
			case s[i] == quote:
				i++
				return nil
			default:
				i++
			}
		}
		return fmt.Errorf("unterminated string in %q", s)
	}
	// labelList reads "(a, b)" after by/without/on/ignoring/group_*.
	labelList := func() error {
		skipSpace()
		if i >= len(s) || s[i] != '(' {
			return nil // group_left without labels
		}
		i++
		for {
			skipSpace()
			if i >= len(s) {
				return fmt.Errorf("unterminated label list in %q", s)
			}
			switch {
			case s[i] == ')':
				i++
				return nil
			case s[i] == ',':
				i++
			case isIdentChar(s[i], false):
				labels = append(labels, ident())
			default:
				return fmt.Errorf("unexpected %q in label list of %q", s[i], s)
			}
		}
	}
	// matchers reads `{name op "value", ...}`.
	matchers := func() error {
		i++ // '{'
		for {
			skipSpace()
			if i >= len(s) {
				return fmt.Errorf("unterminated {...} in %q", s)
			}
			switch {
			case s[i] == '}':
				i++
				return nil
			case s[i] == ',':
				i++
			case isIdentChar(s[i], false):
				labels = append(labels, ident())
				skipSpace()
				for i < len(s) && strings.ContainsRune("=!~", rune(s[i])) {
					i++
				}
				skipSpace()
				if i >= len(s) || !strings.ContainsRune("\"'`", rune(s[i])) {
					return fmt.Errorf("matcher without a quoted value in %q", s)
				}
				if err := skipString(); err != nil {
					return err
				}
			case strings.ContainsRune("\"'`", rune(s[i])):
				// {"metric_name"} form of newer Prometheus versions.
				start := i + 1
				if err := skipString(); err != nil {
					return err
				}
				metrics = append(metrics, s[start:i-1])
			default:
				return fmt.Errorf("unexpected %q in matchers of %q", s[i], s)
			}
		}
	}

	depth := 0
	for {
		skipSpace()
		if i >= len(s) {
			break
		}
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, nil, err
			}
		case c == '{':
			if err := matchers(); err != nil {
				return nil, nil, err
			}
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, nil, fmt.Errorf("unterminated [...] in %q", s)
			}
			i += end + 1
		case c == '$':
			// Grafana variable: $name, ${name} or ${name:format}.
			i++
			if i < len(s) && s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return nil, nil, fmt.Errorf("unterminated ${...} in %q", s)
				}
				i += end + 1
			} else {
				ident()
			}
		case c >= '0' && c <= '9' || c == '.':
			// Numbers, and durations such as 5m after offset.
			for i < len(s) && (isIdentChar(s[i], true) || s[i] == '.') {
				i++
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, nil, fmt.Errorf("unbalanced ) in %q", s)
			}
			i++
		case isIdentChar(c, false):
			word := ident()
			switch {
			case slices.Contains(promLabelLists, word):
				if err := labelList(); err != nil {
					return nil, nil, err
				}
			case slices.Contains(promAggregations, word), slices.Contains(promKeywords, strings.ToLower(word)):
			default:
				save := i
				skipSpace()
				isCall := i < len(s) && s[i] == '('
				i = save
				if !isCall {
					metrics = append(metrics, word)
				}
			}
		case strings.ContainsRune("+-*/%^=!<>,:", rune(c)):
			i++
		default:
			return nil, nil, fmt.Errorf("unexpected %q in %q", c, s)
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced ( in %q", s)
	}
	return sortedSet(metrics), sortedSet(labels), nil
}

func isIdentChar(c byte, notFirst bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == ':':
		return true
	case c >= '0' && c <= '9':
		return notFirst
	}
	return false
}

func sortedSet(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
