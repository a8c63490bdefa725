package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// TestPromtoolOnRealScrape lints a real scrape of a running ntpexp that
// has seen traffic of every kind.
func TestPromtoolOnRealScrape(t *testing.T) {
	promtool := peers.Require(t, "promtool")
	d := startDaemon(t, daemonOpts{})
	runLoad(t, d.NTPAddr, "-rate", "200", "-duration", "1s", "-sources", "50", "-personality", "mix")
	resp, err := http.Get("http://" + d.WebAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: clean on a %d-byte scrape", body.Len())
}

// TestLogFileReopenedOnSIGHUP: logrotate moves the log file away and sends
// SIGHUP; ntpexp writes to a new file at the configured path.
func TestLogFileReopenedOnSIGHUP(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "ntpexp.log")
	d := startDaemon(t, daemonOpts{NoWait: true, Args: []string{"--monitoring.log-file", logPath}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte("starting ntpexp")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no start-up line in %s:\n%s", logPath, d.Proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _ := os.Stat(logPath)
	if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("log file mode %v is world-accessible", st.Mode().Perm())
	}
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	d.Proc.Cmd.Process.Signal(syscall.SIGHUP)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(logPath); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("no new log file after SIGHUP: %v", err)
	}
	if !bytes.Contains(b, []byte("shutting down")) {
		t.Fatalf("new log file lacks the shutdown line:\n%s", b)
	}
	old, _ := os.ReadFile(rotated)
	if bytes.Contains(old, []byte("shutting down")) {
		t.Fatalf("ntpexp kept writing to the rotated file")
	}
}

// TestOldToolCommandLines runs each command line of the old tool's guide,
// as written, against the database of a running ntpexp.
func TestOldToolCommandLines(t *testing.T) {
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.enabled=false"}})
	runLoad(t, d.NTPAddr, "-rate", "300", "-duration", "2s", "-sources", "30", "-first-source", "127.0.2.1", "-workers", "1", "-personality", "mix")
	// One client whose clock is 2 s ahead: an offset anomaly.
	const skewed = "127.0.3.1"
	runLoad(t, d.NTPAddr, "-rate", "20", "-duration", "1s", "-sources", "1", "-first-source", skewed, "-workers", "1", "-personality", "sntp", "-skew", "2s")
	d.waitRows(600, 20*time.Second, nil)
	// The loads are over: wait until the count stops moving.
	var rows []exportRow
	for prev := -1; len(rows) != prev; time.Sleep(1500 * time.Millisecond) {
		prev = len(rows)
		rows = d.export()
	}
	perClient := map[string]int{}
	for _, r := range rows {
		perClient[r.ClientIP]++
	}
	if perClient[skewed] < 10 || len(perClient) != 31 {
		t.Fatalf("%d clients, %d rows from %s; want 31 clients and about 20 rows", len(perClient), perClient[skewed], skewed)
	}
	ip := rows[0].ClientIP
	// A table row or line per client: its address as a whole word.
	has := func(out, ip string) bool {
		return regexp.MustCompile(`(^|\s)` + regexp.QuoteMeta(ip) + `(\s|$)`).MatchString(out)
	}
	field := func(out, label string) string {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `:\s+(\S+)`).FindStringSubmatch(out)
		if m == nil {
			return ""
		}
		return m[1]
	}
	lines := [][]string{
		{"list"},
		{"list", "--active", "--hours", "24"},
		{"detail", ip},
		{"stats", "--hours", "48"},
		{"anomalies", "--delay-threshold", "0.1", "--offset-threshold", "0.05"},
		{"export", "--hours", "24", "--format", "json"},
		{"export", "--client-ip", ip, "--format", "csv"},
	}
	for _, args := range lines {
		line := "ntpexp " + strings.Join(args, " ")
		out, err := d.ctl(args...)
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		switch args[0] {
		case "list":
			for c := range perClient {
				if !has(out, c) {
					t.Errorf("%s does not list %s:\n%s", line, c, out)
				}
			}
		case "detail":
			if !has(out, ip) || field(out, "Requests") != strconv.Itoa(perClient[ip]) {
				t.Errorf("%s: want %s with %d requests:\n%s", line, ip, perClient[ip], out)
			}
		case "stats":
			if got := field(out, "Requests"); got != strconv.Itoa(len(rows)) {
				t.Errorf("%s: Requests %q, want %d:\n%s", line, got, len(rows), out)
			}
			if got := field(out, "Unique clients"); got != "31" {
				t.Errorf("%s: Unique clients %q, want 31:\n%s", line, got, out)
			}
		case "anomalies":
			if !strings.Contains(out, "thresholds: offset 50 ms, delay 100 ms") {
				t.Errorf("%s: thresholds not as given:\n%s", line, out)
			}
			var found []string
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) > 4 && f[0] == "offset" {
					found = append(found, f[1])
					// KIND CLIENT COUNT TOTAL WORST: the worst is about +2 s.
					if f[1] == skewed && !regexp.MustCompile(`^offset\s+\S+\s+\d+\s+\d+\s+2(\.\d+)? s\s`).MatchString(l) {
						t.Errorf("%s: worst offset of %s is %s, want about 2 s:\n%s", line, skewed, f[4], out)
					}
				}
			}
			if len(found) != 1 || found[0] != skewed {
				t.Errorf("%s: offset anomalies %v, want only %s:\n%s", line, found, skewed, out)
			}
		case "export":
			if args[len(args)-1] == "json" {
				var arr []map[string]any
				if err := json.Unmarshal([]byte(out), &arr); err != nil || len(arr) != len(rows) {
					t.Errorf("%s: %d rows, %v; want %d", line, len(arr), err, len(rows))
				}
			} else {
				recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
				if err != nil || len(recs) != perClient[ip]+1 || recs[0][0] != "time" || recs[0][1] != "client_ip" {
					t.Errorf("%s: %v, %d records; want a header and %d rows", line, err, len(recs), perClient[ip])
				}
				for _, r := range recs[1:] {
					if r[1] != ip {
						t.Fatalf("%s returned %s", line, r[1])
					}
				}
			}
		}
	}
	// Bad arguments: exit 2 and a message that names the mistake.
	for _, bad := range []struct {
		args []string
		msg  string
	}{
		{[]string{"detail", "not-an-ip"}, `"not-an-ip" is not an IP address`},
		{[]string{"list", "--hours", "-1"}, "--hours"},
		{[]string{"list", "--active", "--hours", "0"}, "--hours 0: must be a whole number of hours from 1"},
		{[]string{"anomalies", "--delay-threshold", "0"}, "must be more than 0 seconds"},
		{[]string{"export", "--format", "xml"}, "--format"},
		{[]string{"export", "--client-ip", "300.1.1.1"}, `--client-ip "300.1.1.1": want an IP address or a CIDR prefix`},
	} {
		cmd := exec.Command(ntpexpBin, append(bad.args, "--database.path", d.DB)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), bad.msg) {
			t.Errorf("ntpexp %s: %v, %q; want exit 2 and %q", strings.Join(bad.args, " "), err, out, bad.msg)
		}
	}
}

// TestMetricsOnly: with database.enabled=false ntpexp answers and counts
// as usual, opens no database, exposes no store metrics, and the API says
// why it has nothing.
func TestMetricsOnly(t *testing.T) {
	d := startDaemon(t, daemonOpts{Args: []string{"--database.enabled=false", "--ntp.ratelimit.enabled=false"}})
	res := runLoad(t, d.NTPAddr, "-rate", "200", "-duration", "1s", "-sources", "20", "-personality", "mix")
	if res.Replies != res.Sent || res.Sent < 100 {
		t.Fatalf("%d of %d answered", res.Replies, res.Sent)
	}
	m := d.metrics()
	var requests float64
	for k, v := range m {
		if strings.HasPrefix(k, "ntpexp_requests_total") {
			requests += v
		}
		if strings.HasPrefix(k, "ntpexp_store_") {
			t.Errorf("store metric %s exposed without a store", k)
		}
	}
	if requests != float64(res.Sent) {
		t.Errorf("ntpexp_requests_total %v, want %d", requests, res.Sent)
	}
	resp, err := http.Get("http://" + d.WebAddr + "/api/stats")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error string `json:"error"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 404 || err != nil || !strings.Contains(body.Error, "database.enabled=false") {
		t.Errorf("/api/stats: %d %q %v", resp.StatusCode, body.Error, err)
	}
	matches, _ := filepath.Glob(d.DB + "*")
	if len(matches) != 0 {
		t.Errorf("files of a disabled store: %v", matches)
	}
	if !strings.Contains(d.Proc.Output(), "database=disabled") {
		t.Errorf("start-up log does not say the store is off:\n%s", d.Proc.Output())
	}
}
