package e2e

// Helpers for the dashboard and alert tests: reading the Grafana dashboards
// and the rule files, and running and querying a real Prometheus and
// Alertmanager.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// repoRoot is the repository root as seen from the e2e package directory.
const repoRoot = ".."

// runbookURLPrefix is what every alert's runbook_url starts with; the
// anchor after it names a section of docs/runbook.md.
const runbookURLPrefix = "https://github.com/ntpexp/ntpexp/blob/main/docs/runbook.md#"

// Grafana dashboard JSON, the parts the tests look at.
type gDashboard struct {
	Path          string          `json:"-"`
	UID           string          `json:"uid"`
	Title         string          `json:"title"`
	Description   string          `json:"description"`
	SchemaVersion int             `json:"schemaVersion"`
	Refresh       string          `json:"refresh"`
	Inputs        json.RawMessage `json:"__inputs"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []gVariable `json:"list"`
	} `json:"templating"`
	Panels []gPanel `json:"panels"`
}

type gVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."} (Grafana 10)
	Definition string          `json:"definition"`
	Datasource json.RawMessage `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

// QueryString returns the variable's query text.
func (v gVariable) QueryString() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

type gPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  json.RawMessage `json:"datasource"`
	GridPos     *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []gTarget `json:"targets"`
	Panels  []gPanel  `json:"panels"` // a collapsed row's panels
}

type gTarget struct {
	RefID      string          `json:"refId"`
	Expr       string          `json:"expr"`
	Format     string          `json:"format"`
	Instant    bool            `json:"instant"`
	Datasource json.RawMessage `json:"datasource"`
}

// loadDashboards reads every dashboards/*.json.
func loadDashboards(t testing.TB) []*gDashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	var out []*gDashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := &gDashboard{Path: f}
		if err := json.Unmarshal(b, d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, d)
	}
	return out
}

// AllPanels returns every panel, rows included, with collapsed rows' panels.
func (d *gDashboard) AllPanels() []gPanel {
	var out []gPanel
	var walk func([]gPanel)
	walk = func(ps []gPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// Variable returns the template variable called name, or nil.
func (d *gDashboard) Variable(name string) *gVariable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

// isTemplatedDatasource reports whether raw is exactly
// {"type":"prometheus","uid":"${datasource}"}.
func isTemplatedDatasource(raw json.RawMessage) bool {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil || len(m) != 2 {
		return false
	}
	return m["type"] == "prometheus" && m["uid"] == "${datasource}"
}

// exprVarRE matches Grafana variable references: $name, ${name}, ${name:format}.
var exprVarRE = regexp.MustCompile(`\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\$([A-Za-z_]\w*)`)

// exprVars returns the names of the variables an expression references.
func exprVars(expr string) []string {
	var out []string
	for _, m := range exprVarRE.FindAllStringSubmatch(expr, -1) {
		if m[1] != "" {
			out = append(out, m[1])
		} else {
			out = append(out, m[2])
		}
	}
	return out
}

// substitute replaces Grafana variables in expr with vals; it fails on a
// variable without a value.
func substitute(expr string, vals map[string]string) (string, error) {
	var missing []string
	out := exprVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := exprVarRE.FindStringSubmatch(m)
		name := sub[1]
		if name == "" {
			name = sub[2]
		}
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for variable(s) %v in %q", missing, expr)
	}
	return out, nil
}

// labelValuesRE parses a Grafana label_values(selector, label) query.
var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_]\w*)\s*\)\s*$`)

// githubSlug is GitHub's anchor for a Markdown heading: lower case, spaces
// to hyphens, punctuation other than hyphens and underscores removed.
func githubSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		case r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// runbookAnchors returns the anchors of every heading of docs/runbook.md.
func runbookAnchors(t testing.TB) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		out[githubSlug(strings.TrimLeft(line, "#"))] = true
	}
	return out
}

// ruleAlert is one alerting rule as read, line by line, from a rules file
// (the tests do not depend on a YAML parser; the rules files are written in
// one consistent layout, and promtool checks them properly).
type ruleAlert struct {
	Name        string
	File        string
	Severity    string
	For         string
	Annotations map[string]string // summary, description, runbook_url: presence and raw value
}

var (
	alertLineRE  = regexp.MustCompile(`^\s*- alert:\s*(\S+)\s*$`)
	ruleStartRE  = regexp.MustCompile(`^\s*- (alert|record|name):`)
	severityRE   = regexp.MustCompile(`^\s*severity:\s*"?([a-z]+)"?\s*$`)
	forRE        = regexp.MustCompile(`^(\s*for:\s*)(\S+)\s*$`)
	annotationRE = regexp.MustCompile(`^\s*(summary|description|runbook_url):\s*(.*)$`)
	recordLineRE = regexp.MustCompile(`^\s*- record:\s*(\S+)\s*$`)
)

// ruleFiles returns the rules files of alerts/ (*.yml but not *.test.yml).
func ruleFiles(t testing.TB) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(repoRoot, "alerts", "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range all {
		if !strings.HasSuffix(f, ".test.yml") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatal("no alerts/*.yml rules files")
	}
	return out
}

// readAlerts scans the rules files for alerting rules.
func readAlerts(t testing.TB) []ruleAlert {
	t.Helper()
	var out []ruleAlert
	for _, f := range ruleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cur *ruleAlert
		for _, line := range strings.Split(string(b), "\n") {
			if ruleStartRE.MatchString(line) {
				if cur != nil {
					out = append(out, *cur)
					cur = nil
				}
				if m := alertLineRE.FindStringSubmatch(line); m != nil {
					cur = &ruleAlert{Name: m[1], File: f, Annotations: map[string]string{}}
				}
				continue
			}
			if cur == nil {
				continue
			}
			if m := severityRE.FindStringSubmatch(line); m != nil {
				cur.Severity = m[1]
			}
			if m := forRE.FindStringSubmatch(line); m != nil {
				cur.For = m[2]
			}
			if m := annotationRE.FindStringSubmatch(line); m != nil {
				cur.Annotations[m[1]] = strings.Trim(strings.TrimSpace(m[2]), `"`)
			}
		}
		if cur != nil {
			out = append(out, *cur)
		}
	}
	return out
}

// readRecordNames returns the recording rule names of the rules files.
func readRecordNames(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, f := range ruleFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if m := recordLineRE.FindStringSubmatch(line); m != nil {
				out = append(out, m[1])
			}
		}
	}
	return out
}

// rulesWithFor returns the rules file text with the for: duration of one
// alert replaced.
func rulesWithFor(text, alert, dur string) (string, error) {
	lines := strings.Split(text, "\n")
	in := false
	for i, line := range lines {
		if m := alertLineRE.FindStringSubmatch(line); m != nil {
			in = m[1] == alert
			continue
		}
		if ruleStartRE.MatchString(line) {
			in = false
		}
		if in {
			if m := forRE.FindStringSubmatch(line); m != nil {
				lines[i] = m[1] + dur
				return strings.Join(lines, "\n"), nil
			}
		}
	}
	return "", fmt.Errorf("alert %s has no for: line", alert)
}

// testedAlerts scans promtool test files: for each alertname, whether a
// case expects it to fire (with exp_labels and the three annotations) and
// whether a case expects it not to fire (exp_alerts: []).
func testedAlerts(t testing.TB, files []string) (fires, quiet map[string]bool) {
	t.Helper()
	fires, quiet = map[string]bool{}, map[string]bool{}
	nameRE := regexp.MustCompile(`^\s*alertname:\s*(\S+)\s*$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			m := nameRE.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			name := m[1]
			// The case's body: up to the next case, test or the end.
			var body []string
			for j := i + 1; j < len(lines); j++ {
				l := strings.TrimSpace(lines[j])
				if strings.HasPrefix(l, "- eval_time:") || strings.HasPrefix(l, "- name:") || strings.HasPrefix(l, "- interval:") {
					break
				}
				body = append(body, strings.TrimPrefix(l, "- "))
			}
			joined := "\n" + strings.Join(body, "\n")
			switch {
			case strings.Contains(joined, "\nexp_alerts: []"):
				quiet[name] = true
			case strings.Contains(joined, "\nexp_labels:") && strings.Contains(joined, "\nexp_annotations:") &&
				strings.Contains(joined, "\nsummary:") && strings.Contains(joined, "\ndescription:") &&
				strings.Contains(joined, "\nrunbook_url:") && strings.Contains(joined, "\nseverity:"):
				fires[name] = true
			}
		}
	}
	return fires, quiet
}

// documentedMetrics returns every ntpexp_* name written in docs/metrics.md.
func documentedMetrics(t testing.TB) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("`(ntpexp_[a-z0-9_]+)").FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	return out
}

// metricNameRE finds metric names (not recording rules, which contain ':').
var metricNameRE = regexp.MustCompile(`\bntpexp_[a-z0-9_]+\b`)

// baseMetric strips the histogram series suffixes.
func baseMetric(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, s) {
			return strings.TrimSuffix(name, s)
		}
	}
	return name
}

// --- Prometheus and Alertmanager ------------------------------------------

// promServer is a running Prometheus.
type promServer struct {
	t    testing.TB
	URL  string
	Proc *peers.Proc
	Dir  string
}

// startAlertmanager starts Alertmanager with a route to a receiver that
// notifies nobody; it only collects alerts for GET /api/v2/alerts.
func startAlertmanager(t testing.TB) (string, *peers.Proc) {
	t.Helper()
	bin := peers.Require(t, "prometheus-alertmanager")
	dir := t.TempDir()
	conf := filepath.Join(dir, "alertmanager.yml")
	writeTestFile(t, conf, `route:
  receiver: collect
  group_by: [alertname, client]
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: collect
`)
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=")
	p := peers.StartProc(t, "alertmanager", dir, cmd)
	u := "http://" + addr
	waitHTTP200(t, p, u+"/-/ready", 15*time.Second)
	return u, p
}

// startPrometheus starts Prometheus scraping target (job "ntpexp") every
// second, evaluating rulesFile every second and sending alerts to
// alertmanager (a URL; "" for none). Native histograms stay off, so the
// classic _bucket series are stored.
func startPrometheus(t testing.TB, target, rulesFile, alertmanager string) *promServer {
	t.Helper()
	bin := peers.Require(t, "prometheus")
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n")
	if rulesFile != "" {
		fmt.Fprintf(&b, "rule_files:\n  - %q\n", rulesFile)
	}
	if alertmanager != "" {
		fmt.Fprintf(&b, "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [%q]\n",
			strings.TrimPrefix(alertmanager, "http://"))
	}
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: ntpexp\n    static_configs:\n      - targets: [%q]\n", target)
	writeTestFile(t, conf, b.String())
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	p := peers.StartProc(t, "prometheus", dir, cmd)
	s := &promServer{t: t, URL: "http://" + addr, Proc: p, Dir: dir}
	waitHTTP200(t, p, s.URL+"/-/ready", 30*time.Second)
	return s
}

func writeTestFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitHTTP200(t testing.TB, p *peers.Proc, u string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if exited, err := p.Exited(); exited {
			t.Fatalf("%s exited (%v):\n%s", p.Name, err, p.Output())
		}
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready at %s after %v:\n%s", p.Name, u, timeout, p.Output())
}

// httpGetJSON GETs u and decodes the JSON body into v.
func httpGetJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: HTTP %d: %v: %.300s", u, resp.StatusCode, err, b)
	}
	return nil
}

// promAPIResponse is the envelope of every /api/v1 answer.
type promAPIResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

func (s *promServer) api(path string, params url.Values, data any) error {
	u := s.URL + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	var r promAPIResponse
	if err := httpGetJSON(u, &r); err != nil {
		return err
	}
	if r.Status != "success" {
		return fmt.Errorf("%s %v: %s: %s", path, params, r.ErrorType, r.Error)
	}
	if data != nil {
		return json.Unmarshal(r.Data, data)
	}
	return nil
}

// promSample is one element of an instant query's result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query; an error means Prometheus refused it (it
// does not parse, or failed to evaluate).
func (s *promServer) query(q string) ([]promSample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.api("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	parse := func(v [2]any) float64 {
		str, _ := v[1].(string)
		f, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return 0
		}
		return f
	}
	switch data.ResultType {
	case "vector":
		var res []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &res); err != nil {
			return nil, err
		}
		out := make([]promSample, len(res))
		for i, r := range res {
			out[i] = promSample{Metric: r.Metric, Value: parse(r.Value)}
		}
		return out, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(data.Result, &v); err != nil {
			return nil, err
		}
		return []promSample{{Metric: map[string]string{}, Value: parse(v)}}, nil
	}
	return nil, fmt.Errorf("query %q: unexpected result type %q", q, data.ResultType)
}

// waitTargetUp waits until the only target is up.
func (s *promServer) waitTargetUp(timeout time.Duration) map[string]string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := s.api("/api/v1/targets", nil, &data); err == nil {
			for _, tg := range data.ActiveTargets {
				if tg.Health == "up" {
					return tg.Labels
				}
				last = fmt.Sprintf("%v: %s %s", tg.Labels, tg.Health, tg.LastError)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("Prometheus target not up after %v (last: %s)", timeout, last)
	return nil
}

// labelValues runs a Grafana label_values(selector, label) variable query
// through the label values API.
func (s *promServer) labelValues(selector, label string) ([]string, error) {
	var vals []string
	err := s.api("/api/v1/label/"+url.PathEscape(label)+"/values", url.Values{"match[]": {selector}}, &vals)
	sort.Strings(vals)
	return vals, err
}

// promRule is a rule as Prometheus loaded it (/api/v1/rules).
type promRule struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Query       string            `json:"query"`
	Duration    float64           `json:"duration"`
	Health      string            `json:"health"`
	LastError   string            `json:"lastError"`
	State       string            `json:"state"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func (s *promServer) rules() ([]promRule, error) {
	var data struct {
		Groups []struct {
			Name  string     `json:"name"`
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	}
	if err := s.api("/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []promRule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// promAlert is an active alert (/api/v1/alerts).
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	Value       string            `json:"value"`
}

func (s *promServer) alerts() ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := s.api("/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// amAlert is an alert held by Alertmanager (GET /api/v2/alerts).
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func alertmanagerAlerts(u string) ([]amAlert, error) {
	var out []amAlert
	err := httpGetJSON(u+"/api/v2/alerts", &out)
	return out, err
}
