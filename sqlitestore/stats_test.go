package sqlitestore

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// statsFixture writes three days of requests from 300 clients with mixed
// rates, lifetimes, clocks, delays and drops, in small batches (so rollup
// rows merge across transactions), and returns a Reader at t0.
func statsFixture(t *testing.T) *Reader {
	t.Helper()
	return statsFixtureRetained(t, false)
}

// statsFixtureRetained is statsFixture; with expire, retention then
// deletes raw rows older than a day and rollups older than two, so that
// clients' totals count more than their remaining rollups.
func statsFixtureRetained(t *testing.T, expire bool) *Reader {
	t.Helper()
	cfg := testConfig(t)
	cfg.Now = fixedNow
	cfg.RetentionDays, cfg.RollupRetentionDays = 1, 2
	cfg.BatchSize = 97
	cfg.FlushInterval = 10 * time.Millisecond
	s := openStore(t, cfg)
	rng := rand.New(rand.NewPCG(11, 12))
	var all []ntp.Observation
	for c := 0; c < 300; c++ {
		addr := netip.AddrFrom4([4]byte{10, byte(c / 250), byte(c % 250), 1})
		if c%7 == 0 {
			addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(c >> 8), 15: byte(c)})
		}
		start := t0.Add(-time.Duration(1+rng.IntN(72)) * time.Hour) // first seen
		end := t0.Add(-time.Duration(rng.IntN(30)) * time.Hour)     // last seen
		if end.Before(start) {
			start, end = end, start
		}
		step := time.Duration(1+rng.IntN(20)) * time.Minute
		if c%50 == 0 {
			step = 10 * time.Second // a heavy talker
		}
		clock := time.Duration(rng.NormFloat64() * float64(5*time.Millisecond))
		switch c % 37 {
		case 1:
			clock = 300 * time.Millisecond
		case 2:
			clock = -2 * time.Hour
		}
		for at := start; at.Before(end.Add(time.Second)); at = at.Add(step + time.Duration(rng.IntN(1000))*time.Millisecond) {
			o := obs(at, netip.AddrPortFrom(addr, 123).String())
			o.Version = uint8(3 + c%2)
			switch c % 3 {
			case 1:
				o = withOffset(o, ntp.MethodApparent, clock+time.Duration(rng.IntN(1000))*time.Microsecond, 0)
			case 2:
				d := time.Duration(rng.IntN(90)) * time.Millisecond
				if c%11 == 2 {
					d += 100 * time.Millisecond
				}
				o = withOffset(o, ntp.MethodExchange, clock, d)
			}
			if c%13 == 0 && rng.IntN(5) == 0 {
				o.Drop, o.KoD, o.ReplyLength = ntp.DropRateLimit, rng.IntN(2) == 0, 0
			}
			all = append(all, o)
		}
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for i := range all {
		for s.QueueLength() > s.QueueCapacity()/2 {
			time.Sleep(time.Millisecond)
		}
		s.Observe(&all[i])
	}
	waitFor(t, "rows written", func() bool { return s.RowsWritten() == uint64(len(all)) })
	if expire {
		res, err := s.Cleanup(context.Background())
		if err != nil || res.RollupsDeleted == 0 || res.ObservationsDeleted == 0 {
			t.Fatalf("Cleanup = %+v, %v", res, err)
		}
	}
	closeStore(t, s)
	r := openReader(t, cfg.Path)
	r.SetClock(fixedNow)
	return r
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStatsAndAnomaliesMatchReference(t *testing.T) {
	t.Run("all", func(t *testing.T) { testStatsAndAnomaliesMatchReference(t, statsFixture(t)) })
	t.Run("expired", func(t *testing.T) { testStatsAndAnomaliesMatchReference(t, statsFixtureRetained(t, true)) })
}

func testStatsAndAnomaliesMatchReference(t *testing.T, r *Reader) {
	ctx := context.Background()
	for _, hours := range []int{1, 2, 5, 24, 40, 72, 100, 2000} {
		got, err := r.Stats(ctx, hours)
		if err != nil {
			t.Fatal(err)
		}
		want, err := r.refStats(ctx, hours)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := jsonOf(t, got), jsonOf(t, want); g != w {
			t.Errorf("Stats(%d):\n got %s\nwant %s", hours, g, w)
		}
		if hours == 24 && (got.UniqueClients < 100 || len(got.TopTalkers) != 10) {
			t.Errorf("fixture too thin: %d clients, %d talkers", got.UniqueClients, len(got.TopTalkers))
		}
		for _, o := range []AnomalyOptions{{Hours: hours}, {Hours: hours, OffsetThreshold: 0.004, DelayThreshold: 0.05}, {Hours: hours, OffsetThreshold: 5000}} {
			got, err := r.Anomalies(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			want, err := r.refAnomalies(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := jsonOf(t, got), jsonOf(t, want); g != w {
				t.Errorf("Anomalies(%+v):\n got %s\nwant %s", o, g, w)
			}
			if o.Hours == 24 && o.OffsetThreshold == 0 && len(got.Anomalies) < 10 {
				t.Errorf("fixture too thin: %d anomalies", len(got.Anomalies))
			}
		}
	}
}

// TestTopTalkersBothWays checks that the bounded visit and the scan of
// the window agree, whichever the budget picks.
func TestTopTalkersBothWays(t *testing.T) {
	r := statsFixture(t)
	ctx := context.Background()
	for _, hours := range []int{1, 3, 24, 72} {
		since := r.since(hours)
		tx, err := r.readTx(ctx)
		if err != nil {
			t.Fatal(err)
		}
		visit, err := r.topTalkers(ctx, tx, since, hours, 1<<60) // never scans
		if err != nil {
			t.Fatal(err)
		}
		scan, err := r.topTalkers(ctx, tx, since, hours, 0) // scans at once
		if err != nil {
			t.Fatal(err)
		}
		tx.Rollback()
		if g, w := fmt.Sprint(visit), fmt.Sprint(scan); g != w || len(scan) == 0 {
			t.Errorf("hours %d: visit %s, scan %s", hours, g, w)
		}
	}
}
