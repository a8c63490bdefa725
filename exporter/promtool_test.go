package exporter

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/ntpexp/ntpexp/ntp"
)

// requirePeer returns the path of a peer tool, skipping the test when it
// is missing outside CI and failing it in CI.
func requirePeer(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("peer %s missing in CI: %v", name, err)
	}
	t.Skipf("SKIPPING: peer %s not installed (%v); CI runs this test", name, err)
	return ""
}

// TestPromtoolCheckMetrics lints the whole exposition (every metric of
// the package, populated) with promtool check metrics.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := requirePeer(t, "promtool")
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, &fakeStats{}, MetricsConfig{})
	RegisterStore(reg, &fakeStore{}).ObserveFlush(time.Millisecond)
	o := answered(4, "192.0.2.1:123")
	o.Method, o.Offset, o.Delay = ntp.MethodExchange, time.Millisecond, 10*time.Millisecond
	m.Observe(&o)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
