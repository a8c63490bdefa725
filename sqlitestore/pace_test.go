package sqlitestore

import (
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
