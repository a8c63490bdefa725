package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// Reader answers queries on read-only connections. It never takes the
// write lock, so it can run beside a writing server (in this process or
// another); WAL readers see the last committed batch.
type Reader struct {
	path string
	db   *sql.DB
	now  func() time.Time
	anon *Anonymizer
}

// Default query windows and sizes.
const (
	DefaultHours           = 24
	DefaultLatest          = 20
	DefaultDelayThreshold  = 0.1
	DefaultOffsetThreshold = 0.05
	// MaxHours bounds every window (about 11 years).
	MaxHours = 100000
	// MaxLatest bounds ClientDetail's raw rows.
	MaxLatest = 10000
)

// OpenReadOnly opens the database at path for queries. It fails with an
// explanation if the file is missing, unreadable, not an ntpexp database,
// or of another schema version.
func OpenReadOnly(path string) (*Reader, error) {
	if path == "" || path == ":memory:" {
		return nil, errors.New("database.path must be a file path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("database path %q: %w", path, err)
	}
	f, err := os.Open(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("database %s does not exist: check database.path (the server creates the database when it first starts)", abs)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("database %s is not readable by uid %d: run as the user ntpexp runs as, or root", abs, os.Getuid())
	case err != nil:
		return nil, fmt.Errorf("database %s: %w", abs, err)
	}
	f.Close()
	db, err := sql.Open("sqlite3", readerDSN(abs))
	if err != nil {
		return nil, explain(abs, err)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(time.Minute)
	var have int
	if err := db.QueryRow("PRAGMA user_version").Scan(&have); err != nil {
		db.Close()
		return nil, explain(abs, err)
	}
	known := SchemaVersion()
	switch {
	case have > known:
		db.Close()
		return nil, newerSchemaError(abs, have, known)
	case have == 0:
		db.Close()
		return nil, fmt.Errorf("%s is not an ntpexp database (no schema version): check database.path", abs)
	case have < known:
		db.Close()
		return nil, fmt.Errorf("database %s has schema %d and this build needs %d; start the server of this version once to migrate it: %w", abs, have, known, ErrOlderSchema)
	}
	return &Reader{path: abs, db: db, now: time.Now}, nil
}

// Close closes the reader's connections.
func (r *Reader) Close() error { return r.db.Close() }

// Path returns the database's absolute path.
func (r *Reader) Path() string { return r.path }

// SetClock sets the clock that windows are measured from (for tests).
// Call it before using the Reader.
func (r *Reader) SetClock(now func() time.Time) { r.now = now }

// SetAnonymizer makes address arguments (ClientDetail, Export's client
// filter) go through a, so that users can query by real address when the
// store keeps truncated or hashed ones. Call it before using the Reader.
func (r *Reader) SetAnonymizer(a *Anonymizer) { r.anon = a }

// since returns the start of a window of hours whole hours ending with the
// current (partial) hour, as Unix seconds.
func (r *Reader) since(hours int) int64 {
	return hourOf(r.now().UnixNano()) - int64(hours-1)*3600
}

func checkHours(hours int) (int, error) {
	switch {
	case hours == 0:
		return DefaultHours, nil
	case hours < 0 || hours > MaxHours:
		return 0, fmt.Errorf("hours must be between 1 and %d", MaxHours)
	}
	return hours, nil
}

// readTx starts a read transaction: a consistent snapshot across the
// queries of one call.
func (r *Reader) readTx(ctx context.Context) (*sql.Tx, error) {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, explain(r.path, err)
	}
	return tx, nil
}

// ListOptions selects clients.
type ListOptions struct {
	// Active keeps clients seen within the last Hours (default 24).
	Active bool
	Hours  int
	// Limit caps the rows (0: no limit).
	Limit int
}

const clientColumns = `client, first_seen_ns, last_seen_ns, requests, drops, last_version,
	last_mode, last_poll, last_implementation, last_local, last_offset_ns, last_method,
	last_offset_at_ns, last_delay_ns, last_delay_at_ns`

type scanner interface{ Scan(...any) error }

func scanClient(s scanner) (ClientRow, error) {
	var (
		c                                      ClientRow
		client, local                          []byte
		first, last, version, mode, poll, impl int64
		method                                 int64
		off, offAt, delay, delayAt             *int64
	)
	if err := s.Scan(&client, &first, &last, &c.Requests, &c.Drops, &version, &mode, &poll, &impl,
		&local, &off, &method, &offAt, &delay, &delayAt); err != nil {
		return c, err
	}
	c.ClientIP = blobAddr(client)
	c.FirstSeen, c.LastSeen = timeFromNS(first), timeFromNS(last)
	if c.Requests > 1 {
		c.AvgIntervalSeconds = f64(seconds(last-first) / float64(c.Requests-1))
	}
	c.Version, c.Mode, c.Poll = uint8(version), uint8(mode), int8(poll)
	c.Implementation = implName(impl)
	c.LastOffsetSeconds = secondsPtr(off)
	c.LastOffsetMethod = methodName(method)
	c.LastOffsetAt = timePtrFromNS(offAt)
	c.LastDelaySeconds = secondsPtr(delay)
	c.LastDelayAt = timePtrFromNS(delayAt)
	c.LastLocalIP = blobAddr(local)
	return c, nil
}

// ListClients returns client summaries, most recently seen first.
func (r *Reader) ListClients(ctx context.Context, opts ListOptions) ([]ClientRow, error) {
	if opts.Limit < 0 {
		return nil, errors.New("limit must be >= 0")
	}
	hours, err := checkHours(opts.Hours)
	if err != nil {
		return nil, err
	}
	from := int64(math.MinInt64)
	if opts.Active {
		from = r.now().Add(-time.Duration(hours) * time.Hour).UnixNano()
	}
	limit := int64(-1)
	if opts.Limit > 0 {
		limit = int64(opts.Limit)
	}
	rows, err := r.db.QueryContext(ctx, `SELECT `+clientColumns+` FROM clients
		WHERE last_seen_ns >= ? ORDER BY last_seen_ns DESC, client LIMIT ?`, from, limit)
	if err != nil {
		return nil, explain(r.path, err)
	}
	defer rows.Close()
	out := []ClientRow{}
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

const observationColumns = `time_ns, client, client_port, local, local_port, length,
	reply_length, leap, version, mode, stratum, poll, precision, root_delay,
	root_dispersion, ref_id, transmit, processing_ns, drop_reason, kod, method,
	offset_ns, delay_ns, interleaved, implementation, ext_fields, mac_length,
	origin, receive, server_transmit`

// obsScan holds scan targets, reused across rows.
type obsScan struct {
	t, cport, lport, length, rlen, leap, version, mode, stratum, poll, precision int64
	rootDelay, rootDisp, refID, transmit, processing, drop, kod, method          int64
	interleaved, impl, ext, mac, origin, receive, serverTransmit                 int64
	client, local                                                                []byte
	off, delay                                                                   sql.NullInt64
}

func (o *obsScan) targets() []any {
	return []any{&o.t, &o.client, &o.cport, &o.local, &o.lport, &o.length, &o.rlen,
		&o.leap, &o.version, &o.mode, &o.stratum, &o.poll, &o.precision, &o.rootDelay,
		&o.rootDisp, &o.refID, &o.transmit, &o.processing, &o.drop, &o.kod, &o.method,
		&o.off, &o.delay, &o.interleaved, &o.impl, &o.ext, &o.mac,
		&o.origin, &o.receive, &o.serverTransmit}
}

func (o *obsScan) row(dst *ObservationRow) {
	*dst = ObservationRow{
		Time:                  timeFromNS(o.t),
		ClientIP:              blobAddr(o.client),
		ClientPort:            uint16(o.cport),
		LocalIP:               blobAddr(o.local),
		Version:               uint8(o.version),
		Mode:                  uint8(o.mode),
		Leap:                  uint8(o.leap),
		Stratum:               uint8(o.stratum),
		Poll:                  int8(o.poll),
		Precision:             int8(o.precision),
		RootDelaySeconds:      ntp.Short(uint32(o.rootDelay)).Seconds(),
		RootDispersionSeconds: ntp.Short(uint32(o.rootDisp)).Seconds(),
		RefID:                 FormatRefID(uint8(o.stratum), uint32(o.refID)),
		DropReason:            dropName(o.drop),
		ProcessingSeconds:     seconds(o.processing),
		OffsetMethod:          methodName(o.method),
		Interleaved:           o.interleaved != 0,
		Implementation:        implName(o.impl),
		LocalPort:             uint16(o.lport),
		Length:                uint16(o.length),
		ReplyLength:           uint16(o.rlen),
		KoD:                   o.kod != 0,
		ExtensionFields:       uint8(o.ext),
		MACLength:             uint8(o.mac),
		TransmitHex:           hex16(o.transmit),
		OriginHex:             hex16(o.origin),
		ReceiveHex:            hex16(o.receive),
		ServerTransmitHex:     hex16(o.serverTransmit),
	}
	if o.off.Valid {
		dst.OffsetSeconds = f64(seconds(o.off.Int64))
	}
	if o.delay.Valid {
		dst.DelaySeconds = f64(seconds(o.delay.Int64))
	}
}

// ClientDetail returns a client's summary, its latest raw observations
// (newest first; default 20) and its hourly history over the window
// (oldest first). It returns ErrNotFound for an unknown client.
func (r *Reader) ClientDetail(ctx context.Context, ip netip.Addr, latest int, hours int) (*ClientDetail, error) {
	if !ip.IsValid() {
		return nil, errors.New("client address is invalid")
	}
	switch {
	case latest == 0:
		latest = DefaultLatest
	case latest < 0 || latest > MaxLatest:
		return nil, fmt.Errorf("latest must be between 1 and %d", MaxLatest)
	}
	hours, err := checkHours(hours)
	if err != nil {
		return nil, err
	}
	key := addrBlob(r.anon.Addr(ip))
	tx, err := r.readTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	c, err := scanClient(tx.QueryRowContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE client = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("client %s: %w", ip, ErrNotFound)
	}
	if err != nil {
		return nil, explain(r.path, err)
	}
	d := &ClientDetail{Client: c, Hours: hours, Latest: []ObservationRow{}, History: []HourRow{}}
	rows, err := tx.QueryContext(ctx, `SELECT `+observationColumns+` FROM observations
		WHERE client = ? ORDER BY time_ns DESC, id DESC LIMIT ?`, key, latest)
	if err != nil {
		return nil, explain(r.path, err)
	}
	var sc obsScan
	targets := sc.targets()
	for rows.Next() {
		if err := rows.Scan(targets...); err != nil {
			rows.Close()
			return nil, err
		}
		var o ObservationRow
		sc.row(&o)
		d.Latest = append(d.Latest, o)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	hrows, err := tx.QueryContext(ctx, `SELECT hour, requests, drops, rate_limited, kod,
		offset_count, offset_min_ns, offset_max_ns, offset_sum_ns,
		delay_count, delay_min_ns, delay_max_ns, delay_sum_ns,
		offset_hist, delay_hist, versions, implementations, methods
		FROM client_hours WHERE client = ? AND hour >= ? ORDER BY hour`, key, r.since(hours))
	if err != nil {
		return nil, explain(r.path, err)
	}
	defer hrows.Close()
	for hrows.Next() {
		var (
			h                              HourRow
			hour                           int64
			offMin, offMax, delMin, delMax *int64
			offSum, delSum                 *float64
			offHist, delHist               []byte
			versions, impls, methods       int64
		)
		if err := hrows.Scan(&hour, &h.Requests, &h.Drops, &h.RateLimited, &h.KoD,
			&h.OffsetCount, &offMin, &offMax, &offSum, &h.DelayCount, &delMin, &delMax, &delSum,
			&offHist, &delHist, &versions, &impls, &methods); err != nil {
			return nil, err
		}
		h.Hour = Time{time.Unix(hour, 0).UTC()}
		h.OffsetMinSeconds, h.OffsetMaxSeconds = secondsPtr(offMin), secondsPtr(offMax)
		h.DelayMinSeconds, h.DelayMaxSeconds = secondsPtr(delMin), secondsPtr(delMax)
		if h.OffsetCount > 0 && offSum != nil {
			h.OffsetMeanSeconds = f64(*offSum / float64(h.OffsetCount) / 1e9)
			var hs hist
			if err := hs.merge(offHist); err != nil {
				return nil, err
			}
			lo, hi := absRange(offMin, offMax)
			hs.observeRange(lo, hi)
			if v, ok := hs.quantile(0.5); ok {
				h.AbsOffsetP50Seconds = f64(v / 1e9)
			}
		}
		if h.DelayCount > 0 && delSum != nil {
			h.DelayMeanSeconds = f64(*delSum / float64(h.DelayCount) / 1e9)
			var hs hist
			if err := hs.merge(delHist); err != nil {
				return nil, err
			}
			if delMin != nil && delMax != nil {
				hs.observeRange(float64(*delMin), float64(*delMax))
			}
			if v, ok := hs.quantile(0.5); ok {
				h.DelayP50Seconds = f64(v / 1e9)
			}
		}
		h.Versions = bitsInts(versions)
		h.Implementations = bitsNames(impls, implName)
		h.OffsetMethods = bitsNames(methods, methodName)
		d.History = append(d.History, h)
	}
	return d, hrows.Err()
}

// absRange returns the range of |offset| given the signed min and max.
func absRange(min, max *int64) (lo, hi float64) {
	if min == nil || max == nil {
		return 0, math.Inf(1)
	}
	a, b := float64(*min), float64(*max)
	hi = math.Max(math.Abs(a), math.Abs(b))
	switch {
	case a >= 0:
		lo = a
	case b <= 0:
		lo = -b
	}
	return lo, hi
}

func bitsInts(m int64) []int {
	out := []int{}
	for i := 0; i < 64; i++ {
		if m&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

func bitsNames(m int64, name func(int64) string) []string {
	out := []string{}
	for i := 0; i < 64; i++ {
		if m&(1<<i) != 0 {
			out = append(out, name(int64(i)))
		}
	}
	return out
}

// Stats summarises the window of hours whole hours (default 24) ending
// with the current one, entirely from the hourly rollups, so it works for
// windows longer than the raw retention.
func (r *Reader) Stats(ctx context.Context, hours int) (*Stats, error) {
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

// AnomalyOptions sets anomaly thresholds (seconds) and the window.
type AnomalyOptions struct {
	DelayThreshold  float64 // default 0.1 s
	OffsetThreshold float64 // default 0.05 s
	Hours           int     // default 24
}

// clockWrongNS is the |offset| from which a clock counts as wrong by hours.
const clockWrongNS = int64(time.Hour)

func checkThreshold(name string, v, def float64) (float64, error) {
	switch {
	case v == 0:
		return def, nil
	case math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1e9:
		return 0, fmt.Errorf("%s must be a positive number of seconds", name)
	case v < 1e-9:
		return 0, fmt.Errorf("%s must be at least 1e-9 seconds", name)
	}
	return v, nil
}

// Anomalies lists clients, over the window of whole hours ending with the
// current one, whose clock is wrong by an hour or more (clock_wrong_hours),
// whose |offset| exceeds OffsetThreshold (offset), whose delay exceeds
// DelayThreshold (delay), or that were rate limited (rate_limited).
// Candidates, worst values and totals come from the rollups (fast over
// long windows); Count comes from raw observations, so over windows longer
// than the raw retention it covers only the retained part.
func (r *Reader) Anomalies(ctx context.Context, opts AnomalyOptions) (*Anomalies, error) {
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
	sinceNS := since * int64(time.Second)
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
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM observations
			WHERE client = ? AND time_ns >= ? AND (offset_ns > ? OR offset_ns < ?)`,
			c.client, sinceNS, c.thr, -c.thr).Scan(&c.a.Count)
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
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM observations
			WHERE client = ? AND time_ns >= ? AND delay_ns > ?`,
			c.client, sinceNS, c.thr).Scan(&c.a.Count)
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

func fillClient(a *Anomaly, method, lastSeen, impl *int64) {
	if method != nil {
		a.Method = methodName(*method)
	} else {
		a.Method = ntp.MethodNone.String()
	}
	if lastSeen != nil {
		a.LastSeen = timeFromNS(*lastSeen)
	}
	if impl != nil {
		a.Implementation = implName(*impl)
	} else {
		a.Implementation = ntp.ImplUnknown.String()
	}
}

var kindOrder = map[string]int{KindClockWrongHours: 0, KindOffset: 1, KindDelay: 2, KindRateLimited: 3}

// sortAnomalies orders by kind, then worst |value| (or count) descending,
// then address.
func sortAnomalies(as []Anomaly) {
	sort.SliceStable(as, func(i, j int) bool {
		a, b := &as[i], &as[j]
		if a.Kind != b.Kind {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		wa, wb := 0.0, 0.0
		if a.Kind == KindRateLimited {
			wa, wb = float64(a.Count), float64(b.Count)
		} else {
			if a.WorstSeconds != nil {
				wa = math.Abs(*a.WorstSeconds)
			}
			if b.WorstSeconds != nil {
				wb = math.Abs(*b.WorstSeconds)
			}
		}
		if wa != wb {
			return wa > wb
		}
		return a.ClientIP.Less(b.ClientIP)
	})
}

// hex16 formats a raw 64-bit timestamp as 16 hex digits.
func hex16(v int64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	u := uint64(v)
	for i := 15; i >= 0; i-- {
		b[i] = digits[u&15]
		u >>= 4
	}
	return string(b[:])
}
