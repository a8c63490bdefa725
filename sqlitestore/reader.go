package sqlitestore

import (
	"bytes"
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
	"strings"
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
	DefaultHours = 24
	// DefaultDetailHours is the hourly history ClientDetail shows by
	// default (the CLI's detail and the API's /api/clients/{ip}).
	DefaultDetailHours     = 48
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
		return 0, invalidf("hours must be between 1 and %d", MaxHours)
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
		return nil, invalidf("limit must be 0 or more")
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
		return nil, invalidf("client address is invalid")
	}
	switch {
	case latest == 0:
		latest = DefaultLatest
	case latest < 0 || latest > MaxLatest:
		return nil, invalidf("latest must be between 1 and %d", MaxLatest)
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
// with the current one, from the rollups only, so it works for windows
// longer than the raw retention. It reads one hours row per hour for the
// totals, histograms and tallies; the clients table for the client
// counts (a client is in the window exactly when it was last seen in it,
// and revealed its clock in it exactly when its newest offset is in it);
// and per-client rollups only for the top talkers.
func (r *Reader) Stats(ctx context.Context, hours int) (*Stats, error) {
	hours, err := checkHours(hours)
	if err != nil {
		return nil, err
	}
	since := r.since(hours)
	sinceNS := since * int64(time.Second)
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

	rows, err := tx.QueryContext(ctx, `SELECT clients, requests, drops, offset_count, offset_min_ns, offset_max_ns,
		abs_offset_lo_ns, abs_offset_hi_ns, delay_count, delay_min_ns, delay_max_ns,
		offset_hist, delay_hist, tallies
		FROM hours WHERE hour >= ?`, since)
	if err != nil {
		return nil, explain(r.path, err)
	}
	var (
		oh, dh                hist
		offMax, offMin, dlMax *int64
		clientHours           int64
	)
	tallies := sparseCounts{}
	for rows.Next() {
		var (
			nc, req, drops, offCount, delayCount int64
			omin, omax, alo, ahi, dmin, dmax     *int64
			ob, db, tb                           []byte
		)
		if err := rows.Scan(&nc, &req, &drops, &offCount, &omin, &omax, &alo, &ahi,
			&delayCount, &dmin, &dmax, &ob, &db, &tb); err != nil {
			rows.Close()
			return nil, err
		}
		clientHours += nc
		st.Requests += req
		st.Dropped += drops
		st.AbsOffsetSeconds.Count += offCount
		st.DelaySeconds.Count += delayCount
		offMax, offMin, dlMax = maxPtr(offMax, omax), minPtr(offMin, omin), maxPtr(dlMax, dmax)
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
		if alo != nil && ahi != nil {
			oh.observeRange(float64(*alo), float64(*ahi))
		}
		if dmin != nil && dmax != nil {
			dh.observeRange(float64(*dmin), float64(*dmax))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, explain(r.path, err)
	}
	st.Answered = st.Requests - st.Dropped
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
	if dlMax != nil {
		quant(&dh, &st.DelaySeconds, float64(*dlMax))
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

	err = tx.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(last_offset_at_ns >= ?), 0)
		FROM clients WHERE last_seen_ns >= ?`, sinceNS, sinceNS).Scan(&st.UniqueClients, &st.ClientsRevealingClock)
	if err != nil {
		return nil, explain(r.path, err)
	}
	st.ClientsNotRevealingClock = st.UniqueClients - st.ClientsRevealingClock

	if st.TopTalkers, err = r.topTalkers(ctx, tx, since, hours, clientHours); err != nil {
		return nil, err
	}
	return st, nil
}

// rollupCutoffNS returns retention's last client_hours cutoff in Unix
// nanoseconds (math.MinInt64 when retention never deleted rollups). A
// client first seen at or after it has all its rollups: their sums are
// its totals in clients.
func (r *Reader) rollupCutoffNS(ctx context.Context, tx *sql.Tx) (int64, error) {
	var cutoff int64
	err := tx.QueryRowContext(ctx, `SELECT cutoff FROM retention WHERE name = 'client_hours'`).Scan(&cutoff)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return math.MinInt64, nil
	case err != nil:
		return 0, explain(r.path, err)
	case cutoff >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64, nil
	case cutoff <= math.MinInt64/int64(time.Second):
		return math.MinInt64, nil
	}
	return cutoff * int64(time.Second), nil
}

// rollupWindow says which rollup rows hold a window's per-client sums and
// extremes: hourly rows in [headFrom, headTo) (subtracted when headSign
// is -1), daily rows of the days in [dayFrom, dayTo), and hourly rows from
// tailFrom on. client_days holds the hours in [client_days_from,
// client_days_to) (days.go), so a day's daily row stands for the day's
// hours in that range; it is used only for days from the window's start,
// from client_days_from and from the client_hours retention cutoff on
// (so that it holds the same rows as the hourly rollups), and hours from
// client_days_to on come from the hourly rollups.
type rollupWindow struct {
	headFrom, headTo int64
	headSign         int64
	dayFrom, dayTo   int64
	tailFrom         int64
	// rows is about how many rows a client active throughout the window
	// has in it.
	rows int64
}

// ceilDay returns the start of the first UTC day at or after sec,
// leaving values near the minimum integer (no bound) alone.
func ceilDay(sec int64) int64 {
	if sec < math.MinInt64/2 {
		return sec
	}
	return -dayOf(-sec)
}

// rollupWindow plans the window of hours whole hours starting at since.
// With sums, the window may also start with its first day's daily row
// less that day's hours before since, when that reads fewer rows.
func (r *Reader) rollupWindow(ctx context.Context, tx *sql.Tx, since int64, hours int, sums bool) (rollupWindow, error) {
	cutoffNS, err := r.rollupCutoffNS(ctx, tx)
	if err != nil {
		return rollupWindow{}, err
	}
	cutoff := cutoffNS / int64(time.Second)
	get := func(name string) (int64, bool, error) {
		var v int64
		err := tx.QueryRowContext(ctx, `SELECT cutoff FROM retention WHERE name = ?`, name).Scan(&v)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, explain(r.path, err)
		}
		return v, true, nil
	}
	from, okFrom, err := get(daysFromName)
	if err != nil {
		return rollupWindow{}, err
	}
	to, okTo, err := get(daysToName)
	if err != nil {
		return rollupWindow{}, err
	}
	end := since + int64(hours)*3600 // the end of the current hour
	cost := func(w rollupWindow) int64 {
		n := max(min(w.headTo, end)-w.headFrom, 0)/3600 + max(end-w.tailFrom, 0)/3600
		if to := min(w.dayTo, end); to > w.dayFrom {
			n += (ceilDay(to) - w.dayFrom) / 86400
		}
		return n
	}
	hourly := rollupWindow{headSign: 1, tailFrom: since}
	hourly.rows = cost(hourly)
	if !okFrom || !okTo || since >= to {
		return hourly, nil
	}
	best := hourly
	if first := max(ceilDay(since), ceilDay(from), ceilDay(cutoff)); first < to {
		w := rollupWindow{headFrom: since, headTo: first, headSign: 1, dayFrom: first, dayTo: to, tailFrom: to}
		if w.rows = cost(w); w.rows < best.rows {
			best = w
		}
	}
	if first := dayOf(since); sums && first >= from && first >= cutoff {
		w := rollupWindow{headFrom: first, headTo: since, headSign: -1, dayFrom: first, dayTo: to, tailFrom: to}
		if w.rows = cost(w); w.rows < best.rows {
			best = w
		}
	}
	return best, nil
}

// args returns the window's bounds in the order of windowParts' ?2 to ?7.
func (w rollupWindow) args() []any {
	return []any{w.headSign, w.headFrom, w.headTo, w.dayFrom, w.dayTo, w.tailFrom}
}

// windowParts selects cols (with n, d: requests and drops, signed) of a
// client's rows (?1) in a window (?2 to ?7, rollupWindow.args), or of
// every client's when client is false.
func windowParts(cols string, client bool) string {
	c := ""
	if client {
		c = "client = ?1 AND "
	}
	signed := strings.NewReplacer("?sign", "?2").Replace(cols)
	plain := strings.NewReplacer("?sign * ", "").Replace(cols)
	return `SELECT ` + signed + ` FROM client_hours WHERE ` + c + `hour >= ?3 AND hour < ?4
		UNION ALL
		SELECT ` + plain + ` FROM client_days WHERE ` + c + `day >= ?5 AND day < ?6
		UNION ALL
		SELECT ` + plain + ` FROM client_hours WHERE ` + c + `hour >= ?7`
}

func maxPtr(a, b *int64) *int64 {
	if a == nil || (b != nil && *b > *a) {
		return b
	}
	return a
}

func minPtr(a, b *int64) *int64 {
	if a == nil || (b != nil && *b < *a) {
		return b
	}
	return a
}

// topTalkerCount is how many top talkers Stats lists.
const topTalkerCount = 10

// topTalkers returns the clients with most requests in the window (ties
// by address), as SELECT client, sum(requests) AS n, sum(drops) FROM
// client_hours WHERE hour >= since GROUP BY client ORDER BY n DESC,
// client LIMIT 10 would, usually without reading every client's rows.
//
// A client's total (clients.requests) bounds its count in the window.
// Clients are visited by total, descending, until the next total cannot
// beat the tenth window count found. A visit costs nothing when the
// client's whole history is in the window (its count is its total), and
// otherwise reads the client's rollups in the window, or those before it
// (subtracted from the total) if fewer. When the window covers most
// clients' history, as long windows do, few or cheap visits settle it.
// When it does not (a short window on a long history) the bounds prune
// little; once the visits have read a sixteenth of the window's rows at
// random, the plain query, scanning the window's rows in order, finishes
// the job.
//
// Both read a window's sums from daily rollups for its whole days and
// hourly ones for the rest (see rollupWindow), so a long window costs
// about one row per client and day rather than per client and hour.
func (r *Reader) topTalkers(ctx context.Context, tx *sql.Tx, since int64, hours int, windowRows int64) ([]Talker, error) {
	type talker struct {
		client   []byte
		req, drp int64
	}
	var top []talker
	better := func(a, b *talker) bool {
		if a.req != b.req {
			return a.req > b.req
		}
		return bytes.Compare(a.client, b.client) < 0
	}
	insert := func(t talker) {
		i := sort.Search(len(top), func(i int) bool { return better(&t, &top[i]) })
		if i >= topTalkerCount {
			return
		}
		top = append(top, talker{})
		copy(top[i+1:], top[i:])
		top[i] = t
		if len(top) > topTalkerCount {
			top = top[:topTalkerCount]
		}
	}
	out := func() []Talker {
		ts := []Talker{}
		for _, t := range top {
			ts = append(ts, Talker{ClientIP: blobAddr(t.client), Requests: t.req, Drops: t.drp})
		}
		return ts
	}

	rw, err := r.rollupWindow(ctx, tx, since, hours, true)
	if err != nil {
		return nil, err
	}
	// A client's window rows at most; the scan reads about that many per
	// client of the window.
	perClient := max(rw.rows, 1)

	// A visit reads up to perClient index entries and rows at random; the
	// scan reads the window's rows in order, a few times cheaper each.
	// The budget is in rollup rows read at random (a few times dearer
	// than rows read in order by the scan).
	budget := windowRows * perClient / int64(hours) / 16
	sinceNS := since * int64(time.Second)
	cutoff, err := r.rollupCutoffNS(ctx, tx)
	if err != nil {
		return nil, err
	}
	whole := max(sinceNS, cutoff)
	cands, err := tx.QueryContext(ctx, `SELECT client, requests, drops, first_seen_ns FROM clients
		WHERE last_seen_ns >= ? ORDER BY requests DESC, client`, sinceNS)
	if err != nil {
		return nil, explain(r.path, err)
	}
	sumIn, err := tx.PrepareContext(ctx, `SELECT coalesce(sum(n), 0), coalesce(sum(d), 0) FROM (`+
		windowParts(`?sign * requests AS n, ?sign * drops AS d`, true)+`)`)
	if err != nil {
		cands.Close()
		return nil, explain(r.path, err)
	}
	defer sumIn.Close()
	sumBefore, err := tx.PrepareContext(ctx, `SELECT coalesce(sum(requests), 0), coalesce(sum(drops), 0)
		FROM client_hours WHERE client = ? AND hour < ?`)
	if err != nil {
		cands.Close()
		return nil, explain(r.path, err)
	}
	defer sumBefore.Close()
	var visited int64
	scan := false
	for cands.Next() {
		var c talker
		var lifetime, drops, firstSeen int64
		if err := cands.Scan(&c.client, &lifetime, &drops, &firstSeen); err != nil {
			cands.Close()
			return nil, err
		}
		if len(top) == topTalkerCount {
			last := &top[topTalkerCount-1]
			if bound := (talker{client: c.client, req: lifetime}); !better(&bound, last) {
				break // neither this client nor any later one can enter
			}
		}
		if firstSeen >= whole {
			// Its whole history is in the window: its totals are the
			// window's.
			c.req, c.drp = lifetime, drops
			insert(c)
			continue
		}
		// Read whichever side of the window start holds fewer of the
		// client's hours: its rows in the window, or (when none of its
		// rollups were deleted) its rows before the window, subtracted
		// from its totals.
		before := (since - hourOf(firstSeen)) / 3600
		cost := perClient
		if firstSeen >= cutoff && before < cost {
			cost = before
		}
		if visited+cost > budget {
			scan = true
			break
		}
		visited += cost
		if cost < perClient {
			var req, drp int64
			if err := sumBefore.QueryRowContext(ctx, c.client, since).Scan(&req, &drp); err != nil {
				cands.Close()
				return nil, explain(r.path, err)
			}
			c.req, c.drp = lifetime-req, drops-drp
		} else if err := sumIn.QueryRowContext(ctx, append([]any{c.client}, rw.args()...)...).Scan(&c.req, &c.drp); err != nil {
			cands.Close()
			return nil, explain(r.path, err)
		}
		if c.req > 0 {
			insert(c)
		}
	}
	cands.Close()
	if err := cands.Err(); err != nil {
		return nil, explain(r.path, err)
	}
	if !scan {
		return out(), nil
	}

	// The scan: the plain query over the hour and day ranges of the
	// primary keys (in order, no lookups).
	top = top[:0]
	rows, err := tx.QueryContext(ctx, `SELECT client, sum(n) AS total, sum(d) FROM (`+
		windowParts(`client, ?sign * requests AS n, ?sign * drops AS d`, false)+`)
		GROUP BY client HAVING total > 0 ORDER BY total DESC, client LIMIT ?1`, append([]any{topTalkerCount}, rw.args()...)...)
	if err != nil {
		return nil, explain(r.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t talker
		if err := rows.Scan(&t.client, &t.req, &t.drp); err != nil {
			return nil, err
		}
		top = append(top, t)
	}
	if err := rows.Err(); err != nil {
		return nil, explain(r.path, err)
	}
	return out(), nil
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
		return 0, invalidf("%s must be a positive number of seconds, at most 1e9", name)
	case v < 1e-9:
		return 0, invalidf("%s must be at least 1e-9 seconds (1 ns)", name)
	}
	return v, nil
}

// Anomalies lists clients, over the window of whole hours ending with the
// current one, whose clock is wrong by an hour or more (clock_wrong_hours),
// whose |offset| exceeds OffsetThreshold (offset), whose delay exceeds
// DelayThreshold (delay), or that were rate limited (rate_limited).
// Worst values and totals come from the rollups (fast over long windows);
// Count comes from the hourly histograms, and from raw rows only where a
// histogram cannot tell (beyondCounter). Only clients whose
// lifetime extremes (in the clients table) pass a threshold, and that
// were seen in the window, have their rollups read.
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
	candThr := min(offNS, clockWrongNS-1)
	tx, err := r.readTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	var cands []anomalyCand
	cutoff, err := r.rollupCutoffNS(ctx, tx)
	if err != nil {
		return nil, err
	}
	// A client first seen since both the window start and the cutoff has
	// its whole history in the window.
	whole := max(sinceNS, cutoff)
	// Candidates: clients seen in the window whose lifetime extremes pass
	// a threshold. Their window totals and extremes are their lifetime
	// ones when their whole history is in the window, and otherwise come
	// from their rollups in the window.
	const candidate = `c.last_seen_ns >= ?
		AND (c.max_offset_ns > ? OR c.min_offset_ns < ? OR c.max_delay_ns > ? OR c.rate_limited > 0)`
	const latest = `c.last_offset_ns, c.last_offset_at_ns, c.last_delay_ns, c.last_delay_at_ns,
		c.last_method, c.last_seen_ns, c.last_implementation`
	rw, err := r.rollupWindow(ctx, tx, since, hours, false)
	if err != nil {
		return nil, err
	}
	// A candidate's window rows (see rollupWindow).
	inWindow, err := tx.PrepareContext(ctx, `SELECT coalesce(sum(oc), 0), min(omin), max(omax),
		coalesce(sum(dc), 0), max(dmax), coalesce(sum(rl), 0), coalesce(sum(kod), 0), coalesce(sum(n), 0) FROM (`+
		windowParts(`offset_count AS oc, offset_min_ns AS omin, offset_max_ns AS omax,
			delay_count AS dc, delay_max_ns AS dmax, rate_limited AS rl, kod, requests AS n`, true)+`)`)
	if err != nil {
		return nil, explain(r.path, err)
	}
	defer inWindow.Close()
	for _, q := range []string{
		`SELECT c.client, c.offset_count, c.min_offset_ns, c.max_offset_ns, c.delay_count, c.max_delay_ns,
			c.rate_limited, c.kod, c.requests, ` + latest + `
			FROM clients c WHERE ` + candidate + ` AND c.first_seen_ns >= ?`,
		`SELECT c.client, 0, NULL, NULL, 0, NULL, 0, 0, 0, ` + latest + `
			FROM clients c WHERE ` + candidate + ` AND c.first_seen_ns < ?`,
	} {
		var window *sql.Stmt
		if strings.Contains(q, "first_seen_ns < ?") {
			window = inWindow
		}
		rows, err := tx.QueryContext(ctx, q, sinceNS, candThr, -candThr, delayNS, whole)
		if err != nil {
			return nil, explain(r.path, err)
		}
		cands, err = r.anomalyCandidates(ctx, rows, window, rw, cands, out, candThr, offNS, delayNS)
		if err != nil {
			return nil, err
		}
	}
	bc, err := newBeyondCounter(ctx, tx, rw)
	if err != nil {
		return nil, explain(r.path, err)
	}
	defer bc.close()
	for i := range cands {
		c := &cands[i]
		if c.a.Count, err = bc.count(ctx, c); err != nil {
			return nil, explain(r.path, err)
		}
		out.Anomalies = append(out.Anomalies, c.a)
	}
	sortAnomalies(out.Anomalies)
	return out, nil
}

// anomalyCand is an offset or delay anomaly waiting for its raw count.
type anomalyCand struct {
	a      Anomaly
	client []byte
	thr    int64
	delay  bool
}

// anomalyCandidates reads candidate rows (client, window totals and
// extremes, latest values), appends offset and delay anomalies to cands
// and rate_limited ones to out, and closes rows. With window, the totals
// and extremes in rows are ignored and read with window (client, since,
// split) instead.
func (r *Reader) anomalyCandidates(ctx context.Context, rows *sql.Rows, window *sql.Stmt, rw rollupWindow, cands []anomalyCand, out *Anomalies, candThr, offNS, delayNS int64) ([]anomalyCand, error) {
	type cand = anomalyCand
	defer rows.Close()
	for rows.Next() {
		var (
			cl                                     []byte
			offCount, delayCount, rl, kod, reqs    int64
			offMin, offMax, delayMax               *int64
			lastOff, lastOffAt, lastDel, lastDelAt *int64
			method, lastSeen, impl                 *int64
		)
		if err := rows.Scan(&cl, &offCount, &offMin, &offMax, &delayCount, &delayMax, &rl, &kod, &reqs,
			&lastOff, &lastOffAt, &lastDel, &lastDelAt, &method, &lastSeen, &impl); err != nil {
			return nil, err
		}
		if window != nil {
			if err := window.QueryRowContext(ctx, append([]any{cl}, rw.args()...)...).Scan(&offCount, &offMin, &offMax,
				&delayCount, &delayMax, &rl, &kod, &reqs); err != nil {
				return nil, explain(r.path, err)
			}
		}
		addr := blobAddr(cl)
		if offCount > 0 && offMin != nil && offMax != nil && (*offMax > candThr || *offMin < -candThr) {
			mn, mx := *offMin, *offMax
			worst := mx
			if -mn > mx {
				worst = mn
			}
			abs := worst
			if abs < 0 {
				abs = -abs
			}
			a := Anomaly{ClientIP: addr, Total: offCount, WorstSeconds: f64(seconds(worst)),
				LatestSeconds: secondsPtr(lastOff), LatestAt: timePtrFromNS(lastOffAt)}
			fillClient(&a, method, lastSeen, impl)
			switch {
			case abs >= clockWrongNS:
				a.Kind = KindClockWrongHours
				cands = append(cands, cand{a: a, client: cl, thr: clockWrongNS - 1})
			case abs > offNS:
				a.Kind = KindOffset
				cands = append(cands, cand{a: a, client: cl, thr: offNS})
			}
		}
		if delayCount > 0 && delayMax != nil && *delayMax > delayNS {
			a := Anomaly{Kind: KindDelay, ClientIP: addr, Total: delayCount, WorstSeconds: f64(seconds(*delayMax)),
				LatestSeconds: secondsPtr(lastDel), LatestAt: timePtrFromNS(lastDelAt)}
			fillClient(&a, method, lastSeen, impl)
			cands = append(cands, cand{a: a, client: cl, thr: delayNS, delay: true})
		}
		if rl > 0 {
			a := Anomaly{Kind: KindRateLimited, ClientIP: addr, Count: rl, KoD: kod, Total: reqs,
				LatestSeconds: secondsPtr(lastOff), LatestAt: timePtrFromNS(lastOffAt)}
			fillClient(&a, method, lastSeen, impl)
			out.Anomalies = append(out.Anomalies, a)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, explain(r.path, err)
	}
	return cands, nil
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
