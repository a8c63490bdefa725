package sqlitestore

import (
	"context"
	"sync/atomic"
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

// TestDailyHistogramsThroughEmptyHours: a day whose first hours reveal no
// offset or delay (empty histograms) and whose later hours do keeps a
// known daily histogram, rolled hour by hour and merged with late rows.
func TestDailyHistogramsThroughEmptyHours(t *testing.T) {
	var now atomic.Int64
	day := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	now.Store(day.Add(30 * time.Minute).UnixNano())
	cfg := testConfig(t)
	cfg.Now = func() time.Time { return time.Unix(0, now.Load()) }
	cfg.FlushInterval = 5 * time.Millisecond
	s := openStore(t, cfg)
	db := rawDB(t, cfg.Path)
	n := 0
	write := func(at time.Time, m ntp.OffsetMethod, off time.Duration) {
		t.Helper()
		o := withOffset(obs(at, "192.0.2.9:123"), m, off, 3*time.Millisecond)
		s.Observe(&o)
		n++
		waitFor(t, "row written", func() bool { return s.RowsWritten() == uint64(n) })
	}
	// Hours 0 and 1: no clock information; hour 2: offsets and delays.
	for h, m := range []ntp.OffsetMethod{ntp.MethodNone, ntp.MethodNone, ntp.MethodExchange} {
		now.Store(day.Add(time.Duration(h)*time.Hour + 30*time.Minute).UnixNano())
		write(day.Add(time.Duration(h)*time.Hour+10*time.Minute), m, 70*time.Millisecond)
	}
	// Roll hours 0 to 2, then write late rows into hour 1: empty, then not.
	now.Store(day.Add(3*time.Hour + 30*time.Minute).UnixNano())
	waitFor(t, "hours rolled", func() bool {
		return queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_to'") >= day.Add(3*time.Hour).Unix()
	})
	write(day.Add(time.Hour+20*time.Minute), ntp.MethodNone, 0)
	write(day.Add(time.Hour+25*time.Minute), ntp.MethodApparent, -80*time.Millisecond)
	closeStore(t, s)
	if got := queryInt(t, db, "SELECT count(*) FROM client_days WHERE offset_hist IS NOT NULL AND length(offset_hist) > 0 AND length(delay_hist) > 0"); got != 1 {
		t.Errorf("%d daily rows with known, non-empty histograms, want 1", got)
	}
	checkDailyRollups(t, db, true)
}
