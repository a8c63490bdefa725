package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"

	"github.com/go-kit/log/level"

	"github.com/ntpexp/ntpexp/ntp"
)

const (
	sqlInsertObservation = `INSERT INTO observations (
	time_ns, client, client_port, local, local_port, length, reply_length,
	leap, version, mode, stratum, poll, precision, root_delay, root_dispersion,
	ref_id, reference, origin, receive, transmit, server_transmit, processing_ns,
	drop_reason, kod, method, offset_ns, delay_ns, interleaved, implementation,
	ext_fields, mac_length
) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`

	// In an UPSERT's DO UPDATE every right-hand side sees the old row, so
	// the CASEs below compare against the stored last_seen_ns.
	sqlUpsertClient = `INSERT INTO clients (
	client, first_seen_ns, last_seen_ns, requests, drops, last_version, last_mode,
	last_poll, last_implementation, last_local, last_offset_ns, last_method,
	last_offset_at_ns, last_delay_ns, last_delay_at_ns
) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (client) DO UPDATE SET
	first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
	last_seen_ns = max(last_seen_ns, excluded.last_seen_ns),
	requests = requests + excluded.requests,
	drops = drops + excluded.drops,
	last_version = CASE WHEN excluded.last_seen_ns >= last_seen_ns THEN excluded.last_version ELSE last_version END,
	last_mode = CASE WHEN excluded.last_seen_ns >= last_seen_ns THEN excluded.last_mode ELSE last_mode END,
	last_poll = CASE WHEN excluded.last_seen_ns >= last_seen_ns THEN excluded.last_poll ELSE last_poll END,
	last_implementation = CASE WHEN excluded.last_seen_ns >= last_seen_ns THEN excluded.last_implementation ELSE last_implementation END,
	last_local = CASE WHEN excluded.last_seen_ns >= last_seen_ns THEN excluded.last_local ELSE last_local END,
	last_offset_ns = CASE WHEN excluded.last_offset_at_ns >= coalesce(last_offset_at_ns, -9223372036854775808) THEN excluded.last_offset_ns ELSE last_offset_ns END,
	last_method = CASE WHEN excluded.last_offset_at_ns >= coalesce(last_offset_at_ns, -9223372036854775808) THEN excluded.last_method ELSE last_method END,
	last_offset_at_ns = CASE WHEN excluded.last_offset_at_ns >= coalesce(last_offset_at_ns, -9223372036854775808) THEN excluded.last_offset_at_ns ELSE last_offset_at_ns END,
	last_delay_ns = CASE WHEN excluded.last_delay_at_ns >= coalesce(last_delay_at_ns, -9223372036854775808) THEN excluded.last_delay_ns ELSE last_delay_ns END,
	last_delay_at_ns = CASE WHEN excluded.last_delay_at_ns >= coalesce(last_delay_at_ns, -9223372036854775808) THEN excluded.last_delay_at_ns ELSE last_delay_at_ns END`

	sqlSelectHourBlobs = `SELECT offset_hist, delay_hist, tallies FROM client_hours WHERE hour = ? AND client = ?`

	// The blobs arrive already merged with the stored ones (read above in
	// the same transaction); the scalars merge here. Multi-argument min and
	// max return NULL if any argument is NULL, hence the coalesces.
	sqlUpsertHour = `INSERT INTO client_hours (
	hour, client, requests, drops, rate_limited, kod,
	offset_count, offset_min_ns, offset_max_ns, offset_sum_ns,
	delay_count, delay_min_ns, delay_max_ns, delay_sum_ns,
	offset_hist, delay_hist, tallies, versions, implementations, methods
) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (hour, client) DO UPDATE SET
	requests = requests + excluded.requests,
	drops = drops + excluded.drops,
	rate_limited = rate_limited + excluded.rate_limited,
	kod = kod + excluded.kod,
	offset_count = offset_count + excluded.offset_count,
	offset_min_ns = min(coalesce(offset_min_ns, excluded.offset_min_ns), coalesce(excluded.offset_min_ns, offset_min_ns)),
	offset_max_ns = max(coalesce(offset_max_ns, excluded.offset_max_ns), coalesce(excluded.offset_max_ns, offset_max_ns)),
	offset_sum_ns = coalesce(offset_sum_ns, 0) + coalesce(excluded.offset_sum_ns, 0),
	delay_count = delay_count + excluded.delay_count,
	delay_min_ns = min(coalesce(delay_min_ns, excluded.delay_min_ns), coalesce(excluded.delay_min_ns, delay_min_ns)),
	delay_max_ns = max(coalesce(delay_max_ns, excluded.delay_max_ns), coalesce(excluded.delay_max_ns, delay_max_ns)),
	delay_sum_ns = coalesce(delay_sum_ns, 0) + coalesce(excluded.delay_sum_ns, 0),
	offset_hist = excluded.offset_hist,
	delay_hist = excluded.delay_hist,
	tallies = excluded.tallies,
	versions = versions | excluded.versions,
	implementations = implementations | excluded.implementations,
	methods = methods | excluded.methods`
)

// writer is the state of the writer goroutine.
type writer struct {
	s   *Store
	ctx context.Context // cancelled when Close gives up
	end context.CancelFunc

	insObs, upClient, selHour, upHour *sql.Stmt

	batch   []ntp.Observation // the batch being written; kept on failure
	pending int               // rows in batch not yet committed

	// Per-batch aggregation, reused across batches.
	clients    map[netip.Addr]int
	clientAggs []clientAgg
	hours      map[hourKey]int
	hourAggs   []hourAgg
	keys       []int

	lastFlush time.Time
	retryAt   time.Time
	backoff   time.Duration
	failing   bool

	cleanup     *cleanupRun
	nextCleanup time.Time

	droppedLogged uint64
	lastDropLog   time.Time
	lastErrLog    time.Time
}

type hourKey struct {
	hour   int64 // Unix seconds of the hour's start
	client netip.Addr
}

type clientAgg struct {
	client        netip.Addr
	first, last   int64
	requests      int64
	drops         int64
	newest        int // index in batch of the newest observation
	newestOffset  int // newest with an offset, -1 if none
	newestDelay   int // newest with a delay, -1 if none
	offsetAt      int64
	delayAt       int64
	newestVersion int64
}

type hourAgg struct {
	key                               hourKey
	requests, drops, rateLimited, kod int64
	offCount                          int64
	offMin, offMax                    int64
	offSum                            float64
	delayCount                        int64
	delayMin, delayMax                int64
	delaySum                          float64
	offHist, delayHist, tallies       sparseCounts
	versions, impls, methods          int64
}

func newWriter(ctx context.Context, s *Store) (*writer, error) {
	w := &writer{
		s:       s,
		batch:   make([]ntp.Observation, s.cfg.BatchSize),
		clients: make(map[netip.Addr]int),
		hours:   make(map[hourKey]int),
	}
	var err error
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = s.db.PrepareContext(ctx, q)
		return st
	}
	w.insObs = prep(sqlInsertObservation)
	w.upClient = prep(sqlUpsertClient)
	w.selHour = prep(sqlSelectHourBlobs)
	w.upHour = prep(sqlUpsertHour)
	if err != nil {
		w.closeStmts()
		return nil, err
	}
	w.ctx, w.end = context.WithCancel(context.Background())
	now := time.Now()
	w.lastFlush = now
	w.nextCleanup = now.Add(s.cfg.firstCleanup)
	return w, nil
}

func (w *writer) closeStmts() {
	for _, st := range []*sql.Stmt{w.insObs, w.upClient, w.selHour, w.upHour} {
		if st != nil {
			st.Close()
		}
	}
}

// run is the writer goroutine: it writes batches, runs maintenance
// requests and retention, and on Close drains the queue.
func (w *writer) run() {
	s := w.s
	defer close(s.done)
	defer w.end()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopping := false
	for {
		select {
		case <-s.stop:
			stopping = true
		default:
		}
		select {
		case <-s.abort:
			w.finish(true)
			return
		default:
		}
		now := time.Now()
		w.logDrops(now)

		// Write whatever is due, one batch per iteration so that requests
		// and stop are noticed between batches.
		if w.pending > 0 || s.QueueLength() > 0 {
			due := stopping || w.pending > 0 || s.QueueLength() >= s.cfg.BatchSize || !now.Before(w.lastFlush.Add(s.cfg.FlushInterval))
			if due && !now.Before(w.retryAt) {
				if w.flush() {
					// Under sustained load the queue never empties: let a
					// request and a retention chunk in between batches.
					select {
					case r := <-s.reqs:
						r.reply <- r.fn(r.ctx)
					default:
					}
					if w.cleanup != nil && !stopping {
						w.cleanupStep()
					}
					continue
				}
			}
		} else if !now.Before(w.lastFlush.Add(s.cfg.FlushInterval)) {
			w.lastFlush = now
		}
		if stopping && w.pending == 0 && s.QueueLength() == 0 {
			w.finish(false)
			return
		}

		// Retention runs in chunks between batches.
		if w.cleanup == nil && !stopping && !now.Before(w.nextCleanup) {
			w.startCleanup(nil)
		}
		if w.cleanup != nil && !w.failing && !stopping {
			w.cleanupStep()
			continue
		}

		// Sleep until the next deadline or event.
		next := w.lastFlush.Add(s.cfg.FlushInterval)
		if w.pending > 0 || w.failing {
			next = w.retryAt
		}
		if !stopping && w.nextCleanup.Before(next) {
			next = w.nextCleanup
		}
		d := time.Until(next)
		if d < time.Millisecond {
			d = time.Millisecond
		}
		if stopping && d > 100*time.Millisecond {
			d = 100 * time.Millisecond
		}
		timer.Reset(d)
		var stopCh <-chan struct{} = s.stop
		if stopping {
			stopCh = nil
		}
		select {
		case <-s.kick:
		case <-timer.C:
		case <-stopCh:
		case <-s.abort:
		case r := <-s.reqs:
			r.reply <- r.fn(r.ctx)
		}
	}
}

// flush writes one batch (the pending one, or up to BatchSize rows from
// the queue). It reports whether it made progress.
func (w *writer) flush() bool {
	s := w.s
	if w.pending == 0 {
		w.pending = s.take(w.batch)
		if w.pending == 0 {
			w.lastFlush = time.Now()
			return false
		}
	}
	start := time.Now()
	err := w.write(w.batch[:w.pending])
	if err == nil {
		d := time.Since(start)
		s.rowsWritten.Add(uint64(w.pending))
		if fo := s.cfg.FlushObserver; fo != nil {
			fo.ObserveFlush(d, w.pending)
		}
		if w.failing {
			level.Info(s.logger).Log("msg", "database writes resumed", "path", s.path)
		}
		clear(w.batch[:w.pending])
		w.pending = 0
		w.failing = false
		w.backoff = 0
		w.retryAt = time.Time{}
		w.lastFlush = time.Now()
		return true
	}
	// Keep the batch and retry later; the queue keeps absorbing and
	// counting drops when full.
	busy := isBusy(err)
	if !busy {
		s.writeErrors.Add(1)
	}
	if w.backoff == 0 {
		w.backoff = s.cfg.retryMin
	} else {
		w.backoff = min(2*w.backoff, s.cfg.retryMax)
	}
	if busy {
		w.backoff = min(w.backoff, time.Second)
	}
	w.retryAt = time.Now().Add(w.backoff)
	w.failing = true
	if now := time.Now(); !busy && now.Sub(w.lastErrLog) >= 10*time.Second {
		w.lastErrLog = now
		level.Error(s.logger).Log("msg", "database write failed, will retry", "path", s.path, "rows", w.pending, "retry_in", w.backoff, "err", err)
	}
	return false
}

func (w *writer) logDrops(now time.Time) {
	d := w.s.rowsDropped.Load()
	if d > w.droppedLogged && now.Sub(w.lastDropLog) >= w.s.cfg.dropLogPeriod {
		level.Warn(w.s.logger).Log("msg", "observations dropped, database queue full", "dropped", d-w.droppedLogged, "dropped_total", d, "queue_capacity", len(w.s.ring))
		w.droppedLogged = d
		w.lastDropLog = now
	}
}

// finish closes the database. With abandon, rows still queued or pending
// are counted as dropped and reported.
func (w *writer) finish(abandon bool) {
	s := w.s
	lost := 0
	if abandon {
		lost = w.pending
		w.pending = 0
		s.mu.Lock()
		lost += s.count
		s.count = 0
		s.mu.Unlock()
		s.rowsDropped.Add(uint64(lost))
	}
	if w.cleanup != nil {
		w.cleanup.result.err = ErrClosed
		w.cleanup.notify()
		w.cleanup = nil
	}
	if !abandon {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := s.db.ExecContext(ctx, "PRAGMA optimize"); err != nil {
			level.Warn(s.logger).Log("msg", "PRAGMA optimize failed", "err", err)
		}
		cancel()
	}
	w.closeStmts()
	err := s.db.Close()
	switch {
	case lost > 0:
		s.closeErr = fmt.Errorf("database %s: closed without writing %d observations: %w", s.path, lost, errAborted)
	case err != nil:
		s.closeErr = fmt.Errorf("database %s: close: %w", s.path, err)
	}
	level.Info(s.logger).Log("msg", "database closed", "path", s.path, "rows_written", s.rowsWritten.Load(), "rows_dropped", s.rowsDropped.Load(), "lost_on_close", lost)
}

// addrBlob returns the stored form of an address: 4 bytes for IPv4, 16
// for IPv6, nil for the invalid address.
func addrBlob(a netip.Addr) []byte {
	if !a.IsValid() {
		return nil
	}
	return a.Unmap().AsSlice()
}

func hourOf(ns int64) int64 {
	const h = int64(time.Hour)
	q := ns / h
	if ns%h < 0 {
		q--
	}
	return q * 3600
}

func nullInt(v int64, ok bool) any {
	if !ok {
		return nil
	}
	return v
}

// write commits one batch in one transaction: raw rows, then the client
// summaries and hourly rollups it changes.
func (w *writer) write(batch []ntp.Observation) error {
	w.aggregate(batch)
	ctx := w.ctx
	tx, err := w.s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins := tx.StmtContext(ctx, w.insObs)
	for i := range batch {
		o := &batch[i]
		ca := o.Client.Addr()
		_, err := ins.ExecContext(ctx,
			o.Received.UnixNano(), addrBlob(ca), int64(o.Client.Port()),
			addrBlob(o.Local.Addr()), int64(o.Local.Port()),
			int64(o.Length), int64(o.ReplyLength),
			int64(o.Leap), int64(o.Version), int64(o.Mode), int64(o.Stratum),
			int64(o.Poll), int64(o.Precision),
			int64(o.RootDelay), int64(o.RootDispersion), int64(o.RefID),
			int64(o.Reference), int64(o.Origin), int64(o.Receive), int64(o.Transmit),
			int64(o.ServerTransmit), int64(o.Processing),
			int64(o.Drop), boolInt(o.KoD), int64(o.Method),
			nullInt(int64(o.Offset), o.Method != ntp.MethodNone),
			nullInt(int64(o.Delay), o.Method == ntp.MethodExchange),
			boolInt(o.Interleaved), int64(o.Implementation),
			int64(o.Extensions.Fields), int64(o.Extensions.MACLength),
		)
		if err != nil {
			return err
		}
	}
	up := tx.StmtContext(ctx, w.upClient)
	for i := range w.clientAggs {
		c := &w.clientAggs[i]
		n := &batch[c.newest]
		var off, offAt, method, delay, delayAt any
		method = int64(0)
		if c.newestOffset >= 0 {
			o := &batch[c.newestOffset]
			off, offAt, method = int64(o.Offset), c.offsetAt, int64(o.Method)
		}
		if c.newestDelay >= 0 {
			delay, delayAt = int64(batch[c.newestDelay].Delay), c.delayAt
		}
		_, err := up.ExecContext(ctx, addrBlob(c.client), c.first, c.last, c.requests, c.drops,
			int64(n.Version), int64(n.Mode), int64(n.Poll), int64(n.Implementation), addrBlob(n.Local.Addr()),
			off, method, offAt, delay, delayAt)
		if err != nil {
			return err
		}
	}
	sel := tx.StmtContext(ctx, w.selHour)
	uph := tx.StmtContext(ctx, w.upHour)
	var offBuf, delayBuf, talBuf []byte
	for i := range w.hourAggs {
		h := &w.hourAggs[i]
		cb := addrBlob(h.key.client)
		var ob, db, tb []byte
		err := sel.QueryRowContext(ctx, h.key.hour, cb).Scan(&ob, &db, &tb)
		switch {
		case err == sql.ErrNoRows:
		case err != nil:
			return err
		default:
			if err := mergeSparse(h.offHist, ob); err != nil {
				return err
			}
			if err := mergeSparse(h.delayHist, db); err != nil {
				return err
			}
			if err := mergeSparse(h.tallies, tb); err != nil {
				return err
			}
		}
		offBuf, w.keys = h.offHist.appendEncoded(offBuf[:0], w.keys)
		delayBuf, w.keys = h.delayHist.appendEncoded(delayBuf[:0], w.keys)
		talBuf, w.keys = h.tallies.appendEncoded(talBuf[:0], w.keys)
		var offSum, delaySum any
		if h.offCount > 0 {
			offSum = h.offSum
		}
		if h.delayCount > 0 {
			delaySum = h.delaySum
		}
		_, err = uph.ExecContext(ctx, h.key.hour, cb, h.requests, h.drops, h.rateLimited, h.kod,
			h.offCount, nullInt(h.offMin, h.offCount > 0), nullInt(h.offMax, h.offCount > 0), offSum,
			h.delayCount, nullInt(h.delayMin, h.delayCount > 0), nullInt(h.delayMax, h.delayCount > 0), delaySum,
			nonNilBlob(offBuf), nonNilBlob(delayBuf), nonNilBlob(talBuf), h.versions, h.impls, h.methods)
		if err != nil {
			return err
		}
	}
	return tx.Commit()
}

// nonNilBlob keeps empty blobs empty rather than NULL (the columns are
// NOT NULL).
func nonNilBlob(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// aggregate computes the batch's per-client and per-hour contributions.
func (w *writer) aggregate(batch []ntp.Observation) {
	clear(w.clients)
	clear(w.hours)
	w.clientAggs = w.clientAggs[:0]
	for i := range w.hourAggs {
		h := &w.hourAggs[i]
		clear(h.offHist)
		clear(h.delayHist)
		clear(h.tallies)
	}
	nh := 0
	for i := range batch {
		o := &batch[i]
		t := o.Received.UnixNano()
		addr := o.Client.Addr()
		dropped := o.Drop != ntp.DropNone

		ci, ok := w.clients[addr]
		if !ok {
			ci = len(w.clientAggs)
			w.clients[addr] = ci
			w.clientAggs = append(w.clientAggs, clientAgg{client: addr, first: t, last: t, newest: i, newestOffset: -1, newestDelay: -1})
		}
		c := &w.clientAggs[ci]
		c.requests++
		if dropped {
			c.drops++
		}
		c.first = min(c.first, t)
		if t >= c.last {
			c.last = t
			c.newest = i
		}
		if o.Method != ntp.MethodNone && (c.newestOffset < 0 || t >= c.offsetAt) {
			c.newestOffset, c.offsetAt = i, t
		}
		if o.Method == ntp.MethodExchange && (c.newestDelay < 0 || t >= c.delayAt) {
			c.newestDelay, c.delayAt = i, t
		}

		k := hourKey{hour: hourOf(t), client: addr}
		hi, ok := w.hours[k]
		if !ok {
			hi = nh
			nh++
			w.hours[k] = hi
			if hi == len(w.hourAggs) {
				w.hourAggs = append(w.hourAggs, hourAgg{offHist: sparseCounts{}, delayHist: sparseCounts{}, tallies: sparseCounts{}})
			}
			h := &w.hourAggs[hi]
			oh, dh, th := h.offHist, h.delayHist, h.tallies
			*h = hourAgg{key: k, offHist: oh, delayHist: dh, tallies: th}
		}
		h := &w.hourAggs[hi]
		h.requests++
		if dropped {
			h.drops++
		}
		if o.Drop == ntp.DropRateLimit {
			h.rateLimited++
		}
		if o.KoD {
			h.kod++
		}
		if o.Method != ntp.MethodNone {
			v := int64(o.Offset)
			if h.offCount == 0 {
				h.offMin, h.offMax = v, v
			} else {
				h.offMin, h.offMax = min(h.offMin, v), max(h.offMax, v)
			}
			h.offCount++
			h.offSum += float64(v)
			h.offHist.add(histBucket(v), 1)
		}
		if o.Method == ntp.MethodExchange {
			v := int64(o.Delay)
			if h.delayCount == 0 {
				h.delayMin, h.delayMax = v, v
			} else {
				h.delayMin, h.delayMax = min(h.delayMin, v), max(h.delayMax, v)
			}
			h.delayCount++
			h.delaySum += float64(v)
			h.delayHist.add(histBucket(v), 1)
		}
		h.tallies.add(tallyKey(tallyVersion, o.Version), 1)
		h.tallies.add(tallyKey(tallyMode, o.Mode), 1)
		h.tallies.add(tallyKey(tallyImplementation, uint8(o.Implementation)), 1)
		h.tallies.add(tallyKey(tallyDrop, uint8(o.Drop)), 1)
		h.tallies.add(tallyKey(tallyMethod, uint8(o.Method)), 1)
		h.versions |= 1 << (o.Version & 63)
		h.impls |= 1 << (uint8(o.Implementation) & 63)
		h.methods |= 1 << (uint8(o.Method) & 63)
	}
	w.hourAggs = w.hourAggs[:nh]
}
