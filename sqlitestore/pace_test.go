package sqlitestore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// The pacer pauses for (1 - duty) / duty of the work since its last pause,
// and only while the writer keeps up.
func TestPacerStep(t *testing.T) {
	for _, tc := range []struct {
		name    string
		duty    float64       // Config.paceDuty
		worked  time.Duration // work since the last pause
		queued  int           // of a queue of 1000, batches of 10
		running time.Duration // since the transaction began
		off     bool
		want    time.Duration // 0: no pause
	}{
		{name: "default duty: twice the work", worked: 6 * time.Millisecond, want: 12 * time.Millisecond},
		{name: "half", duty: 0.5, worked: 6 * time.Millisecond, want: 6 * time.Millisecond},
		{name: "less than a slice of work", worked: paceSlice / 2},
		{name: "queue half full", worked: 6 * time.Millisecond, queued: 500},
		{name: "queue just below half", worked: 6 * time.Millisecond, queued: 499, want: 12 * time.Millisecond},
		{name: "long transaction", worked: 6 * time.Millisecond, running: 3 * time.Second},
		{name: "stopping", worked: 6 * time.Millisecond, off: true},
		{name: "pacing off", duty: -1, worked: 6 * time.Millisecond},
		{name: "pause capped", worked: 40 * time.Millisecond, want: paceMaxPause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pauses []time.Duration
			cfg := Config{BatchSize: 10, QueueSize: 1000, FlushInterval: 10 * time.Second,
				paceDuty: tc.duty, paceSleep: func(d time.Duration) { pauses = append(pauses, d) }}
			p := newPacer(cfg, func() int { return tc.queued })
			p.begin()
			now := time.Now()
			p.start = now.Add(-max(tc.running, tc.worked))
			p.mark = now.Add(-tc.worked)
			p.off = tc.off
			p.step()
			if tc.want == 0 {
				if len(pauses) != 0 {
					t.Fatalf("paused %v, want no pause", pauses)
				}
				return
			}
			// The work measured includes the microseconds since now.
			if len(pauses) != 1 || pauses[0] < tc.want || pauses[0] > tc.want+time.Millisecond {
				t.Fatalf("paused %v, want one pause of %v", pauses, tc.want)
			}
			if p.paused != pauses[0] {
				t.Errorf("paused %v, want %v", p.paused, pauses[0])
			}
		})
	}
}

// A store that keeps up pauses between pieces of a transaction, writes
// every row, and reports the transaction's work, not its pauses, to the
// flush observer.
func TestStorePaces(t *testing.T) {
	var mu sync.Mutex
	var pauses time.Duration
	var n int
	fr := &flushRecorder{}
	cfg := testConfig(t)
	cfg.FlushObserver = fr
	cfg.paceSleep = func(d time.Duration) {
		mu.Lock()
		pauses += d
		n++
		mu.Unlock()
		time.Sleep(d)
	}
	s := openStore(t, cfg)
	const rows = 30000 // below half the default queue: no hurry
	start := time.Now()
	for i := 0; i < rows; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.0.%d.%d:123", i%1000/250, i%250))
		s.Observe(&o)
	}
	waitFor(t, "rows written", func() bool { return s.rowsWritten.Load() == rows })
	wall := time.Since(start)
	mu.Lock()
	p, np := pauses, n
	mu.Unlock()
	if np == 0 || p <= 0 {
		t.Fatalf("%d rows written in %v without a pause", rows, wall)
	}
	var work time.Duration
	for _, d := range fr.durations() {
		work += d
	}
	// Work and pauses fit in the wall time, and the pauses are at most
	// twice the work (paceDuty 1/3), less the first slice of each piece.
	if work+p > wall || p > 2*work {
		t.Errorf("flushes %v of work, %v of pauses (%d) in %v", work, p, np, wall)
	}
	t.Logf("%d rows: %v of work, %v in %d pauses, %v in all", rows, work, p, np, wall)
	if s.RowsDropped() != 0 {
		t.Errorf("%d rows dropped", s.RowsDropped())
	}
}

// After a maintenance step the writer rests for (1 - duty) / duty of the
// step's work, unless it is behind, stopping or not pacing.
func TestPacerRest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		duty    float64
		worked  time.Duration
		queued  int           // of a queue of 1000
		running time.Duration // of the retention cycle (CleanupInterval 1 h)
		off     bool
		want    time.Duration
	}{
		{name: "default duty: twice the work", worked: 30 * time.Millisecond, want: 60 * time.Millisecond},
		{name: "short step", worked: 100 * time.Microsecond, want: 200 * time.Microsecond},
		{name: "half", duty: 0.5, worked: 30 * time.Millisecond, want: 30 * time.Millisecond},
		{name: "queue half full", worked: 30 * time.Millisecond, queued: 500},
		{name: "queue just below half", worked: 30 * time.Millisecond, queued: 499, want: 60 * time.Millisecond},
		{name: "stopping", worked: 30 * time.Millisecond, off: true},
		{name: "pacing off", duty: -1, worked: 30 * time.Millisecond},
		{name: "rest capped", worked: 2 * time.Second, want: maintMaxRest},
		{name: "cycle running 14 minutes", worked: 30 * time.Millisecond, running: 14 * time.Minute, want: 60 * time.Millisecond},
		{name: "cycle running 15 minutes: catch up", worked: 30 * time.Millisecond, running: 15 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{BatchSize: 10, QueueSize: 1000, FlushInterval: 10 * time.Second, CleanupInterval: time.Hour, paceDuty: tc.duty}
			p := newPacer(cfg, func() int { return tc.queued })
			p.off = tc.off
			if got := p.rest(tc.worked, tc.running); got != tc.want {
				t.Errorf("rest(%v, %v) = %v, want %v", tc.worked, tc.running, got, tc.want)
			}
		})
	}
}

// A retention cycle rests between its chunks while the writer keeps up:
// its wall time is about three times its work. Unpaced, the chunks run
// back to back.
func TestRetentionPaced(t *testing.T) {
	for _, paced := range []bool{true, false} {
		t.Run(fmt.Sprintf("paced=%v", paced), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Now = fixedNow
			cfg.cleanupChunk = 500
			cfg.FlushInterval = 10 * time.Millisecond
			if !paced {
				cfg.paceDuty = -1
			}
			s := openStore(t, cfg)
			const rows = 20000 // 40 chunks
			for i := 0; i < rows; i++ {
				o := obs(t0.Add(-40*24*time.Hour+time.Duration(i)*time.Second), fmt.Sprintf("10.1.%d.%d:123", i%1000/250, i%250))
				s.Observe(&o)
			}
			waitFor(t, "rows written", func() bool { return s.RowsWritten() == rows })
			res, err := s.Cleanup(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.ObservationsDeleted != rows {
				t.Fatalf("deleted %d observations, want %d", res.ObservationsDeleted, rows)
			}
			t.Logf("%d chunks, %d pages freed in %d steps: %v of work in %v", res.Chunks, res.PagesFreed, res.vacuumSteps, res.work, res.wall)
			if res.PagesFreed == 0 || res.vacuumSteps > int(res.PagesFreed)/vacuumChunkPages+1 {
				t.Errorf("%d pages freed in %d incremental_vacuum steps of up to %d", res.PagesFreed, res.vacuumSteps, vacuumChunkPages)
			}
			if res.work <= 0 || res.work > res.wall {
				t.Fatalf("work %v, wall %v", res.work, res.wall)
			}
			if paced && res.wall < 2*res.work {
				t.Errorf("paced cycle: %v of work in %v, want at least twice the work", res.work, res.wall)
			}
			if !paced && res.wall > 2*res.work {
				t.Errorf("unpaced cycle: %v of work in %v, want less than twice the work", res.work, res.wall)
			}
			closeStore(t, s)
		})
	}
}
