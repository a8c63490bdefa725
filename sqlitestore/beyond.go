package sqlitestore

import (
	"cmp"
	"context"
	"database/sql"
	"math"
	"slices"
)

// beyondCounter counts an anomalous client's observations beyond a
// threshold over a window (Anomaly.Count) from its histograms: the daily
// rollups' for the window's whole days, the hourly ones' for the rest
// (and for days whose histogram is unknown, written before schema 3).
// Every histogram bucket above the one holding the threshold lies wholly
// beyond it; raw rows are read only for the hours or days with
// observations in that bucket. So a client far from the threshold costs
// a row per day of the window and no raw row at all, where counting raw
// rows would read every observation of the window (tens of thousands per
// client and month).
//
// The count is exact while the raw rows of those hours are retained;
// after raw retention has removed them it counts the observations in the
// buckets wholly beyond the threshold (a bucket spans a factor of 1.26,
// so it misses at most those within 26% above the threshold).
type beyondCounter struct {
	rw   rollupWindow
	stmt [2]struct {
		hours, days, raw *sql.Stmt
	}
	run []straddleRun
}

// straddleRun is a time range, [from, to) in Unix seconds, of a client's
// hours or days with observations in the threshold's bucket.
type straddleRun struct{ from, to int64 }

func newBeyondCounter(ctx context.Context, tx *sql.Tx, rw rollupWindow) (*beyondCounter, error) {
	b := &beyondCounter{rw: rw}
	// Per kind (offset, delay): a client's (?1) hourly and daily rows in
	// [?2, ?3) with values beyond ?4; raw rows in [?2, ?3) beyond ?4 and
	// below ?5 (the end of the threshold's bucket). Each a range of the
	// (client, hour), (client, day) and (client, time_ns) indexes.
	qs := [2][3]string{{
		`SELECT hour, offset_hist FROM client_hours WHERE client = ?1 AND hour >= ?2 AND hour < ?3
			AND (offset_max_ns > ?4 OR offset_min_ns < -?4) ORDER BY hour`,
		`SELECT day, offset_hist FROM client_days WHERE client = ?1 AND day >= ?2 AND day < ?3
			AND (offset_max_ns > ?4 OR offset_min_ns < -?4) ORDER BY day`,
		`SELECT count(*) FROM observations WHERE client = ?1 AND time_ns >= ?2 AND time_ns < ?3
			AND (offset_ns > ?4 OR offset_ns < -?4) AND offset_ns < ?5 AND offset_ns > -?5`,
	}, {
		`SELECT hour, delay_hist FROM client_hours WHERE client = ?1 AND hour >= ?2 AND hour < ?3
			AND delay_max_ns > ?4 ORDER BY hour`,
		`SELECT day, delay_hist FROM client_days WHERE client = ?1 AND day >= ?2 AND day < ?3
			AND delay_max_ns > ?4 ORDER BY day`,
		`SELECT count(*) FROM observations WHERE client = ?1 AND time_ns >= ?2 AND time_ns < ?3
			AND delay_ns > ?4 AND delay_ns < ?5`,
	}}
	for k := range qs {
		for i, q := range qs[k] {
			st, err := tx.PrepareContext(ctx, q)
			if err != nil {
				b.close()
				return nil, err
			}
			switch i {
			case 0:
				b.stmt[k].hours = st
			case 1:
				b.stmt[k].days = st
			default:
				b.stmt[k].raw = st
			}
		}
	}
	return b, nil
}

func (b *beyondCounter) close() {
	for _, k := range b.stmt {
		for _, st := range []*sql.Stmt{k.hours, k.days, k.raw} {
			if st != nil {
				st.Close()
			}
		}
	}
}

// tally adds the counts beyond bucket bs of one rollup row's histogram
// to n, and the row's range [from, to) to the runs when it has
// observations in bucket bs.
func (b *beyondCounter) tally(blob []byte, bs int, from, to int64, n *int64) error {
	straddles := false
	if err := decodeSparse(blob, func(k int, c uint64) {
		switch {
		case k > bs:
			*n += int64(c)
		case k == bs && c > 0:
			straddles = true
		}
	}); err != nil {
		return err
	}
	if straddles {
		if l := len(b.run); l > 0 && b.run[l-1].to == from {
			b.run[l-1].to = to
		} else {
			b.run = append(b.run, straddleRun{from, to})
		}
	}
	return nil
}

// hours tallies c's hourly rows in [from, to).
func (b *beyondCounter) hours(ctx context.Context, st *sql.Stmt, c *anomalyCand, bs int, from, to int64, n *int64) error {
	if from >= to {
		return nil
	}
	rows, err := st.QueryContext(ctx, c.client, from, to, c.thr)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var hour int64
		var blob []byte
		if err := rows.Scan(&hour, &blob); err != nil {
			return err
		}
		if err := b.tally(blob, bs, hour, hour+3600, n); err != nil {
			return err
		}
	}
	return rows.Err()
}

// count returns how many of c's observations in the window are beyond
// c.thr: |offset| > thr, or delay > thr.
func (b *beyondCounter) count(ctx context.Context, c *anomalyCand) (int64, error) {
	st := &b.stmt[0]
	if c.delay {
		st = &b.stmt[1]
	}
	bs := histBucket(c.thr)
	w := &b.rw
	var n int64
	b.run = b.run[:0]
	// The window's parts in time order: its first hours, its days, the
	// hours after them (see rollupWindow; Anomalies plans no subtracted
	// head).
	if err := b.hours(ctx, st.hours, c, bs, w.headFrom, w.headTo, &n); err != nil {
		return 0, err
	}
	if w.dayTo > w.dayFrom {
		var unknown []int64 // days without histograms
		rows, err := st.days.QueryContext(ctx, c.client, w.dayFrom, w.dayTo, c.thr)
		if err != nil {
			return 0, err
		}
		for rows.Next() {
			var day int64
			var blob []byte
			if err := rows.Scan(&day, &blob); err != nil {
				rows.Close()
				return 0, err
			}
			if blob == nil { // unknown: the day's hours instead
				unknown = append(unknown, day)
				continue
			}
			if err := b.tally(blob, bs, day, min(day+86400, w.dayTo), &n); err != nil {
				rows.Close()
				return 0, err
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return 0, err
		}
		rows.Close()
		for _, day := range unknown {
			if err := b.hours(ctx, st.hours, c, bs, day, min(day+86400, w.dayTo), &n); err != nil {
				return 0, err
			}
		}
	}
	if err := b.hours(ctx, st.hours, c, bs, w.tailFrom, math.MaxInt64, &n); err != nil {
		return 0, err
	}
	// The threshold's bucket, from raw rows: [lo, hi) in nanoseconds; the
	// top bucket has no upper bound an int64 could exceed.
	_, hi := histBounds(bs)
	hiNS := int64(math.MaxInt64)
	if hi < float64(math.MaxInt64) {
		hiNS = int64(hi)
	}
	slices.SortFunc(b.run, func(x, y straddleRun) int { return cmp.Compare(x.from, y.from) })
	for i, r := range b.run {
		if i > 0 && b.run[i-1].to == r.from {
			continue // merged into the previous query below
		}
		to := r.to
		for j := i + 1; j < len(b.run) && b.run[j].from == to; j++ {
			to = b.run[j].to
		}
		var in int64
		if err := st.raw.QueryRowContext(ctx, c.client, r.from*1e9, to*1e9, c.thr, hiNS).Scan(&in); err != nil {
			return 0, err
		}
		// Fewer raw rows than the histograms hold in the bucket: raw
		// retention removed some, and in is a lower bound.
		n += in
	}
	return n, nil
}
