package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/go-kit/log/level"
)

// Daily rollups (client_days) hold exactly the client_hours rows of the
// hours in [daysFrom, daysTo), summed per client and UTC day. The writer
// keeps that true:
//
//   - once an hour is over, a roll step adds its client_hours rows to
//     client_days and moves daysTo past it, in one transaction;
//   - a transaction that writes rows for an hour already in the range (a
//     late row) adds them to client_days too;
//   - in a database upgraded from schema 1, roll steps move daysFrom back
//     an hour at a time, adding each older hour, until no hour is left.
//
// So writing costs nothing more per transaction in the usual case, and a
// completed hour is rolled once (one INSERT ... SELECT in key order).
// Readers use a day's daily row for the hours of the day in the range,
// and hourly rows for the rest (see Reader.rollupWindow).

const (
	daysFromName = "client_days_from"
	daysToName   = "client_days_to"
)

// daySet merges excluded (a client's rows of a day) into a client_days row.
var daySet = `ON CONFLICT (day, client) DO UPDATE SET
	requests = requests + excluded.requests, drops = drops + excluded.drops,
	rate_limited = rate_limited + excluded.rate_limited, kod = kod + excluded.kod,
	offset_count = offset_count + excluded.offset_count,
	offset_min_ns = min(coalesce(offset_min_ns, excluded.offset_min_ns), coalesce(excluded.offset_min_ns, offset_min_ns)),
	offset_max_ns = max(coalesce(offset_max_ns, excluded.offset_max_ns), coalesce(excluded.offset_max_ns, offset_max_ns)),
	delay_count = delay_count + excluded.delay_count,
	delay_min_ns = min(coalesce(delay_min_ns, excluded.delay_min_ns), coalesce(excluded.delay_min_ns, delay_min_ns)),
	delay_max_ns = max(coalesce(delay_max_ns, excluded.delay_max_ns), coalesce(excluded.delay_max_ns, delay_max_ns)),
	offset_hist = ` + mergeHists("offset_hist") + `,
	delay_hist = ` + mergeHists("delay_hist")

// sqlUpsertDay adds a transaction's late rows of one client and day.
var sqlUpsertDay = `INSERT INTO client_days (day, client, requests, drops, rate_limited, kod,
	offset_count, offset_min_ns, offset_max_ns, delay_count, delay_min_ns, delay_max_ns, offset_hist, delay_hist)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
` + daySet

// sqlRollHour adds an hour's client_hours rows (?2) to their day (?1).
var sqlRollHour = `INSERT INTO client_days (day, client, requests, drops, rate_limited, kod,
	offset_count, offset_min_ns, offset_max_ns, delay_count, delay_min_ns, delay_max_ns, offset_hist, delay_hist)
SELECT ?1, client, requests, drops, rate_limited, kod,
	offset_count, offset_min_ns, offset_max_ns, delay_count, delay_min_ns, delay_max_ns, offset_hist, delay_hist
FROM client_hours WHERE hour = ?2 ORDER BY client
` + daySet

// histMergeFunc merges two encoded histograms in SQL (registered on the
// writer's connection): NULL, an unknown histogram, stays NULL.
const histMergeFunc = "ntpexp_hist_merge"

// mergeHists is the SQL that merges column col of a client_days row with
// the excluded row's: NULL (unknown) stays NULL, and the empty histogram
// is handled here, since go-sqlite3 returns an empty blob from a Go
// function as NULL, which would mark the day's histogram unknown.
func mergeHists(col string) string {
	return `CASE WHEN ` + col + ` IS NULL OR excluded.` + col + ` IS NULL THEN NULL
		WHEN length(` + col + `) = 0 THEN excluded.` + col + `
		WHEN length(excluded.` + col + `) = 0 THEN ` + col + `
		ELSE ` + histMergeFunc + `(` + col + `, excluded.` + col + `) END`
}

// histMerge implements histMergeFunc for two non-empty histograms
// (mergeHists handles NULL and empty ones). go-sqlite3 passes NULL as a
// nil []byte.
func histMerge(a, b any) (any, error) {
	x, _ := a.([]byte)
	y, _ := b.([]byte)
	if len(x) == 0 || len(y) == 0 {
		return nil, nil
	}
	m := sparseCounts{}
	if err := mergeSparse(m, x); err != nil {
		return nil, err
	}
	if err := mergeSparse(m, y); err != nil {
		return nil, err
	}
	out, _ := m.appendEncoded([]byte{}, nil)
	return out, nil
}

// loadDays reads the daily rollups' range, setting it to start at the
// current hour when the database has none yet (new, or just upgraded).
func (w *writer) loadDays(ctx context.Context) error {
	s := w.s
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	get := func(name string) (int64, bool, error) {
		var v int64
		err := tx.QueryRowContext(ctx, `SELECT cutoff FROM retention WHERE name = ?`, name).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil
		}
		return v, err == nil, err
	}
	now := hourOf(s.cfg.Now().UnixNano())
	from, okFrom, err := get(daysFromName)
	if err != nil {
		return err
	}
	to, okTo, err := get(daysToName)
	if err != nil {
		return err
	}
	if !okTo {
		to = now
		if !okFrom {
			from = now
		}
		for name, v := range map[string]int64{daysFromName: from, daysToName: to} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO retention (name, cutoff) VALUES (?, ?)
				ON CONFLICT (name) DO UPDATE SET cutoff = excluded.cutoff`, name, v); err != nil {
				return err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.daysFrom, w.daysTo = from, to
	w.daysBackfilled = false
	return nil
}

// rollDue reports whether a roll step has work: a completed hour to add,
// or older hours to backfill.
func (w *writer) rollDue() bool {
	if time.Now().Before(w.rollRetryAt) {
		return false
	}
	if w.daysTo < hourOf(w.s.cfg.Now().UnixNano()) {
		return true
	}
	// The backfill is not urgent: it waits while requests queue up.
	return !w.daysBackfilled && w.s.QueueLength() < w.s.cfg.BatchSize
}

// roll runs a roll step between batches; after a failure (other than
// lock contention) it logs and waits a while before the next.
func (w *writer) roll() {
	if _, err := w.rollStep(w.ctx); err != nil {
		w.rollRetryAt = time.Now().Add(10 * time.Second)
		if !isBusy(err) {
			level.Error(w.s.logger).Log("msg", "daily rollups: step failed, will retry", "err", err)
		}
	}
}

// rollStep adds one hour to the daily rollups: the oldest completed hour
// at or after daysTo, or else the newest hour before daysFrom. Hours
// without rows are skipped. It reports whether it did anything.
func (w *writer) rollStep(ctx context.Context) (bool, error) {
	s := w.s
	now := hourOf(s.cfg.Now().UnixNano())
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var hour sql.NullInt64
	var name string
	var next int64
	if w.daysTo < now {
		if err := tx.QueryRowContext(ctx, `SELECT min(hour) FROM client_hours WHERE hour >= ? AND hour < ?`,
			w.daysTo, now).Scan(&hour); err != nil {
			return false, err
		}
		name, next = daysToName, now
		if hour.Valid {
			next = hour.Int64 + 3600
		}
	} else {
		if w.daysFrom == math.MinInt64 {
			w.daysBackfilled = true
			return false, nil
		}
		if err := tx.QueryRowContext(ctx, `SELECT max(hour) FROM client_hours WHERE hour < ?`, w.daysFrom).Scan(&hour); err != nil {
			return false, err
		}
		if !hour.Valid {
			w.daysBackfilled = true
			return false, nil
		}
		name, next = daysFromName, hour.Int64
	}
	if hour.Valid {
		if _, err := tx.ExecContext(ctx, sqlRollHour, dayOf(hour.Int64), hour.Int64); err != nil {
			return false, fmt.Errorf("daily rollups of hour %d: %w", hour.Int64, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE retention SET cutoff = ? WHERE name = ?`, next, name); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	if name == daysToName {
		w.daysTo = next
	} else {
		w.daysFrom = next
	}
	return true, nil
}
