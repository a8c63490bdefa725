package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrivacyAddressModes: with truncated or keyed-hashed addresses, no
// real client address reaches the metrics or the database, and metrics
// and queries keep working on the stored form.
func TestPrivacyAddressModes(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("s3cret-key-for-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode   string
		args   []string
		stored func(string) bool
	}{
		{"truncate", nil, func(ip string) bool { return ip == "127.77.6.0" }},
		{"hash", []string{"--database.address-key-file", key}, func(ip string) bool { return strings.HasPrefix(ip, "fd") }},
	} {
		t.Run(c.mode, func(t *testing.T) {
			args := append([]string{"--database.address-mode", c.mode, "--ntp.ratelimit.enabled=false"}, c.args...)
			d := startDaemon(t, daemonOpts{Args: args})
			runLoad(t, d.NTPAddr, "-sources", "1", "-workers", "1", "-first-source", "127.77.6.5", "-rate", "20", "-duration", "1s", "-personality", "sntp")
			rows := d.waitRows(10, 20*time.Second, nil)
			for _, r := range rows {
				if r.ClientIP == "127.77.6.5" || !c.stored(r.ClientIP) {
					t.Fatalf("stored client address %q in mode %s", r.ClientIP, c.mode)
				}
			}
			for k := range d.metrics() {
				if strings.Contains(k, "127.77.6.5") {
					t.Fatalf("real address in metrics: %s", k)
				}
			}
			found := false
			for k := range d.metrics() {
				if strings.HasPrefix(k, "ntpexp_client_requests_total{") && strings.Contains(k, rows[0].ClientIP) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no per-client series for the stored form %s", rows[0].ClientIP)
			}
			// detail by the real address finds the stored form.
			out, err := d.ctl(append([]string{"detail", "127.77.6.5", "--database.address-mode", c.mode}, c.args...)...)
			if err != nil || !strings.Contains(out, rows[0].ClientIP) {
				t.Fatalf("detail: %v\n%s", err, out)
			}
			t.Logf("mode %s: stored and labelled as %s", c.mode, rows[0].ClientIP)
		})
	}
}
