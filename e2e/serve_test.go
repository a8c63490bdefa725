package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	rows := d.waitRows(600, 20*time.Second, nil)
	ip := rows[0].ClientIP
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
		out, err := d.ctl(args...)
		if err != nil {
			t.Errorf("ntpexp %s: %v", strings.Join(args, " "), err)
			continue
		}
		switch args[0] {
		case "list":
			if !strings.Contains(out, ip) {
				t.Errorf("ntpexp %s does not list %s:\n%s", strings.Join(args, " "), ip, out)
			}
		case "detail":
			if !strings.Contains(out, ip) {
				t.Errorf("detail lacks the client:\n%s", out)
			}
		case "stats":
			if !strings.Contains(out, "600") && !strings.Contains(strings.ToLower(out), "requests") {
				t.Errorf("stats:\n%s", out)
			}
		case "export":
			if args[len(args)-1] == "json" {
				var arr []map[string]any
				if err := json.Unmarshal([]byte(out), &arr); err != nil || len(arr) < 600 {
					t.Errorf("export json: %d rows, %v", len(arr), err)
				}
			} else {
				recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
				if err != nil || len(recs) < 2 || recs[0][0] != "time" || recs[0][1] != "client_ip" {
					t.Errorf("export csv: %v, %d records", err, len(recs))
				}
				for _, r := range recs[1:] {
					if r[1] != ip {
						t.Fatalf("export --client-ip %s returned %s", ip, r[1])
					}
				}
			}
		}
	}
	// Bad arguments: a clear error and a non-zero exit.
	for _, bad := range [][]string{{"detail", "not-an-ip"}, {"list", "--hours", "-1"}, {"export", "--format", "xml"}, {"export", "--client-ip", "300.1.1.1"}} {
		if out, err := d.ctl(bad...); err == nil {
			t.Errorf("ntpexp %s succeeded: %s", strings.Join(bad, " "), out)
		}
	}
}
