package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ntpexp/ntpexp/e2e/peers"
)

// TestSideBySideBench runs `make bench`'s side-by-side comparison briefly,
// with the real chronyd, so that the benchmark a person reruns keeps
// working and keeps its table: every server answers, ntpexp's store
// writes a row per request without queue drops, and the whole process
// allocates far less than one object per request (1.1 before the writer's
// upserts went through the C API). What it does allocate during the load
// is mostly one scrape of /metrics, about 30,000 allocations with the
// load's 256 per-client series, whatever the number of requests. The
// equal-load phase offers every NTP server the same open-loop rate, and
// ntpexp must store all of it there too. It asserts nothing about speed:
// the figures of a run on a shared machine are in docs/performance.md.
func TestSideBySideBench(t *testing.T) {
	peers.Require(t, "chronyd")
	peers.RequireRoot(t, "run chronyd as a server (sidebyside starts it with -u root)")
	bin := filepath.Dir(ntpexpBin)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "udpecho"), "../bench/udpecho").CombinedOutput(); err != nil {
		t.Fatalf("building udpecho: %v: %s", err, out)
	}
	js := filepath.Join(t.TempDir(), "bench.json")
	cmd := exec.Command("go", "run", "../bench/sidebyside", "-bin", bin, "-duration", "2s", "-rounds", "1", "-equal-load", "0.25", "-json", js)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sidebyside: %v\n%s", err, out)
	}
	text := string(out)
	t.Logf("\n%s", text)
	for _, want := range []string{"server  replies/s  vs chronyd  vs echo", "udpecho", "chronyd", "ntpexp-metrics",
		"ntpexp processing time vs chronyd", "ntpexp store:", "ratios to chronyd in the same round, median of 1 rounds",
		"CPU per reply at saturation (median of 1 rounds), server + load generator",
		"(0.25× chronyd's saturated replies/s) offered to each server, open loop, Poisson arrivals",
		"ntpexp processing time vs chronyd at equal load", "ntpexp-metrics processing time vs chronyd at equal load"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]struct {
		Load struct {
			Mode                               string
			Offered                            float64 `json:"offered_per_second"`
			Sent, Replies, Mismatched, Invalid uint64
			RepliesPerSec                      float64                    `json:"replies_per_second"`
			Processing                         struct{ P50, P99 float64 } `json:"processing_seconds"`
		} `json:"load"`
		RowsWritten  float64 `json:"rows_written"`
		Requests     float64 `json:"requests"`
		QueueDrops   float64 `json:"queue_drops"`
		AllocsPerReq float64 `json:"allocs_per_request"`
		CPUPerReq    float64 `json:"server_cpu_seconds_per_request"`
		LoadCPU      float64 `json:"load_cpu_seconds_per_request"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"udpecho", "chronyd", "ntpexp", "ntpexp-metrics"} {
		r, ok := res[s]
		switch {
		case !ok:
			t.Errorf("%s: no result", s)
		case r.Load.Replies == 0 || r.Load.Replies < r.Load.Sent*9/10:
			t.Errorf("%s: %d replies for %d requests", s, r.Load.Replies, r.Load.Sent)
		case r.Load.Mismatched+r.Load.Invalid > 0:
			t.Errorf("%s: %d mismatched, %d invalid replies", s, r.Load.Mismatched, r.Load.Invalid)
		case s != "udpecho" && r.CPUPerReq <= 0:
			t.Errorf("%s: no CPU per reply measured", s)
		case r.LoadCPU <= 0:
			t.Errorf("%s: no load generator CPU per reply measured", s)
		}
	}
	// The equal-load phase: each NTP server got the same open-loop rate,
	// a quarter of chronyd's saturated replies/s, and answered nearly all
	// of it; ntpexp stored every request.
	rate := 0.25 * res["chronyd"].Load.RepliesPerSec
	for _, s := range []string{"chronyd", "ntpexp", "ntpexp-metrics"} {
		// Keyed "equal-RATE-ROUND-SERVER"; there is one rate and one round.
		var keys []string
		for k := range res {
			if strings.HasPrefix(k, "equal-") && strings.HasSuffix(k, "-1-"+s) {
				keys = append(keys, k)
			}
		}
		if len(keys) != 1 {
			t.Errorf("equal load, %s: results %q, want one", s, keys)
			continue
		}
		r := res[keys[0]]
		switch {
		case r.Load.Mode != "open" || r.Load.Offered < rate*0.98 || r.Load.Offered > rate*1.02:
			t.Errorf("equal load, %s: mode %q at %.0f/s, want open at %.0f/s", s, r.Load.Mode, r.Load.Offered, rate)
		case r.Load.Replies < r.Load.Sent*95/100 || r.Load.Mismatched+r.Load.Invalid > 0:
			t.Errorf("equal load, %s: %d replies for %d requests, %d mismatched, %d invalid", s, r.Load.Replies, r.Load.Sent, r.Load.Mismatched, r.Load.Invalid)
		case r.Load.Processing.P50 <= 0 || r.Load.Processing.P99 < r.Load.Processing.P50:
			t.Errorf("equal load, %s: T3-T2 p50 %g s, p99 %g s", s, r.Load.Processing.P50, r.Load.Processing.P99)
		case s == "ntpexp" && (r.RowsWritten != r.Requests || r.QueueDrops != 0):
			t.Errorf("equal load, ntpexp store: %.0f rows for %.0f requests, %.0f queue drops", r.RowsWritten, r.Requests, r.QueueDrops)
		}
	}
	n := res["ntpexp"]
	if n.Requests == 0 || n.RowsWritten != n.Requests || n.QueueDrops != 0 {
		t.Errorf("ntpexp store: %.0f rows for %.0f requests, %.0f queue drops", n.RowsWritten, n.Requests, n.QueueDrops)
	}
	// allocs_per_request is over the measured load, whose requests are
	// about the load's replies (Requests also counts the warm-up).
	load := float64(n.Load.Replies)
	allocs := n.AllocsPerReq * load
	if bound := 60000 + 0.1*load; n.AllocsPerReq <= 0 || allocs > bound {
		t.Errorf("ntpexp: %.0f allocations over the load (%.3f per request for %.0f requests), want more than 0 (measured) and at most %.0f (two scrapes and 0.1 per request)",
			allocs, n.AllocsPerReq, load, bound)
	}
}
