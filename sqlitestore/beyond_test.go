package sqlitestore

import (
	"context"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// TestAnomalyCountNearThreshold: the count of requests beyond the
// threshold is exact for values in the threshold's own histogram bucket
// (50 ms lies in [39.8 ms, 50.1 ms)), read from raw rows, and for values
// in the buckets above it, read from the histograms; after raw retention
// it is a lower bound of whole buckets.
func TestAnomalyCountNearThreshold(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = fixedNow
	s := openStore(t, cfg)
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	offsets := []time.Duration{ms(49.9), ms(50), ms(50.05), ms(-50.08), ms(60), ms(-200), ms(3)}
	delays := []time.Duration{ms(99.5), ms(100.2), ms(150), ms(20), ms(100), ms(250), ms(1)}
	// Spread over three hours of the window.
	for i, off := range offsets {
		at := t0.Add(-time.Duration(i) * 25 * time.Minute)
		o := withOffset(obs(at, "192.0.2.5:123"), ntp.MethodExchange, off, delays[i])
		s.Observe(&o)
	}
	closeStore(t, s)
	r := openReader(t, cfg.Path)
	r.SetClock(fixedNow)
	counts := func() map[string]int64 {
		an, err := r.Anomalies(context.Background(), AnomalyOptions{OffsetThreshold: 0.05, DelayThreshold: 0.1, Hours: 24})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, a := range an.Anomalies {
			out[a.Kind] = a.Count
			if a.Total != int64(len(offsets)) {
				t.Errorf("%s total %d, want %d", a.Kind, a.Total, len(offsets))
			}
		}
		return out
	}
	// |offset| > 50 ms: 50.05, -50.08 (in the bucket), 60, -200 (above).
	// delay > 100 ms: 100 ms starts its bucket [100, 125.9) ms, which
	// holds 100 (not beyond) and 100.2; 150 and 250 are above it.
	if got := counts(); got[KindOffset] != 4 || got[KindDelay] != 3 {
		t.Errorf("counts %v, want offset 4, delay 3", got)
	}
	// Raw rows gone: the counts keep the buckets above the threshold's:
	// 60 and -200 ms; 150 and 250 ms.
	if _, err := rawWriteDB(t, cfg.Path).Exec(`DELETE FROM observations`); err != nil {
		t.Fatal(err)
	}
	if got := counts(); got[KindOffset] != 2 || got[KindDelay] != 2 {
		t.Errorf("after raw retention: counts %v, want offset 2, delay 2", got)
	}
}
