package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// grafanaBuiltins are the Grafana variables an expression may use besides
// the dashboard's own.
var grafanaBuiltins = map[string]bool{"__rate_interval": true, "__interval": true, "__range": true, "__range_s": true}

var (
	// rangeFuncRE finds the functions whose range must be $__rate_interval.
	rangeFuncRE = regexp.MustCompile(`\b(rate|irate|increase)\s*\(`)
	// rangeRE finds range selectors.
	rangeRE = regexp.MustCompile(`\[[^\]]*\]`)
	// selectorRE finds a metric name and its label matchers.
	selectorRE = regexp.MustCompile(`\b(ntpexp_[a-z0-9_]+)\s*(\{[^}]*\})?`)
)

// perClientMetrics carry the client label; on the client dashboard they
// must be filtered by the client variable.
var perClientMetrics = map[string]bool{
	"ntpexp_client_requests_total":           true,
	"ntpexp_client_clock_offset_seconds":     true,
	"ntpexp_client_round_trip_delay_seconds": true,
	"ntpexp_client_last_offset_seconds":      true,
}

// TestDashboardsLint checks every dashboards/*.json against the dashboard
// conventions: a Prometheus datasource variable used by every panel and
// target (no hard-coded datasource), job and instance variables, every
// query filtered by them, $__rate_interval in every rate, a unit and a
// description on every panel, a recent schema, a time range and refresh,
// and only metrics that docs/metrics.md documents.
func TestDashboardsLint(t *testing.T) {
	documented := documentedMetrics(t)
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		name := filepath.Base(d.Path)
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(d.Path)
			if err != nil {
				t.Fatal(err)
			}
			lintDatasources(t, raw)
			if len(d.Inputs) > 0 && string(d.Inputs) != "null" {
				t.Errorf("has __inputs: dashboards must use the datasource variable, not import inputs")
			}
			if d.UID == "" || d.Title == "" || d.Description == "" {
				t.Errorf("uid %q, title %q, description %q: all must be set", d.UID, d.Title, d.Description)
			}
			if prev, ok := uids[d.UID]; ok {
				t.Errorf("uid %q also used by %s", d.UID, prev)
			}
			uids[d.UID] = name
			if d.SchemaVersion < 36 {
				t.Errorf("schemaVersion %d, want >= 36", d.SchemaVersion)
			}
			if d.Time.From == "" || d.Time.To == "" {
				t.Errorf("time range not set: %+v", d.Time)
			}
			if d.Refresh == "" {
				t.Errorf("refresh not set")
			}

			// Variables.
			vars := map[string]bool{}
			for _, v := range d.Templating.List {
				vars[v.Name] = true
			}
			if v := d.Variable("datasource"); v == nil || v.Type != "datasource" || v.QueryString() != "prometheus" {
				t.Errorf("no datasource variable of type datasource with query prometheus: %+v", v)
			}
			for _, name := range []string{"job", "instance"} {
				v := d.Variable(name)
				if v == nil {
					t.Errorf("no %s variable", name)
					continue
				}
				lintQueryVariable(t, v)
			}
			if v := d.Variable("instance"); v != nil && !strings.Contains(v.QueryString(), `job=~"$job"`) {
				t.Errorf("instance variable %q does not depend on $job", v.QueryString())
			}
			if v := d.Variable("client"); v != nil {
				lintQueryVariable(t, v)
			}

			// Panels.
			ids := map[int]bool{}
			n := 0
			for _, p := range d.AllPanels() {
				if ids[p.ID] {
					t.Errorf("panel id %d used twice", p.ID)
				}
				ids[p.ID] = true
				if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
					t.Errorf("panel %q: no gridPos", p.Title)
				}
				if p.Type == "row" {
					continue
				}
				n++
				where := "panel " + `"` + p.Title + `"`
				if p.Title == "" {
					t.Errorf("panel %d has no title", p.ID)
				}
				if strings.TrimSpace(p.Description) == "" {
					t.Errorf("%s: no description", where)
				}
				if p.FieldConfig.Defaults.Unit == "" {
					t.Errorf("%s: no fieldConfig.defaults.unit", where)
				}
				if !isTemplatedDatasource(p.Datasource) {
					t.Errorf("%s: datasource %s, want {\"type\":\"prometheus\",\"uid\":\"${datasource}\"}", where, compactJSON(p.Datasource))
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no targets", where)
				}
				for _, tg := range p.Targets {
					where := where + " target " + tg.RefID
					if tg.RefID == "" {
						t.Errorf("%s: no refId", where)
					}
					if !isTemplatedDatasource(tg.Datasource) {
						t.Errorf("%s: datasource %s, want ${datasource}", where, compactJSON(tg.Datasource))
					}
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s: no expr", where)
						continue
					}
					lintExpr(t, where, tg.Expr, vars, documented, d.Variable("client") != nil)
					if p.Type == "heatmap" {
						if tg.Format != "heatmap" || !strings.Contains(tg.Expr, "_bucket") || !strings.Contains(tg.Expr, "by (le)") {
							t.Errorf("%s: a heatmap needs format heatmap over sum by (le) of _bucket series: format %q, %s", where, tg.Format, tg.Expr)
						}
					}
				}
			}
			if n == 0 {
				t.Errorf("no panels")
			}
			t.Logf("%s: %d panels, %d variables", name, n, len(d.Templating.List))
		})
	}
}

// lintDatasources walks the whole JSON: every "datasource" object must be
// the templated Prometheus one (a hard-coded uid or a datasource name
// string would tie the dashboard to one Grafana).
func lintDatasources(t *testing.T, raw []byte) {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if k == "datasource" {
					b, _ := json.Marshal(c)
					// Grafana's own annotation source (added when a
					// dashboard is saved) is not a data source uid.
					builtin := strings.HasPrefix(path, "$.annotations") && string(b) == `{"type":"grafana","uid":"-- Grafana --"}`
					if !isTemplatedDatasource(b) && !builtin {
						t.Errorf("%s.datasource = %s: hard-coded; want {\"type\":\"prometheus\",\"uid\":\"${datasource}\"}", path, b)
					}
					continue
				}
				walk(path+"."+k, c)
			}
		case []any:
			for i, c := range x {
				walk(path+"["+strconv.Itoa(i)+"]", c)
			}
		}
	}
	walk("$", doc)
}

func lintQueryVariable(t *testing.T, v *gVariable) {
	t.Helper()
	if v.Type != "query" {
		t.Errorf("variable %s: type %q, want query", v.Name, v.Type)
	}
	if !isTemplatedDatasource(v.Datasource) {
		t.Errorf("variable %s: datasource %s, want ${datasource}", v.Name, compactJSON(v.Datasource))
	}
	if !labelValuesRE.MatchString(v.QueryString()) {
		t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.QueryString())
	}
}

// lintExpr checks one PromQL expression of a panel.
func lintExpr(t *testing.T, where, expr string, vars, documented map[string]bool, clientBoard bool) {
	t.Helper()
	for _, name := range exprVars(expr) {
		if !vars[name] && !grafanaBuiltins[name] {
			t.Errorf("%s: unknown variable $%s in %s", where, name, expr)
		}
	}
	// Every range is $__rate_interval (so rate, irate and increase use it).
	for _, r := range rangeRE.FindAllString(expr, -1) {
		if r != "[$__rate_interval]" {
			t.Errorf("%s: range %s, want [$__rate_interval]: %s", where, r, expr)
		}
	}
	for _, loc := range rangeFuncRE.FindAllStringIndex(expr, -1) {
		arg := parenGroup(expr[loc[1]-1:])
		if !strings.Contains(arg, "[$__rate_interval]") {
			t.Errorf("%s: %s without [$__rate_interval]: %s", where, expr[loc[0]:loc[1]], expr)
		}
	}
	// Every selector is filtered by job and instance (and client on the
	// client dashboard), and every metric is documented.
	found := false
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		found = true
		metric, matchers := m[1], m[2]
		if !documented[baseMetric(metric)] && !documented[metric] {
			t.Errorf("%s: metric %s is not in docs/metrics.md", where, metric)
		}
		if !strings.Contains(matchers, `job=~"$job"`) || !strings.Contains(matchers, `instance=~"$instance"`) {
			t.Errorf("%s: %s%s is not filtered by job=~\"$job\" and instance=~\"$instance\"", where, metric, matchers)
		}
		if clientBoard && perClientMetrics[baseMetric(metric)] && !strings.Contains(matchers, `client="$client"`) {
			t.Errorf("%s: %s%s is not filtered by client=\"$client\"", where, metric, matchers)
		}
	}
	if !found {
		t.Errorf("%s: no ntpexp metric in %s", where, expr)
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		t.Errorf("%s: unbalanced brackets: %s", where, expr)
	}
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// parenGroup returns s (which starts with '(') up to its matching ')'.
func parenGroup(s string) string {
	depth := 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return s[:i+1]
			}
		}
	}
	return s
}

// TestAlertRules runs promtool check rules on every alerts/*.yml rules
// file (the *.test.yml files are unit tests, not rules) and promtool test
// rules on every alerts/*.test.yml, and checks the alert conventions:
// severity, summary, description, a runbook_url whose anchor is a section
// of docs/runbook.md, and promtool test cases where each alert fires and
// where it does not.
func TestAlertRules(t *testing.T) {
	promtool := peers.Require(t, "promtool")
	files := ruleFiles(t)
	tests, err := filepath.Glob(filepath.Join(repoRoot, "alerts", "*.test.yml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no alerts/*.test.yml (%v)", err)
	}
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %v: %v\n%s", files, err, out)
	}
	t.Logf("promtool check rules: %s", strings.TrimSpace(string(out)))
	out, err = exec.Command(promtool, append([]string{"test", "rules"}, tests...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules %v: %v\n%s", tests, err, out)
	}
	t.Logf("promtool test rules: %s", strings.TrimSpace(string(out)))

	anchors := runbookAnchors(t)
	fires, quiet := testedAlerts(t, tests)
	alerts := readAlerts(t)
	if len(alerts) == 0 {
		t.Fatal("no alerting rules found")
	}
	seen := map[string]bool{}
	for _, a := range alerts {
		if seen[a.Name] {
			t.Errorf("alert %s defined twice", a.Name)
		}
		seen[a.Name] = true
		switch a.Severity {
		case "critical", "warning", "info":
		default:
			t.Errorf("alert %s: severity %q, want critical, warning or info", a.Name, a.Severity)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if a.Annotations[k] == "" {
				t.Errorf("alert %s: no %s annotation", a.Name, k)
			}
		}
		u := a.Annotations["runbook_url"]
		if want := runbookURLPrefix + strings.ToLower(a.Name); u != want {
			t.Errorf("alert %s: runbook_url %q, want %q", a.Name, u, want)
		}
		if anchor := strings.TrimPrefix(u, runbookURLPrefix); !anchors[anchor] {
			t.Errorf("alert %s: docs/runbook.md has no section #%s", a.Name, anchor)
		}
		if !fires[a.Name] {
			t.Errorf("alert %s: no promtool test case where it fires (with exp_labels and summary, description, runbook_url)", a.Name)
		}
		if !quiet[a.Name] {
			t.Errorf("alert %s: no promtool test case where it does not fire (exp_alerts: [])", a.Name)
		}
	}
	for name := range fires {
		if !seen[name] {
			t.Errorf("tests name alert %s, which no rules file defines", name)
		}
	}
	// Thresholds are recording rules, each explained in the runbook.
	runbook, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !anchors["changing-thresholds"] {
		t.Errorf("docs/runbook.md has no \"Changing thresholds\" section")
	}
	for _, r := range readRecordNames(t) {
		if !strings.Contains(string(runbook), r) {
			t.Errorf("recording rule %s is not mentioned in docs/runbook.md", r)
		}
	}
	t.Logf("%d alerts, each with a firing and a quiet promtool case and a runbook section", len(alerts))
}
