package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/go-kit/log/level"
)

// CleanupResult says what one retention cycle removed.
type CleanupResult struct {
	ObservationsDeleted int64 `json:"observations_deleted"`
	RollupsDeleted      int64 `json:"rollups_deleted"`
	// DailyRollupsDeleted counts client_days rows.
	DailyRollupsDeleted int64 `json:"daily_rollups_deleted"`
	ClientsDeleted      int64 `json:"clients_deleted"`
	// Chunks is how many delete transactions the cycle used.
	Chunks int `json:"chunks"`
	// PagesFreed is how many free pages incremental_vacuum returned.
	PagesFreed int64 `json:"pages_freed"`
	err        error
	// The cycle's work (its steps' time) and its wall time (batches are
	// written between its steps).
	work, wall time.Duration
	// vacuumSteps counts incremental_vacuum steps.
	vacuumSteps int
}

const (
	phaseRaw = iota
	phaseRollups
	phaseDays
	phaseHours
	phaseClients
	phaseVacuum
	phaseFinish
)

// vacuumChunkPages bounds one incremental_vacuum step (4 KiB pages).
const vacuumChunkPages = 2048

// cleanupRun is a retention cycle in progress. The writer goroutine runs
// one step (one short transaction) at a time between batches.
type cleanupRun struct {
	phase        int
	rawCutoff    int64 // time_ns below this is deleted
	rollupCutoff int64 // hour below this is deleted
	cutoffSaved  bool  // rollupCutoff is in the retention table
	clientCutoff int64 // clients last seen below this are deleted
	result       CleanupResult
	waiters      []chan CleanupResult
	started      time.Time
}

func (c *cleanupRun) notify() {
	for _, ch := range c.waiters {
		ch <- c.result
	}
	c.waiters = nil
}

// startCleanup begins a cycle (or joins the one running); waiter, if not
// nil, receives the result.
func (w *writer) startCleanup(waiter chan CleanupResult) {
	if w.cleanup == nil {
		now := w.s.cfg.Now()
		raw := now.Add(-time.Duration(w.s.cfg.RetentionDays) * 24 * time.Hour)
		roll := now.Add(-time.Duration(w.s.cfg.RollupRetentionDays) * 24 * time.Hour)
		w.cleanup = &cleanupRun{
			rawCutoff:    raw.UnixNano(),
			rollupCutoff: hourOf(roll.UnixNano()),
			clientCutoff: roll.UnixNano(),
			started:      time.Now(),
		}
	}
	if waiter != nil {
		w.cleanup.waiters = append(w.cleanup.waiters, waiter)
	}
}

// cleanupStep runs one step of the cycle in progress.
func (w *writer) cleanupStep() {
	c := w.cleanup
	s := w.s
	start := time.Now()
	ctx := w.ctx
	chunk := s.cfg.cleanupChunk
	var err error
	deleteChunk := func(q string, arg int64, counter *int64, next int) {
		res, e := s.db.ExecContext(ctx, q, arg, chunk)
		if e != nil {
			err = e
			return
		}
		n, _ := res.RowsAffected()
		*counter += n
		if n > 0 {
			c.result.Chunks++
		}
		if n < int64(chunk) {
			c.phase = next
		}
	}
	switch c.phase {
	case phaseRaw:
		deleteChunk(`DELETE FROM observations WHERE id IN
			(SELECT id FROM observations WHERE time_ns < ? LIMIT ?)`,
			c.rawCutoff, &c.result.ObservationsDeleted, phaseRollups)
	case phaseRollups:
		if !c.cutoffSaved {
			// Recorded before anything is deleted: readers may then only
			// be too careful, never wrong.
			if _, err = s.db.ExecContext(ctx, `INSERT INTO retention (name, cutoff) VALUES ('client_hours', ?)
				ON CONFLICT (name) DO UPDATE SET cutoff = max(cutoff, excluded.cutoff)`, c.rollupCutoff); err != nil {
				break
			}
			c.cutoffSaved = true
		}
		deleteChunk(`DELETE FROM client_hours WHERE (hour, client) IN
			(SELECT hour, client FROM client_hours WHERE hour < ? LIMIT ?)`,
			c.rollupCutoff, &c.result.RollupsDeleted, phaseDays)
		// Rows deleted here may still be in the rollup cache.
		w.rollups.dropBefore(c.rollupCutoff)
	case phaseDays:
		// Daily rows go a whole day at a time: the daily rollups' range
		// starts again at the first midnight at or after the cutoff, so
		// that they keep holding exactly the hourly rows of their range
		// (the day holding the cutoff loses its daily row; its remaining
		// hours are read from the hourly rollups). The range moves first,
		// so the writer adds no late rows to the days being deleted.
		from := ceilDay(c.rollupCutoff)
		if from > w.daysFrom {
			if _, err = s.db.ExecContext(ctx, `UPDATE retention SET cutoff = ? WHERE name = ?`, from, daysFromName); err != nil {
				break
			}
			w.daysFrom = from
		}
		if from > w.daysTo {
			// Not rolled since before the cutoff (a long stop): the range
			// restarts empty at from.
			if _, err = s.db.ExecContext(ctx, `UPDATE retention SET cutoff = ? WHERE name = ?`, from, daysToName); err != nil {
				break
			}
			w.daysTo = from
		}
		// Hours before the range are retention's to delete, not the
		// backfill's to add.
		w.daysBackfilled = true
		deleteChunk(`DELETE FROM client_days WHERE (day, client) IN
			(SELECT day, client FROM client_days WHERE day < ? LIMIT ?)`,
			from, &c.result.DailyRollupsDeleted, phaseHours)
	case phaseHours:
		// One row per hour: a single statement, not counted as rollups.
		var hours int64
		deleteChunk(`DELETE FROM hours WHERE hour IN
			(SELECT hour FROM hours WHERE hour < ? LIMIT ?)`,
			c.rollupCutoff, &hours, phaseClients)
		w.rollups.dropBefore(c.rollupCutoff)
	case phaseClients:
		deleteChunk(`DELETE FROM clients WHERE client IN
			(SELECT client FROM clients WHERE last_seen_ns < ? LIMIT ?)`,
			c.clientCutoff, &c.result.ClientsDeleted, phaseVacuum)
	case phaseVacuum:
		// auto_vacuum=INCREMENTAL: give free pages back to the file
		// system a bounded step at a time.
		var free int64
		if err = s.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
			break
		}
		if free == 0 {
			c.phase = phaseFinish
			break
		}
		if err = incrementalVacuum(ctx, s.db, vacuumChunkPages); err != nil {
			break
		}
		c.result.vacuumSteps++
		var after int64
		if err = s.db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&after); err != nil {
			break
		}
		c.result.PagesFreed += free - after
		if after >= free { // auto_vacuum is off (database from elsewhere)
			c.phase = phaseFinish
		}
	case phaseFinish:
		deleted := c.result.ObservationsDeleted + c.result.RollupsDeleted + c.result.DailyRollupsDeleted + c.result.ClientsDeleted
		if deleted > 0 {
			// Let the WAL be reused rather than grow; PASSIVE never waits
			// for readers.
			if _, e := s.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)"); e != nil {
				level.Warn(s.logger).Log("msg", "WAL checkpoint failed", "err", e)
			}
		}
		if _, e := s.db.ExecContext(ctx, "PRAGMA optimize"); e != nil {
			level.Warn(s.logger).Log("msg", "PRAGMA optimize failed", "err", e)
		}
		c.result.work += time.Since(start)
		c.result.wall = time.Since(c.started)
		if deleted > 0 || c.result.PagesFreed > 0 {
			level.Info(s.logger).Log("msg", "retention cycle done",
				"observations_deleted", c.result.ObservationsDeleted,
				"rollups_deleted", c.result.RollupsDeleted,
				"daily_rollups_deleted", c.result.DailyRollupsDeleted,
				"clients_deleted", c.result.ClientsDeleted,
				"pages_freed", c.result.PagesFreed,
				"duration", c.result.wall,
				"work", c.result.work)
		}
		w.endCleanup()
		return
	}
	c.result.work += time.Since(start)
	if err != nil {
		if isBusy(err) {
			return // try the step again after the next batch
		}
		level.Error(s.logger).Log("msg", "retention cycle failed", "err", err)
		c.result.err = err
		w.endCleanup()
	}
}

func (w *writer) endCleanup() {
	w.cleanup.notify()
	w.cleanup = nil
	w.nextCleanup = time.Now().Add(w.s.cfg.CleanupInterval)
}

// incrementalVacuum frees up to pages free pages. The pragma returns a row
// for every page it frees and frees the next one only when stepped again:
// Exec would step once and free a single page.
func incrementalVacuum(ctx context.Context, db *sql.DB, pages int) error {
	rows, err := db.QueryContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", pages))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
	}
	return rows.Err()
}
