package sqlitestore

import (
	"context"
	"database/sql"
	"math"
)

// beyondCounter counts an anomalous client's observations beyond a
// threshold over a window (Anomaly.Count) from its hourly histograms,
// reading raw rows only where the histograms cannot tell: in hours whose
// observations fall in the bucket that holds the threshold. Every bucket
// above it lies wholly beyond the threshold. So a client far from the
// threshold costs one client_hours row per hour in the window and no raw
// row at all, where counting raw rows would read every observation of
// the window (tens of thousands per client and month).
//
// The count is exact while the raw rows of those hours are retained;
// after raw retention has removed them it counts the observations in the
// buckets wholly beyond the threshold (a bucket spans a factor of 1.26,
// so it misses at most those within 26% above the threshold).
type beyondCounter struct {
	hours [2]*sql.Stmt // offset, delay: a client's hours in a window with values beyond ?3
	raw   [2]*sql.Stmt // offset, delay: raw rows beyond ?5 and in [?6, ?7) in a time range
	run   []straddleRun
}

// straddleRun is a run of consecutive hours whose observations include
// inBucket in the threshold's bucket.
type straddleRun struct {
	from, to int64 // Unix seconds, [from, to)
	inBucket uint64
}

func newBeyondCounter(ctx context.Context, tx *sql.Tx) (*beyondCounter, error) {
	b := &beyondCounter{}
	qs := []string{
		`SELECT hour, offset_hist FROM client_hours
			WHERE client = ?1 AND hour >= ?2 AND (offset_max_ns > ?3 OR offset_min_ns < -?3) ORDER BY hour`,
		`SELECT hour, delay_hist FROM client_hours
			WHERE client = ?1 AND hour >= ?2 AND delay_max_ns > ?3 ORDER BY hour`,
		// |offset| beyond ?4, and in the bucket [?5, ?6) of |offset|.
		`SELECT coalesce(sum(offset_ns > ?4 OR offset_ns < -?4), 0), count(*) FROM observations
			WHERE client = ?1 AND time_ns >= ?2 AND time_ns < ?3
			AND ((offset_ns >= ?5 AND offset_ns < ?6) OR (offset_ns <= -?5 AND offset_ns > -?6))`,
		`SELECT coalesce(sum(delay_ns > ?4), 0), count(*) FROM observations
			WHERE client = ?1 AND time_ns >= ?2 AND time_ns < ?3 AND delay_ns >= ?5 AND delay_ns < ?6`,
	}
	for i, q := range qs {
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			b.close()
			return nil, err
		}
		if i < 2 {
			b.hours[i] = st
		} else {
			b.raw[i-2] = st
		}
	}
	return b, nil
}

func (b *beyondCounter) close() {
	for _, st := range append(b.hours[:], b.raw[:]...) {
		if st != nil {
			st.Close()
		}
	}
}

// count returns how many of c's observations since the hour since (Unix
// seconds) are beyond c.thr: |offset| > thr, or delay > thr.
func (b *beyondCounter) count(ctx context.Context, c *anomalyCand, since int64) (int64, error) {
	kind := 0
	if c.delay {
		kind = 1
	}
	bs := histBucket(c.thr)
	lo, hi := histBounds(bs)
	rows, err := b.hours[kind].QueryContext(ctx, c.client, since, c.thr)
	if err != nil {
		return 0, err
	}
	var n int64
	b.run = b.run[:0]
	for rows.Next() {
		var hour int64
		var blob []byte
		if err := rows.Scan(&hour, &blob); err != nil {
			rows.Close()
			return 0, err
		}
		var in uint64
		if err := decodeSparse(blob, func(k int, cnt uint64) {
			switch {
			case k > bs:
				n += int64(cnt)
			case k == bs:
				in = cnt
			}
		}); err != nil {
			rows.Close()
			return 0, err
		}
		if in == 0 {
			continue
		}
		if l := len(b.run); l > 0 && b.run[l-1].to == hour {
			b.run[l-1].to += 3600
			b.run[l-1].inBucket += in
		} else {
			b.run = append(b.run, straddleRun{from: hour, to: hour + 3600, inBucket: in})
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	rows.Close()
	// The threshold's bucket, from raw rows: [lo, hi) in nanoseconds; the
	// top bucket has no upper bound an int64 could exceed.
	loNS := int64(lo)
	hiNS := int64(math.MaxInt64)
	if hi < float64(math.MaxInt64) {
		hiNS = int64(hi)
	}
	for _, r := range b.run {
		var beyond, inBucket int64
		if err := b.raw[kind].QueryRowContext(ctx, c.client, r.from*1e9, r.to*1e9, c.thr, loNS, hiNS).Scan(&beyond, &inBucket); err != nil {
			return 0, err
		}
		// With fewer raw rows in the bucket than the histograms hold,
		// retention removed some: beyond is a lower bound.
		n += beyond
	}
	return n, nil
}
