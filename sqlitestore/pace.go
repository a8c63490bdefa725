package sqlitestore

import "time"

// Pacing. A transaction is CPU-bound work in SQLite: at 41,000 requests/s
// on two CPUs, the 250 ms of requests a transaction holds (about 10,000
// rows, at the 7.6 µs of CPU per row the store added at that rate) are
// about 80 ms of one CPU without a pause. The packet path and, on a
// test machine, the load generator share those CPUs; while the writer
// held one, the other could not keep up and replies queued. Lowering the
// writer thread's priority (nice 19, SCHED_IDLE) did not change that on
// the benchmark's virtual machine; giving the CPU back in small pieces
// did. While the writer keeps up, it pauses between pieces of a
// transaction so that it works at most paceDuty of the wall time: T3 - T2
// under an open loop of 41,000 requests/s, 12 interleaved runs each, had
// a median p90 of 4.4 ms against 13.3 ms (p50 0.42 against 0.67 ms, p99
// 19 against 27 ms), and the saturated replies/s did not fall (56.6-65.2k
// against 52.6-61.3k, no queue drops). The CPU it spends is the same;
// rows are committed later, never later than FlushInterval allows. When
// the queue is half full (where a transaction starts at once anyway), a
// transaction has run for a quarter of FlushInterval, or the store is
// stopping, it works flat out.
const (
	defaultPaceDuty = 1.0 / 3
	// paceSlice is the least work between two pauses: shorter pauses
	// cost more in wake-ups than they give back (Go timers here fire
	// about every millisecond at best).
	paceSlice = 2 * time.Millisecond
	// paceMaxPause bounds one pause, so that a piece of work that took
	// long (the machine was busy) does not stall the writer for longer.
	paceMaxPause = 50 * time.Millisecond
)

// pacer is the writer's pacing state.
type pacer struct {
	duty  float64 // fraction of wall time worked while pacing; >= 1: off
	limit int     // queue length from which the writer does not pause
	// A transaction that has taken stretch (pauses included) goes on
	// without pauses: rows are committed within FlushInterval.
	stretch time.Duration
	sleep   func(time.Duration)
	queued  func() int // rows waiting in the queue
	off     bool       // stopping: drain at full speed

	start, mark time.Time     // the transaction's start, the last pause's end
	paused      time.Duration // pauses of the current transaction
}

func newPacer(cfg Config, queued func() int) pacer {
	p := pacer{duty: cfg.paceDuty, sleep: cfg.paceSleep, queued: queued, stretch: cfg.FlushInterval / 4,
		limit: max(cfg.BatchSize, cfg.QueueSize/2)}
	switch {
	case p.duty == 0:
		p.duty = defaultPaceDuty
	case p.duty < 0:
		p.duty = 1
	}
	if p.sleep == nil {
		p.sleep = time.Sleep
	}
	return p
}

// begin starts a transaction's pacing.
func (p *pacer) begin() {
	p.start = time.Now()
	p.mark, p.paused = p.start, 0
}

// step is called between pieces of a transaction's work. After at least
// paceSlice of work, it pauses for as long as that work took times
// (1 - duty) / duty, unless queued rows say the writer must hurry.
func (p *pacer) step() {
	if p.duty >= 1 || p.off {
		return
	}
	now := time.Now()
	worked := now.Sub(p.mark)
	if worked < paceSlice {
		return
	}
	if now.Sub(p.start) >= p.stretch || p.queued() >= p.limit {
		p.mark = now
		return
	}
	d := min(time.Duration(float64(worked)*(1-p.duty)/p.duty), paceMaxPause)
	p.sleep(d)
	p.paused += d
	p.mark = time.Now()
}
