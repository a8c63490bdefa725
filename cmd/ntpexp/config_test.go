package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// seedConfig is the old tool's config.json from its deployment guide,
// verbatim (testdata/old-tool-config.json).
func seedConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "old-tool-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeConfig writes a config file with its paths pointed at a temp dir.
func writeConfig(t *testing.T, body string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	body = strings.ReplaceAll(body, "/opt/ntp-monitor", dir)
	path = filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// effective runs check-config and decodes the effective configuration.
func effective(t *testing.T, args ...string) (Config, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"check-config"}, args...), &out, &errb)
	var c Config
	if code == 0 {
		if err := json.Unmarshal(out.Bytes(), &c); err != nil {
			t.Fatalf("check-config output: %v\n%s", err, out.String())
		}
	}
	return c, errb.String(), code
}

func TestSeedConfigLoadsVerbatim(t *testing.T) {
	path, dir := writeConfig(t, seedConfig(t))
	c, stderr, code := effective(t, "--config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if c.Database.Path != filepath.Join(dir, "ntp_monitor.db") || c.Database.BatchSize != 100 ||
		c.Database.FlushInterval.D() != 30*time.Second || c.Monitoring.NTPPort != 123 ||
		c.Monitoring.LogLevel != "INFO" || c.Monitoring.LogFile != filepath.Join(dir, "ntp_monitor.log") ||
		c.Performance.MaxCacheSize != 10000 || c.Performance.CleanupInterval.D() != time.Hour ||
		c.Performance.RetentionDays != 30 {
		t.Fatalf("effective config %+v", c)
	}
	if got := c.NTPListenAddresses(); len(got) != 1 || got[0] != ":123" {
		t.Fatalf("listen addresses %v", got)
	}
	if !strings.Contains(stderr, path) {
		t.Fatalf("check-config does not name the file: %s", stderr)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		body string
		want []string
	}{
		{"unknown key", `{"database": {"batch_sise": 100}}`, []string{"config.json", `unknown key "database.batch_sise"`, `did you mean "database.batch_size"`}},
		{"unknown section", `{"monitor": {"ntp_port": 123}}`, []string{`unknown key "monitor.ntp_port"`}},
		{"wrong type", `{"database": {"batch_size": "many"}}`, []string{`"database.batch_size"`, "want an integer", `"many"`}},
		{"wrong type bool", `{"ntp": {"ratelimit": {"enabled": "yes"}}}`, []string{`"ntp.ratelimit.enabled"`, "want true or false"}},
		{"negative batch", `{"database": {"batch_size": -5}}`, []string{"database.batch_size = -5", "config.json", "between 1 and"}},
		{"zero retention", `{"performance": {"retention_days": 0}}`, []string{"performance.retention_days = 0", "at least 1 day"}},
		{"bad level", `{"monitoring": {"log_level": "LOUD"}}`, []string{"monitoring.log_level", "debug, info, warn or error"}},
		{"bad enum", `{"ntp": {"clock_sync": "gps"}}`, []string{`"ntp.clock_sync"`, "kernel,assume-synchronized"}},
		{"bad json", "{\n\"database\": {\n\"path\": \"x\",,\n}}", []string{"config.json", "line 3"}},
		{"bad port", `{"monitoring": {"ntp_port": 70000}}`, []string{"monitoring.ntp_port = 70000", "1-65535"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, _ := writeConfig(t, c.body)
			_, stderr, code := effective(t, "--config", path)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("message lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestConfigPrecedence(t *testing.T) {
	path, _ := writeConfig(t, `{"database": {"batch_size": 200, "path": "/from/file.db"}, "performance": {"retention_days": 7}}`)
	// file over default
	c, stderr, code := effective(t, "--config", path)
	if code != 0 || c.Database.BatchSize != 200 || c.Performance.RetentionDays != 7 || c.Database.QueueSize != 65536 {
		t.Fatalf("file: %d %+v %s", code, c.Database, stderr)
	}
	// environment over file
	t.Setenv("NTPEXP_DATABASE_BATCH_SIZE", "300")
	c, _, _ = effective(t, "--config", path)
	if c.Database.BatchSize != 300 || c.Database.Path != "/from/file.db" {
		t.Fatalf("env: %+v", c.Database)
	}
	// flag over environment
	c, _, _ = effective(t, "--config", path, "--database.batch-size", "400")
	if c.Database.BatchSize != 400 {
		t.Fatalf("flag: %+v", c.Database)
	}
	// an invalid value names where it came from
	t.Setenv("NTPEXP_PERFORMANCE_RETENTION_DAYS", "0")
	_, stderr, code = effective(t, "--config", path)
	if code != exitUsage || !strings.Contains(stderr, "NTPEXP_PERFORMANCE_RETENTION_DAYS") {
		t.Fatalf("env source not named: %d %s", code, stderr)
	}
}

func TestNewSettingsEverywhere(t *testing.T) {
	path, _ := writeConfig(t, `{"ntp": {"listen_address": ["127.0.0.1:1123", "[::1]:1123"], "ratelimit": {"enabled": false, "burst": 16}, "stratum": 3, "refid": "GPS"},
		"metrics": {"max_clients": 10, "watch": ["192.0.2.0/24"], "native_histograms": true}, "web": {"listen_address": ["127.0.0.1:19999"]}}`)
	c, stderr, code := effective(t, "--config", path)
	if code != 0 {
		t.Fatalf("%d %s", code, stderr)
	}
	if c.NTP.RateLimit.Enabled || c.NTP.RateLimit.Burst != 16 || c.NTP.Stratum != 3 || c.NTP.RefID != "GPS" ||
		len(c.NTP.ListenAddress) != 2 || c.Metrics.MaxClients != 10 || c.Metrics.Watch[0] != "192.0.2.0/24" || !c.Metrics.NativeHistograms {
		t.Fatalf("%+v", c)
	}
	// --ntp.ratelimit.enabled=false from the command line.
	c, _, _ = effective(t, "--ntp.ratelimit.enabled=false")
	if c.NTP.RateLimit.Enabled {
		t.Fatal("--ntp.ratelimit.enabled=false ignored")
	}
	// The command line overrides the file.
	c, _, _ = effective(t, "--config", path, "--metrics.native-histograms=false")
	if c.Metrics.NativeHistograms {
		t.Fatal("--metrics.native-histograms=false did not override the file")
	}
	c, _, _ = effective(t)
	if !c.NTP.RateLimit.Enabled || c.Performance.MaxCacheSize != 10000 || c.Metrics.MaxClients != 256 || c.Metrics.NativeHistograms {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestHelpIsComplete(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--config", "--database.path", "--database.batch-size", "--database.flush-interval",
		"--monitoring.ntp-port", "--monitoring.log-level", "--monitoring.log-file", "--performance.max-cache-size",
		"--performance.cleanup-interval", "--performance.retention-days", "--ntp.listen-address", "--ntp.ratelimit.enabled",
		"--ntp.ratelimit.interval", "--ntp.ratelimit.burst", "--ntp.ratelimit.leak", "--ntp.ratelimit.kod", "--ntp.stratum",
		"--ntp.refid", "--metrics.max-clients", "--metrics.watch", "--metrics.native-histograms", "--web.listen-address", "--web.config.file",
		"--web.telemetry-path", "--debug", "serve", "list", "detail", "stats", "anomalies", "export", "check-config", "version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %s", want)
		}
	}
}
