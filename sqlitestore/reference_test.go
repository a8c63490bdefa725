package sqlitestore

// The Stats and Anomalies of the first schema, which computed everything
// from client_hours with GROUP BY over the window. They are the reference
// for the faster queries: both must give the same answers.

import (
	"context"
	"database/sql"
	"math"
	"strconv"
	"time"
)

func (r *Reader) refStats(ctx context.Context, hours int) (*Stats, error) {
	hours, err := checkHours(hours)
	if err != nil {
		return nil, err
	}
	since := r.since(hours)
	st := &Stats{
		Hours:            hours,
		Since:            Time{time.Unix(since, 0).UTC()},
		ByVersion:        map[string]int64{},
		ByMode:           map[string]int64{},
		ByImplementation: map[string]int64{},
		ByOffsetMethod:   map[string]int64{},
		DropsByReason:    map[string]int64{},
		TopTalkers:       []Talker{},
	}
	tx, err := r.readTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	var offMax, offMin, delMax *int64
	err = tx.QueryRowContext(ctx, `SELECT coalesce(sum(requests), 0), coalesce(sum(drops), 0),
		count(DISTINCT client), coalesce(sum(offset_count), 0), coalesce(sum(delay_count), 0),
		max(offset_max_ns), min(offset_min_ns), max(delay_max_ns)
		FROM client_hours WHERE hour >= ?`, since).Scan(&st.Requests, &st.Dropped,
		&st.UniqueClients, &st.AbsOffsetSeconds.Count, &st.DelaySeconds.Count, &offMax, &offMin, &delMax)
	if err != nil {
		return nil, explain(r.path, err)
	}
	st.Answered = st.Requests - st.Dropped

	// Histograms and tallies merge in Go.
	rows, err := tx.QueryContext(ctx, `SELECT offset_hist, delay_hist, tallies,
		offset_min_ns, offset_max_ns, delay_min_ns, delay_max_ns
		FROM client_hours WHERE hour >= ?`, since)
	if err != nil {
		return nil, explain(r.path, err)
	}
	var oh, dh hist
	tallies := sparseCounts{}
	for rows.Next() {
		var ob, db, tb []byte
		var omin, omax, dmin, dmax *int64
		if err := rows.Scan(&ob, &db, &tb, &omin, &omax, &dmin, &dmax); err != nil {
			rows.Close()
			return nil, err
		}
		if err := oh.merge(ob); err != nil {
			rows.Close()
			return nil, err
		}
		if err := dh.merge(db); err != nil {
			rows.Close()
			return nil, err
		}
		if err := mergeSparse(tallies, tb); err != nil {
			rows.Close()
			return nil, err
		}
		if omin != nil {
			oh.observeRange(absRange(omin, omax))
		}
		if dmin != nil {
			dh.observeRange(float64(*dmin), float64(*dmax))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	quant := func(h *hist, q *Quantiles, max float64) {
		if q.Count == 0 {
			return
		}
		for _, p := range []struct {
			q   float64
			dst **float64
		}{{0.5, &q.P50}, {0.9, &q.P90}, {0.99, &q.P99}} {
			if v, ok := h.quantile(p.q); ok {
				*p.dst = f64(v / 1e9)
			}
		}
		q.Max = f64(max / 1e9)
	}
	if offMax != nil && offMin != nil {
		quant(&oh, &st.AbsOffsetSeconds, math.Max(math.Abs(float64(*offMax)), math.Abs(float64(*offMin))))
	}
	if delMax != nil {
		quant(&dh, &st.DelaySeconds, float64(*delMax))
	}
	for k, n := range tallies {
		dim, v := k>>8, int64(k&0xff)
		switch dim {
		case tallyVersion:
			st.ByVersion[strconv.FormatInt(v, 10)] += int64(n)
		case tallyMode:
			st.ByMode[strconv.FormatInt(v, 10)] += int64(n)
		case tallyImplementation:
			st.ByImplementation[implName(v)] += int64(n)
		case tallyMethod:
			st.ByOffsetMethod[methodName(v)] += int64(n)
		case tallyDrop:
			if v != 0 {
				st.DropsByReason[dropName(v)] += int64(n)
			}
		}
	}

	trows, err := tx.QueryContext(ctx, `SELECT client, sum(requests) AS n, sum(drops)
		FROM client_hours WHERE hour >= ? GROUP BY client ORDER BY n DESC, client LIMIT 10`, since)
	if err != nil {
		return nil, explain(r.path, err)
	}
	for trows.Next() {
		var c []byte
		var t Talker
		if err := trows.Scan(&c, &t.Requests, &t.Drops); err != nil {
			trows.Close()
			return nil, err
		}
		t.ClientIP = blobAddr(c)
		st.TopTalkers = append(st.TopTalkers, t)
	}
	trows.Close()
	if err := trows.Err(); err != nil {
		return nil, err
	}

	// Bits 1 and 2 of methods: apparent and exchange.
	err = tx.QueryRowContext(ctx, `SELECT coalesce(sum(r), 0), count(*) - coalesce(sum(r), 0) FROM
		(SELECT max((methods & 6) != 0) AS r FROM client_hours WHERE hour >= ? GROUP BY client)`,
		since).Scan(&st.ClientsRevealingClock, &st.ClientsNotRevealingClock)
	if err != nil {
		return nil, explain(r.path, err)
	}
	return st, nil
}

func (r *Reader) refAnomalies(ctx context.Context, opts AnomalyOptions) (*Anomalies, error) {
	hours, err := checkHours(opts.Hours)
	if err != nil {
		return nil, err
	}
	delayThr, err := checkThreshold("delay_threshold", opts.DelayThreshold, DefaultDelayThreshold)
	if err != nil {
		return nil, err
	}
	offThr, err := checkThreshold("offset_threshold", opts.OffsetThreshold, DefaultOffsetThreshold)
	if err != nil {
		return nil, err
	}
	since := r.since(hours)
	out := &Anomalies{Hours: hours, Since: Time{time.Unix(since, 0).UTC()},
		DelayThresholdSeconds: delayThr, OffsetThresholdSeconds: offThr, Anomalies: []Anomaly{}}
	offNS := int64(math.Round(offThr * 1e9))
	delayNS := int64(math.Round(delayThr * 1e9))
	tx, err := r.readTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	type cand struct {
		a      Anomaly
		client []byte
		thr    int64
	}
	var cands []cand
	candThr := min(offNS, clockWrongNS-1)
	rows, err := tx.QueryContext(ctx, `SELECT h.client, sum(h.offset_count), min(h.offset_min_ns),
		max(h.offset_max_ns), c.last_offset_ns, c.last_offset_at_ns, c.last_method,
		c.last_seen_ns, c.last_implementation
		FROM client_hours h LEFT JOIN clients c ON c.client = h.client
		WHERE h.hour >= ? AND h.offset_count > 0
		GROUP BY h.client HAVING max(h.offset_max_ns) > ? OR min(h.offset_min_ns) < ?`,
		since, candThr, -candThr)
	if err != nil {
		return nil, explain(r.path, err)
	}
	for rows.Next() {
		var (
			cl                   []byte
			total, mn, mx        int64
			last, lastAt, method *int64
			lastSeen, impl       *int64
		)
		if err := rows.Scan(&cl, &total, &mn, &mx, &last, &lastAt, &method, &lastSeen, &impl); err != nil {
			rows.Close()
			return nil, err
		}
		worst := mx
		if -mn > mx {
			worst = mn
		}
		abs := worst
		if abs < 0 {
			abs = -abs
		}
		a := Anomaly{ClientIP: blobAddr(cl), Total: total, WorstSeconds: f64(seconds(worst)),
			LatestSeconds: secondsPtr(last), LatestAt: timePtrFromNS(lastAt)}
		fillClient(&a, method, lastSeen, impl)
		var thr int64
		switch {
		case abs >= clockWrongNS:
			a.Kind, thr = KindClockWrongHours, clockWrongNS-1
		case abs > offNS:
			a.Kind, thr = KindOffset, offNS
		default:
			continue
		}
		cands = append(cands, cand{a: a, client: cl, thr: thr})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range cands {
		c := &cands[i]
		var err error
		c.a.Count, err = refBeyond(ctx, tx, c.client, since, c.thr, false)
		if err != nil {
			return nil, explain(r.path, err)
		}
		out.Anomalies = append(out.Anomalies, c.a)
	}

	cands = cands[:0]
	rows, err = tx.QueryContext(ctx, `SELECT h.client, sum(h.delay_count), max(h.delay_max_ns),
		c.last_delay_ns, c.last_delay_at_ns, c.last_method, c.last_seen_ns, c.last_implementation
		FROM client_hours h LEFT JOIN clients c ON c.client = h.client
		WHERE h.hour >= ? AND h.delay_count > 0
		GROUP BY h.client HAVING max(h.delay_max_ns) > ?`, since, delayNS)
	if err != nil {
		return nil, explain(r.path, err)
	}
	for rows.Next() {
		var (
			cl                   []byte
			total, mx            int64
			last, lastAt, method *int64
			lastSeen, impl       *int64
		)
		if err := rows.Scan(&cl, &total, &mx, &last, &lastAt, &method, &lastSeen, &impl); err != nil {
			rows.Close()
			return nil, err
		}
		a := Anomaly{Kind: KindDelay, ClientIP: blobAddr(cl), Total: total, WorstSeconds: f64(seconds(mx)),
			LatestSeconds: secondsPtr(last), LatestAt: timePtrFromNS(lastAt)}
		fillClient(&a, method, lastSeen, impl)
		cands = append(cands, cand{a: a, client: cl, thr: delayNS})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range cands {
		c := &cands[i]
		var err error
		c.a.Count, err = refBeyond(ctx, tx, c.client, since, c.thr, true)
		if err != nil {
			return nil, explain(r.path, err)
		}
		out.Anomalies = append(out.Anomalies, c.a)
	}

	rows, err = tx.QueryContext(ctx, `SELECT h.client, sum(h.rate_limited), sum(h.kod), sum(h.requests),
		c.last_offset_ns, c.last_offset_at_ns, c.last_method, c.last_seen_ns, c.last_implementation
		FROM client_hours h LEFT JOIN clients c ON c.client = h.client
		WHERE h.hour >= ? GROUP BY h.client HAVING sum(h.rate_limited) > 0`, since)
	if err != nil {
		return nil, explain(r.path, err)
	}
	for rows.Next() {
		var (
			cl                   []byte
			a                    Anomaly
			last, lastAt, method *int64
			lastSeen, impl       *int64
		)
		if err := rows.Scan(&cl, &a.Count, &a.KoD, &a.Total, &last, &lastAt, &method, &lastSeen, &impl); err != nil {
			rows.Close()
			return nil, err
		}
		a.Kind, a.ClientIP = KindRateLimited, blobAddr(cl)
		a.LatestSeconds, a.LatestAt = secondsPtr(last), timePtrFromNS(lastAt)
		fillClient(&a, method, lastSeen, impl)
		out.Anomalies = append(out.Anomalies, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortAnomalies(out.Anomalies)
	return out, nil
}

// refBeyond is Anomaly.Count by its definition: hour by hour, the
// client's observations in histogram buckets wholly beyond thr, plus,
// where the hour's histogram has observations in thr's own bucket, the
// hour's raw rows beyond thr and below the bucket's end.
func refBeyond(ctx context.Context, tx *sql.Tx, client []byte, since, thr int64, delay bool) (int64, error) {
	col, raw := "offset_hist", `SELECT count(*) FROM observations WHERE client = ?1 AND time_ns >= ?2 AND time_ns < ?3
		AND (offset_ns > ?4 OR offset_ns < -?4) AND offset_ns < ?5 AND offset_ns > -?5`
	if delay {
		col, raw = "delay_hist", `SELECT count(*) FROM observations WHERE client = ?1 AND time_ns >= ?2 AND time_ns < ?3
			AND delay_ns > ?4 AND delay_ns < ?5`
	}
	rows, err := tx.QueryContext(ctx, `SELECT hour, `+col+` FROM client_hours WHERE client = ? AND hour >= ?`, client, since)
	if err != nil {
		return 0, err
	}
	type hourHist struct {
		hour int64
		h    sparseCounts
	}
	var hs []hourHist
	for rows.Next() {
		hh := hourHist{h: sparseCounts{}}
		var blob []byte
		if err := rows.Scan(&hh.hour, &blob); err != nil {
			rows.Close()
			return 0, err
		}
		if err := mergeSparse(hh.h, blob); err != nil {
			rows.Close()
			return 0, err
		}
		hs = append(hs, hh)
	}
	rows.Close()
	bs := histBucket(thr)
	_, hi := histBounds(bs)
	hiNS := int64(math.MaxInt64)
	if hi < float64(math.MaxInt64) {
		hiNS = int64(hi)
	}
	var n int64
	for _, hh := range hs {
		for k, c := range hh.h {
			if k > bs {
				n += int64(c)
			}
		}
		if hh.h[bs] == 0 {
			continue
		}
		var in int64
		if err := tx.QueryRowContext(ctx, raw, client, hh.hour*1e9, (hh.hour+3600)*1e9, thr, hiNS).Scan(&in); err != nil {
			return 0, err
		}
		n += in
	}
	return n, nil
}
