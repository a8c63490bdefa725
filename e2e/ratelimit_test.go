package e2e

import (
	"encoding/json"
	"math"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// loadResult is ntpload's JSON output (the fields the tests use).
type loadResult struct {
	Sent          uint64  `json:"sent"`
	Replies       uint64  `json:"replies"`
	Lost          uint64  `json:"lost"`
	KoD           uint64  `json:"kod"`
	Mismatched    uint64  `json:"mismatched"`
	Invalid       uint64  `json:"invalid"`
	RepliesPerSec float64 `json:"replies_per_second"`
	Duration      float64 `json:"duration_seconds"`
}

func runLoad(t testing.TB, server string, args ...string) loadResult {
	t.Helper()
	cmd := exec.Command(ntploadBin, append([]string{"-server", server, "-json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ntpload %v: %v\n%s", args, err, out)
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("ntpload output %q: %v", out, err)
	}
	return r
}

// TestRateLimitFlood: a flood from one address is limited to the
// configured rate plus the leak, and other clients are unaffected.
func TestRateLimitFlood(t *testing.T) {
	const (
		burst    = 4
		rate     = 2000.0 // flood, requests/s
		duration = 5 * time.Second
		leak     = 2 // one in 4 over-limit requests still answered
	)
	d := startDaemon(t, daemonOpts{Args: []string{"--ntp.ratelimit.interval", "0", "--ntp.ratelimit.burst", strconv.Itoa(burst),
		"--ntp.ratelimit.leak", strconv.Itoa(leak)}})
	var wg sync.WaitGroup
	var flood, others loadResult
	wg.Add(2)
	go func() {
		defer wg.Done()
		flood = runLoad(t, d.NTPAddr, "-sources", "1", "-workers", "1", "-first-source", "127.3.0.1",
			"-rate", strconv.FormatFloat(rate, 'f', 0, 64), "-duration", duration.String(), "-personality", "sntp")
	}()
	go func() {
		defer wg.Done()
		// 50 clients, each polling every 2 s: within the limit of 1/s.
		others = runLoad(t, d.NTPAddr, "-sources", "50", "-workers", "1", "-first-source", "127.4.0.1",
			"-rate", "25", "-duration", duration.String(), "-personality", "mix")
	}()
	wg.Wait()
	allowed := float64(burst) + flood.Duration*1 // one response per second per address
	expect := allowed + (float64(flood.Sent)-allowed)/(1<<leak)
	if math.Abs(float64(flood.Replies)-expect) > 0.15*expect {
		t.Fatalf("flood: %d sent, %d answered; want about %.0f (burst %d + 1/s + 1 in %d of the rest)",
			flood.Sent, flood.Replies, expect, burst, 1<<leak)
	}
	if others.Sent == 0 || others.Replies != others.Sent {
		t.Fatalf("other clients lost replies during the flood: %+v", others)
	}
	m := d.metrics()
	drops := m[`ntpexp_drops_total{reason="rate_limit"}`]
	if drops < float64(flood.Sent-flood.Replies)*0.99 {
		t.Fatalf("rate_limit drops %v, flood lost %d", drops, flood.Sent-flood.Replies)
	}
	t.Logf("flood %d requests at %.0f/s: %d answered (%.1f%%, expected %.0f); 50 other clients: %d/%d answered",
		flood.Sent, rate, flood.Replies, 100*float64(flood.Replies)/float64(flood.Sent), expect, others.Replies, others.Sent)
}
