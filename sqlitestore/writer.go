package sqlitestore

import (
	"bytes"
	"cmp"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
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
	// the CASEs below compare against the stored last_seen_ns. The merge
	// is done here rather than in Go so that the clients table needs no
	// cache: one statement per distinct client per transaction.
	sqlUpsertClient = `INSERT INTO clients (
	client, first_seen_ns, last_seen_ns, requests, drops, last_version, last_mode,
	last_poll, last_implementation, last_local, last_offset_ns, last_method,
	last_offset_at_ns, last_delay_ns, last_delay_at_ns,
	min_offset_ns, max_offset_ns, max_delay_ns, offset_count, delay_count, rate_limited, kod
) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
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
	last_delay_at_ns = CASE WHEN excluded.last_delay_at_ns >= coalesce(last_delay_at_ns, -9223372036854775808) THEN excluded.last_delay_at_ns ELSE last_delay_at_ns END,
	min_offset_ns = min(coalesce(min_offset_ns, excluded.min_offset_ns), coalesce(excluded.min_offset_ns, min_offset_ns)),
	max_offset_ns = max(coalesce(max_offset_ns, excluded.max_offset_ns), coalesce(excluded.max_offset_ns, max_offset_ns)),
	max_delay_ns = max(coalesce(max_delay_ns, excluded.max_delay_ns), coalesce(excluded.max_delay_ns, max_delay_ns)),
	offset_count = offset_count + excluded.offset_count,
	delay_count = delay_count + excluded.delay_count,
	rate_limited = rate_limited + excluded.rate_limited,
	kod = kod + excluded.kod`

	// hourColumns are client_hours' value columns in hourState order.
	hourColumns = `requests, drops, rate_limited, kod,
	offset_count, offset_min_ns, offset_max_ns, offset_sum_ns,
	delay_count, delay_min_ns, delay_max_ns, delay_sum_ns,
	offset_hist, delay_hist, tallies, versions, implementations, methods`

	sqlSelectHour = `SELECT ` + hourColumns + ` FROM client_hours WHERE hour = ? AND client = ?`

	// sqlHourHasRows tells whether any rollup row of an hour exists.
	sqlHourHasRows = `SELECT EXISTS (SELECT 1 FROM client_hours WHERE hour = ?)`

	// The writer merges rollup rows in Go (see rollupCache) and writes
	// the whole merged row. (An UPDATE for rows known to exist measured
	// no faster than this upsert, which cannot lose a row.)
	sqlUpsertHour = `INSERT INTO client_hours (hour, client, ` + hourColumns + `)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (hour, client) DO UPDATE SET
	requests = excluded.requests, drops = excluded.drops,
	rate_limited = excluded.rate_limited, kod = excluded.kod,
	offset_count = excluded.offset_count, offset_min_ns = excluded.offset_min_ns,
	offset_max_ns = excluded.offset_max_ns, offset_sum_ns = excluded.offset_sum_ns,
	delay_count = excluded.delay_count, delay_min_ns = excluded.delay_min_ns,
	delay_max_ns = excluded.delay_max_ns, delay_sum_ns = excluded.delay_sum_ns,
	offset_hist = excluded.offset_hist, delay_hist = excluded.delay_hist,
	tallies = excluded.tallies, versions = excluded.versions,
	implementations = excluded.implementations, methods = excluded.methods`
)

const (
	totalsColumns = `clients, requests, drops, offset_count, offset_min_ns, offset_max_ns,
	abs_offset_lo_ns, abs_offset_hi_ns, delay_count, delay_min_ns, delay_max_ns,
	offset_hist, delay_hist, tallies`

	sqlSelectTotals = `SELECT ` + totalsColumns + ` FROM hours WHERE hour = ?`

	sqlUpsertTotals = `INSERT INTO hours (hour, ` + totalsColumns + `)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (hour) DO UPDATE SET
	clients = excluded.clients, requests = excluded.requests, drops = excluded.drops,
	offset_count = excluded.offset_count, offset_min_ns = excluded.offset_min_ns,
	offset_max_ns = excluded.offset_max_ns, abs_offset_lo_ns = excluded.abs_offset_lo_ns,
	abs_offset_hi_ns = excluded.abs_offset_hi_ns, delay_count = excluded.delay_count,
	delay_min_ns = excluded.delay_min_ns, delay_max_ns = excluded.delay_max_ns,
	offset_hist = excluded.offset_hist, delay_hist = excluded.delay_hist, tallies = excluded.tallies`
)

// Transaction sizing. BatchSize is the queue length that triggers a
// write; when the queue holds several batches the writer takes all whole
// batches in one transaction, up to maxTxRows, because per-transaction
// costs (the commit, the WAL frames of the pages every batch touches, one
// client and one rollup row per distinct client) then amortise over more
// rows. That is what lets the writer catch up when it falls behind.
const defaultMaxTxRows = 65536

// defaultTxGap is the shortest time between the starts of two
// transactions while the queue is less than half full. Most of a
// transaction's cost is per distinct client, not per row: the page of the
// (client, time_ns) index holding the client's newest entries, its client
// summary and rollup rows, all rewritten and appended to the WAL at every
// commit. Back-to-back transactions under load held about 3,000 rows from
// 1,024 clients; waiting for 250 ms of requests (about 20,000 rows at
// 80,000 requests/s) cut the server's CPU per stored request by a
// quarter to a third (docs/performance.md). Rows wait at most this much
// longer, well within FlushInterval, which bounds what a crash loses
// either way.
const defaultTxGap = 250 * time.Millisecond

// defaultRollupCacheRows bounds the rollup cache (about 200 bytes a row).
const defaultRollupCacheRows = 1 << 17

// writer is the state of the writer goroutine.
type writer struct {
	s   *Store
	ctx context.Context // cancelled when Close gives up
	end context.CancelFunc

	batch   []ntp.Observation // the batch being written; kept on failure
	pending int               // rows in batch not yet committed

	// Per-transaction aggregation, reused across transactions.
	clients    map[netip.Addr]int32
	clientAggs []clientAgg
	hourIdx    map[hourRef]int32
	hourAggs   []hourChain
	dayIdx     map[hourRef]int32 // hour holds the day
	dayAggs    []dayAgg          // of late rows: hours in [daysFrom, daysTo)

	// The daily rollups hold the hours in [daysFrom, daysTo) (days.go).
	daysFrom, daysTo int64
	daysBackfilled   bool
	rollRetryAt      time.Time
	next             []int32 // next row of the same (hour, client), -1 at the end
	rowNext          []int32 // next row of the same client, -1 at the end
	order            []int32 // clientAggs indices sorted by stored address
	rank             []int32 // a clientAggs index's position in order

	rollups rollupCache
	pace    pacer

	// Bind buffers, reused.
	obsArgs, keyArgs, oneArg []driver.NamedValue
	binder                   *rowBinder
	ps                       params
	keys                     []byte // the clients' stored addresses (clientAgg.key)
	dest                     []driver.Value
	offP, delayP, tallyP     countPairs
	blob                     []byte
	dataVersion              int64

	lastFlush time.Time
	lastTx    time.Time // when the last transaction started
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

// hourRef is an hour and a client's index in clientAggs.
type hourRef struct {
	hour   int64
	client int32
}

type clientAgg struct {
	client       netip.Addr
	key          []byte // the stored form of client, in writer.keys
	head, tail   int32  // the client's rows, chained by rowNext
	first, last  int64
	requests     int64
	drops        int64
	newest       int32 // index in batch of the newest observation
	newestOffset int32 // newest with an offset, -1 if none
	newestDelay  int32 // newest with a delay, -1 if none
	offsetAt     int64
	delayAt      int64
	// Extremes over the batch (valid when newestOffset, newestDelay >= 0).
	offMin, offMax, delayMax          int64
	offCount, delayCount, rateLimited int64
	kod                               int64
}

// dayAgg is a transaction's contribution to one client_days row.
type dayAgg struct {
	day                               int64 // Unix seconds of the UTC day's start
	client                            int32 // index in clientAggs
	requests, drops, rateLimited, kod int64
	offCount, offMin, offMax          int64
	delayCount, delayMin, delayMax    int64
	offHist, delayHist                countPairs
}

// add counts one observation.
func (d *dayAgg) add(o *ntp.Observation) {
	d.requests++
	if o.Drop != ntp.DropNone {
		d.drops++
	}
	if o.Drop == ntp.DropRateLimit {
		d.rateLimited++
	}
	if o.KoD {
		d.kod++
	}
	if o.Method != ntp.MethodNone {
		v := int64(o.Offset)
		widen(&d.offCount, &d.offMin, &d.offMax, v)
		d.offHist.add(histBucket(v), 1)
	}
	if o.Method == ntp.MethodExchange {
		v := int64(o.Delay)
		widen(&d.delayCount, &d.delayMin, &d.delayMax, v)
		d.delayHist.add(histBucket(v), 1)
	}
}

// hourChain lists a transaction's rows of one (hour, client) through next.
type hourChain struct {
	hour       int64
	client     int32
	head, tail int32
}

func newWriter(ctx context.Context, s *Store) (*writer, error) {
	n := max(s.cfg.BatchSize, s.cfg.maxTxRows)
	n = min(n, s.cfg.QueueSize)
	w := &writer{
		s:       s,
		batch:   make([]ntp.Observation, n),
		next:    make([]int32, n),
		rowNext: make([]int32, n),
		clients: make(map[netip.Addr]int32),
		hourIdx: make(map[hourRef]int32),
		dayIdx:  make(map[hourRef]int32),
		rollups: newRollupCache(s.cfg.rollupCacheRows),
		obsArgs: namedValues(31),
		binder:  newRowBinder(),
		keyArgs: namedValues(2),
		oneArg:  namedValues(1),
		dest:    make([]driver.Value, 18),
	}
	if err := w.loadDays(ctx); err != nil {
		return nil, err
	}
	// Check the statements once, so a schema mismatch fails Open.
	err := w.withConn(ctx, func(c driver.Conn) error {
		st, err := prepareStmts(c)
		if err == nil {
			st.close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	w.pace = newPacer(s.cfg, s.QueueLength)
	w.ctx, w.end = context.WithCancel(context.Background())
	now := time.Now()
	w.lastFlush = now
	w.nextCleanup = now.Add(s.cfg.firstCleanup)
	return w, nil
}

func namedValues(n int) []driver.NamedValue {
	v := make([]driver.NamedValue, n)
	for i := range v {
		v[i].Ordinal = i + 1
	}
	return v
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
			w.pace.off = true
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

		// Write whatever is due, one transaction per iteration so that
		// requests and stop are noticed between transactions.
		if q := s.QueueLength(); w.pending > 0 || q > 0 {
			timeUp := !now.Before(w.lastFlush.Add(s.cfg.FlushInterval))
			due := stopping || w.pending > 0 || w.ready(now, q) || timeUp
			if due && !now.Before(w.retryAt) {
				if w.flush(stopping || timeUp) {
					// Under sustained load the queue never empties: let a
					// request and a retention chunk in between batches.
					select {
					case r := <-s.reqs:
						w.serve(r)
					default:
					}
					if w.cleanup != nil && !stopping {
						w.cleanupStep()
					} else if !stopping && w.rollDue() {
						w.roll()
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
		// So do the daily rollups' steps.
		if !w.failing && !stopping && w.rollDue() {
			w.roll()
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
		if g := w.lastTx.Add(s.cfg.txGap); w.pending == 0 && !w.failing && s.QueueLength() >= s.cfg.BatchSize && g.Before(next) {
			next = g
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
			w.serve(r)
		}
	}
}

// ready reports whether q queued rows make a transaction due: whole
// batches, once defaultTxGap has passed since the last one started (so
// that transactions under load hold more rows), or at once when the queue
// reaches s.full.
func (w *writer) ready(now time.Time, q int) bool {
	s := w.s
	return q >= s.full || (q >= s.cfg.BatchSize && !now.Before(w.lastTx.Add(s.cfg.txGap)))
}

// serve runs a request. Requests may change the database behind the
// rollup cache's back, so it is dropped afterwards.
func (w *writer) serve(r request) {
	err := r.fn(r.ctx)
	w.rollups.reset()
	r.reply <- err
}

// flush writes one transaction: the pending rows, or else whole batches
// from the queue (with all, everything queued), at most len(w.batch). It
// reports whether it made progress.
func (w *writer) flush(all bool) bool {
	s := w.s
	if w.pending == 0 {
		n := s.QueueLength()
		if !all {
			n -= n % s.cfg.BatchSize
		}
		w.pending = s.take(w.batch[:min(n, len(w.batch))])
		if w.pending == 0 {
			w.lastFlush = time.Now()
			return false
		}
	}
	start := time.Now()
	w.lastTx = start
	err := w.write(w.batch[:w.pending])
	if err == nil {
		// The work, not the pauses between its pieces.
		d := time.Since(start) - w.pace.paused
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
	err := s.db.Close()
	s.lock.release()
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

// addrValue is addrBlob as a bind value (SQL NULL for the invalid address).
func addrValue(a netip.Addr) driver.Value {
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

// dayOf returns the start of the UTC day holding hour (both Unix seconds).
func dayOf(hour int64) int64 {
	const d = 86400
	q := hour / d
	if hour%d < 0 {
		q--
	}
	return q * d
}

func nullInt(v int64, ok bool) any {
	if !ok {
		return nil
	}
	return v
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// stmts are the writer's statements, prepared on the driver connection
// for one transaction.
type stmts struct {
	insObs, upClient, selHour, hourHasRows, upHour, selTotals, upTotals, upDay, dataVersion driver.Stmt
	// C handles of the upserts (nil: the driver path), see params.
	hUpClient, hUpHour, hUpTotals, hUpDay *rawStmt
}

func prepareStmts(c driver.Conn) (*stmts, error) {
	st := &stmts{}
	var err error
	prep := func(q string) driver.Stmt {
		if err != nil {
			return nil
		}
		var p driver.Stmt
		p, err = c.Prepare(q)
		return p
	}
	st.insObs = prep(sqlInsertObservation)
	st.upClient = prep(sqlUpsertClient)
	st.selHour = prep(sqlSelectHour)
	st.hourHasRows = prep(sqlHourHasRows)
	st.upHour = prep(sqlUpsertHour)
	st.selTotals = prep(sqlSelectTotals)
	st.upTotals = prep(sqlUpsertTotals)
	st.upDay = prep(sqlUpsertDay)
	st.dataVersion = prep("PRAGMA data_version")
	if err != nil {
		st.close()
		return nil, err
	}
	st.hUpClient, st.hUpHour, st.hUpTotals, st.hUpDay = handleOf(st.upClient), handleOf(st.upHour), handleOf(st.upTotals), handleOf(st.upDay)
	return st, nil
}

func (st *stmts) close() {
	for _, p := range []driver.Stmt{st.insObs, st.upClient, st.selHour, st.hourHasRows, st.upHour, st.selTotals, st.upTotals, st.upDay, st.dataVersion} {
		if p != nil {
			p.Close()
		}
	}
}

// The statements run with a context that is never cancelled: go-sqlite3
// then executes them synchronously instead of starting a goroutine per
// statement to watch the context. Close's give-up is still honoured: the
// transaction's BEGIN (where a lock is waited for) takes w.ctx, and the
// row loop checks it.
var stmtCtx = context.Background()

// execStmt runs a statement that returns no rows. It goes through the
// driver's query path, which binds all arguments and takes the first step
// in one cgo call where the exec path makes a cgo call per argument. (The
// Next makes sure the statement has run to its end whether the driver
// steps at Query, as go-sqlite3 does, or only at Next.)
func execStmt(st driver.Stmt, args []driver.NamedValue) error {
	rows, err := st.(driver.StmtQueryContext).QueryContext(stmtCtx, args)
	if err != nil {
		return err
	}
	err = rows.Next(nil)
	cerr := rows.Close()
	if err != io.EOF {
		if err == nil {
			err = errors.New("sqlitestore: write statement returned a row")
		}
		return err
	}
	return cerr
}

// queryRow reads the first row of st into dest and reports whether there
// was one.
func queryRow(st driver.Stmt, args []driver.NamedValue, dest []driver.Value) (bool, error) {
	rows, err := st.(driver.StmtQueryContext).QueryContext(stmtCtx, args)
	if err != nil {
		return false, err
	}
	err = rows.Next(dest)
	cerr := rows.Close()
	switch {
	case err == io.EOF:
		return false, cerr
	case err != nil:
		return false, err
	}
	return true, cerr
}

var errNotDriverConn = errors.New("sqlitestore: unexpected driver connection type")

// withConn runs f on the writer's driver connection.
func (w *writer) withConn(ctx context.Context, f func(c driver.Conn) error) error {
	conn, err := w.s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return errNotDriverConn
		}
		return f(c)
	})
}

// write commits one batch in one transaction: raw rows, then the client
// summaries and hourly rollups it changes. It works on the driver
// connection directly: binding reused driver.NamedValues skips
// database/sql's per-statement argument conversion and bookkeeping.
func (w *writer) write(batch []ntp.Observation) error {
	w.pace.begin()
	w.aggregate(batch)
	err := w.withConn(w.ctx, func(c driver.Conn) error { return w.writeTx(c, batch) })
	if err != nil {
		// The cache may hold merges that were rolled back.
		w.rollups.reset()
	}
	return err
}

func (w *writer) writeTx(c driver.Conn, batch []ntp.Observation) error {
	bt, ok := c.(driver.ConnBeginTx)
	if !ok {
		return errNotDriverConn
	}
	st, err := prepareStmts(c)
	if err != nil {
		return err
	}
	defer st.close()
	tx, err := bt.BeginTx(w.ctx, driver.TxOptions{})
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tx.Rollback()
		}
	}()

	// Another connection that wrote to the database since our last
	// transaction makes the rollup cache stale.
	if _, err := queryRow(st.dataVersion, nil, w.dest[:1]); err != nil {
		return err
	}
	if v, _ := w.dest[0].(int64); v != w.dataVersion {
		w.rollups.reset()
		w.dataVersion = v
	}

	if err := w.insertRows(st.insObs, batch); err != nil {
		return err
	}
	if err := w.upsertClients(st, batch); err != nil {
		return err
	}
	if err := w.upsertHours(st, batch); err != nil {
		return err
	}
	if err := w.upsertDays(st); err != nil {
		return err
	}
	if f := w.s.cfg.beforeCommit; f != nil {
		if err := f(); err != nil {
			return err
		}
	}
	done = true
	if err := tx.Commit(); err != nil {
		return err
	}
	w.rollups.trim()
	return nil
}

func (w *writer) insertRows(ins driver.Stmt, batch []ntp.Observation) error {
	if h, err := stmtHandle(ins); err == nil && rowBinderEnabled {
		return w.insertRowsC(h, batch)
	}
	a := w.obsArgs
	var local netip.Addr
	var localValue driver.Value
	first := true
	n := 0
	for _, ci := range w.order {
		c := &w.clientAggs[ci]
		for i := c.head; i >= 0; i = w.rowNext[i] {
			if n++; n&1023 == 0 {
				if err := w.ctx.Err(); err != nil {
					return err
				}
			}
			if n&255 == 0 {
				w.pace.step()
			}
			o := &batch[i]
			// Rows mostly share the server address.
			if la := o.Local.Addr(); la != local || first {
				local, localValue, first = la, addrValue(la), false
			}
			a[0].Value = o.Received.UnixNano()
			a[1].Value = c.key
			a[2].Value = int64(o.Client.Port())
			a[3].Value = localValue
			a[4].Value = int64(o.Local.Port())
			a[5].Value = int64(o.Length)
			a[6].Value = int64(o.ReplyLength)
			a[7].Value = int64(o.Leap)
			a[8].Value = int64(o.Version)
			a[9].Value = int64(o.Mode)
			a[10].Value = int64(o.Stratum)
			a[11].Value = int64(o.Poll)
			a[12].Value = int64(o.Precision)
			a[13].Value = int64(o.RootDelay)
			a[14].Value = int64(o.RootDispersion)
			a[15].Value = int64(o.RefID)
			a[16].Value = int64(o.Reference)
			a[17].Value = int64(o.Origin)
			a[18].Value = int64(o.Receive)
			a[19].Value = int64(o.Transmit)
			a[20].Value = int64(o.ServerTransmit)
			a[21].Value = int64(o.Processing)
			a[22].Value = int64(o.Drop)
			a[23].Value = boolInt(o.KoD)
			a[24].Value = int64(o.Method)
			a[25].Value = nullInt(int64(o.Offset), o.Method != ntp.MethodNone)
			a[26].Value = nullInt(int64(o.Delay), o.Method == ntp.MethodExchange)
			a[27].Value = boolInt(o.Interleaved)
			a[28].Value = int64(o.Implementation)
			a[29].Value = int64(o.Extensions.Fields)
			a[30].Value = int64(o.Extensions.MACLength)
			if err := execStmt(ins, a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *writer) upsertClients(st *stmts, batch []ntp.Observation) error {
	a := &w.ps
	for k, ci := range w.order {
		if k&63 == 63 {
			w.pace.step()
		}
		c := &w.clientAggs[ci]
		n := &batch[c.newest]
		a.key(c.key)
		a.int(c.first)
		a.int(c.last)
		a.int(c.requests)
		a.int(c.drops)
		a.int(int64(n.Version))
		a.int(int64(n.Mode))
		a.int(int64(n.Poll))
		a.int(int64(n.Implementation))
		a.addr(n.Local.Addr())
		if c.newestOffset >= 0 {
			o := &batch[c.newestOffset]
			a.int(int64(o.Offset))
			a.int(int64(o.Method))
			a.int(c.offsetAt)
		} else {
			a.null()
			a.int(0)
			a.null()
		}
		if c.newestDelay >= 0 {
			a.int(int64(batch[c.newestDelay].Delay))
			a.int(c.delayAt)
		} else {
			a.null()
			a.null()
		}
		a.nullInt(c.offMin, c.newestOffset >= 0)
		a.nullInt(c.offMax, c.newestOffset >= 0)
		a.nullInt(c.delayMax, c.newestDelay >= 0)
		a.int(c.offCount)
		a.int(c.delayCount)
		a.int(c.rateLimited)
		a.int(c.kod)
		if err := a.exec(st.upClient, st.hUpClient); err != nil {
			return err
		}
	}
	return nil
}

// upsertHours merges the transaction's rows into the rollup rows they
// touch, in the cache, and writes every touched row whole.
func (w *writer) upsertHours(st *stmts, batch []ntp.Observation) error {
	rc := &w.rollups
	a := &w.ps
	for i := range w.hourAggs {
		if i&63 == 63 {
			w.pace.step()
		}
		h := &w.hourAggs[i]
		ca := &w.clientAggs[h.client]
		key := hourKey{hour: h.hour, client: ca.client}
		row, isNew, err := w.rollupRow(st, key, ca.key)
		if err != nil {
			return err
		}
		tot, err := w.hourTotals(st, h.hour)
		if err != nil {
			return err
		}
		if err := w.offP.decodeInto(row.offHist()); err != nil {
			return err
		}
		if err := w.delayP.decodeInto(row.delayHist()); err != nil {
			return err
		}
		if err := w.tallyP.decodeInto(row.tallies()); err != nil {
			return err
		}
		for j := h.head; j >= 0; j = w.next[j] {
			row.add(&batch[j], &w.offP, &w.delayP, &w.tallyP, tot)
		}
		row.encode(w.offP, w.delayP, w.tallyP)
		tot.addRow(row, isNew)
		rc.touch(key.hour)

		a.int(h.hour)
		a.key(ca.key)
		a.int(row.requests)
		a.int(row.drops)
		a.int(row.rateLimited)
		a.int(row.kod)
		a.int(row.offCount)
		a.nullInt(row.offMin, row.offCount > 0)
		a.nullInt(row.offMax, row.offCount > 0)
		a.nullFloat(row.offSum, row.offCount > 0)
		a.int(row.delayCount)
		a.nullInt(row.delayMin, row.delayCount > 0)
		a.nullInt(row.delayMax, row.delayCount > 0)
		a.nullFloat(row.delaySum, row.delayCount > 0)
		a.blob(row.offHist())
		a.blob(row.delayHist())
		a.blob(row.tallies())
		a.int(row.versions)
		a.int(row.impls)
		a.int(row.methods)
		if err := a.exec(st.upHour, st.hUpHour); err != nil {
			return err
		}
	}
	return w.writeTotals(st)
}

// upsertDays adds the transaction's rows to the client_days rows they
// belong to.
func (w *writer) upsertDays(st *stmts) error {
	a := &w.ps
	for i := range w.dayAggs {
		if i&63 == 63 {
			w.pace.step()
		}
		d := &w.dayAggs[i]
		a.int(d.day)
		a.key(w.clientAggs[d.client].key)
		a.int(d.requests)
		a.int(d.drops)
		a.int(d.rateLimited)
		a.int(d.kod)
		a.int(d.offCount)
		a.nullInt(d.offMin, d.offCount > 0)
		a.nullInt(d.offMax, d.offCount > 0)
		a.int(d.delayCount)
		a.nullInt(d.delayMin, d.delayCount > 0)
		a.nullInt(d.delayMax, d.delayCount > 0)
		w.blob = d.offHist.appendEncoded(w.blob[:0])
		a.blob(w.blob)
		w.blob = d.delayHist.appendEncoded(w.blob[:0])
		a.blob(w.blob)
		if err := a.exec(st.upDay, st.hUpDay); err != nil {
			return err
		}
	}
	return nil
}

// hourTotals returns the cached hours row of hour, reading it if needed.
func (w *writer) hourTotals(st *stmts, hour int64) (*hourTotals, error) {
	rc := &w.rollups
	if t := rc.totals[hour]; t != nil {
		return t, nil
	}
	t := &hourTotals{}
	w.oneArg[0].Value = hour
	found, err := queryRow(st.selTotals, w.oneArg, w.dest[:14])
	if err != nil {
		return nil, err
	}
	if found {
		if err := t.scan(w.dest[:14]); err != nil {
			return nil, err
		}
	}
	rc.totals[hour] = t
	return t, nil
}

// writeTotals writes the hours rows the transaction changed.
func (w *writer) writeTotals(st *stmts) error {
	a := &w.ps
	for hour, t := range w.rollups.totals {
		if !t.dirty {
			continue
		}
		t.dirty = false
		a.int(hour)
		a.int(t.clients)
		a.int(t.requests)
		a.int(t.drops)
		a.int(t.offCount)
		a.nullInt(t.offMin, t.offCount > 0)
		a.nullInt(t.offMax, t.offCount > 0)
		a.nullInt(t.absLo, t.hasAbs)
		a.nullInt(t.absHi, t.hasAbs)
		a.int(t.delayCount)
		a.nullInt(t.delayMin, t.delayCount > 0)
		a.nullInt(t.delayMax, t.delayCount > 0)
		w.blob = t.offHist.appendEncoded(w.blob[:0])
		a.blob(w.blob)
		w.blob = t.delayHist.appendEncoded(w.blob[:0])
		a.blob(w.blob)
		w.blob = t.tallies.appendEncoded(w.blob[:0])
		a.blob(w.blob)
		if err := a.exec(st.upTotals, st.hUpTotals); err != nil {
			return err
		}
	}
	return nil
}

// rollupRow returns the cached rollup row of key, reading it from the
// database when the cache cannot tell whether it exists, and whether the
// row is new (not stored yet).
func (w *writer) rollupRow(st *stmts, key hourKey, blob []byte) (*hourState, bool, error) {
	rc := &w.rollups
	if row := rc.rows[key]; row != nil {
		return row, false, nil
	}
	complete, known := rc.complete[key.hour]
	if !known {
		// An hour without rows yet: every row of it will pass through
		// the cache. Otherwise rows missing from the cache are read.
		w.oneArg[0].Value = key.hour
		if _, err := queryRow(st.hourHasRows, w.oneArg, w.dest[:1]); err != nil {
			return nil, false, err
		}
		has, _ := w.dest[0].(int64)
		complete = has == 0
		rc.complete[key.hour] = complete
	}
	row := &hourState{}
	found := false
	if !complete {
		w.keyArgs[0].Value, w.keyArgs[1].Value = key.hour, blob
		var err error
		found, err = queryRow(st.selHour, w.keyArgs, w.dest)
		if err != nil {
			return nil, false, err
		}
		if found {
			if err := row.scan(w.dest); err != nil {
				return nil, false, err
			}
		}
	}
	rc.rows[key] = row
	return row, !found, nil
}

// aggregate computes the batch's per-client contributions, chains its
// rows by client and by (hour, client), and orders clients by stored
// address. Rows, client summaries and rollups are then written in index
// order, so each transaction walks the B-trees from one end to the other
// instead of jumping about: far fewer pages to visit and to write.
func (w *writer) aggregate(batch []ntp.Observation) {
	clear(w.clients)
	clear(w.hourIdx)
	clear(w.dayIdx)
	w.clientAggs = w.clientAggs[:0]
	w.hourAggs = w.hourAggs[:0]
	w.dayAggs = w.dayAggs[:0]
	for i := range batch {
		if i&1023 == 1023 {
			w.pace.step()
		}
		o := &batch[i]
		t := o.Received.UnixNano()
		addr := o.Client.Addr()
		ci, ok := w.clients[addr]
		w.rowNext[i] = -1
		if !ok {
			ci = int32(len(w.clientAggs))
			w.clients[addr] = ci
			w.clientAggs = append(w.clientAggs, clientAgg{client: addr,
				head: int32(i), tail: int32(i),
				first: t, last: t, newest: int32(i), newestOffset: -1, newestDelay: -1})
		} else {
			c := &w.clientAggs[ci]
			w.rowNext[c.tail] = int32(i)
			c.tail = int32(i)
		}
		c := &w.clientAggs[ci]
		c.requests++
		if o.Drop != ntp.DropNone {
			c.drops++
		}
		c.first = min(c.first, t)
		if t >= c.last {
			c.last = t
			c.newest = int32(i)
		}
		if o.Method != ntp.MethodNone {
			v := int64(o.Offset)
			if c.newestOffset < 0 {
				c.offMin, c.offMax = v, v
			} else {
				c.offMin, c.offMax = min(c.offMin, v), max(c.offMax, v)
			}
			c.offCount++
			if c.newestOffset < 0 || t >= c.offsetAt {
				c.newestOffset, c.offsetAt = int32(i), t
			}
		}
		if o.Method == ntp.MethodExchange {
			v := int64(o.Delay)
			if c.newestDelay < 0 {
				c.delayMax = v
			} else {
				c.delayMax = max(c.delayMax, v)
			}
			c.delayCount++
			if c.newestDelay < 0 || t >= c.delayAt {
				c.newestDelay, c.delayAt = int32(i), t
			}
		}
		if o.Drop == ntp.DropRateLimit {
			c.rateLimited++
		}
		if o.KoD {
			c.kod++
		}

		ref := hourRef{hour: hourOf(t), client: ci}
		w.next[i] = -1
		if hi, ok := w.hourIdx[ref]; ok {
			h := &w.hourAggs[hi]
			w.next[h.tail] = int32(i)
			h.tail = int32(i)
		} else {
			w.hourIdx[ref] = int32(len(w.hourAggs))
			w.hourAggs = append(w.hourAggs, hourChain{hour: ref.hour, client: ci, head: int32(i), tail: int32(i)})
		}
		if ref.hour >= w.daysFrom && ref.hour < w.daysTo {
			// A late row: its hour is already in the daily rollups.
			dref := hourRef{hour: dayOf(ref.hour), client: ci}
			di, ok := w.dayIdx[dref]
			if !ok {
				di = int32(len(w.dayAggs))
				w.dayIdx[dref] = di
				w.dayAggs = append(w.dayAggs, dayAgg{day: dref.hour, client: ci})
			}
			w.dayAggs[di].add(o)
		}
	}

	n := len(w.clientAggs)
	// The stored addresses, in one buffer grown once: no allocation per
	// client (the invalid address keeps a nil key, as addrBlob's).
	w.keys = slices.Grow(w.keys[:0], 16*n)
	for i := range w.clientAggs {
		c := &w.clientAggs[i]
		c.key = nil
		if c.client.IsValid() {
			var b [16]byte
			k := putAddr(&b, c.client)
			start := len(w.keys)
			w.keys = append(w.keys, b[:k]...)
			c.key = w.keys[start:len(w.keys):len(w.keys)]
		}
	}
	w.order = w.order[:0]
	for i := 0; i < n; i++ {
		w.order = append(w.order, int32(i))
	}
	slices.SortFunc(w.order, func(a, b int32) int {
		return bytes.Compare(w.clientAggs[a].key, w.clientAggs[b].key)
	})
	w.rank = slices.Grow(w.rank[:0], n)[:n]
	for r, ci := range w.order {
		w.rank[ci] = int32(r)
	}
	slices.SortFunc(w.hourAggs, func(a, b hourChain) int {
		if c := cmp.Compare(a.hour, b.hour); c != 0 {
			return c
		}
		return cmp.Compare(w.rank[a.client], w.rank[b.client])
	})
	slices.SortFunc(w.dayAggs, func(a, b dayAgg) int {
		if c := cmp.Compare(a.day, b.day); c != 0 {
			return c
		}
		return cmp.Compare(w.rank[a.client], w.rank[b.client])
	})
}
