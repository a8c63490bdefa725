package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// TestRowBinderHandle: the writer's insert statement yields its SQLite
// handle, so the C path is the one in use (a go-sqlite3 upgrade that
// renames the field fails here, not silently in production).
func TestRowBinderHandle(t *testing.T) {
	s := openStore(t, testConfig(t))
	err := s.w.withConn(context.Background(), func(c driver.Conn) error {
		st, err := c.Prepare(sqlInsertObservation)
		if err != nil {
			return err
		}
		defer st.Close()
		h, err := stmtHandle(st)
		if err == nil && h == nil {
			err = fmt.Errorf("nil handle")
		}
		if err != nil {
			return err
		}
		// The upserts take the C path too (params).
		sts, err := prepareStmts(c)
		if err != nil {
			return err
		}
		defer sts.close()
		if sts.hUpClient == nil || sts.hUpHour == nil || sts.hUpTotals == nil || sts.hUpDay == nil {
			return fmt.Errorf("upsert handles missing: %v %v %v %v", sts.hUpClient, sts.hUpHour, sts.hUpTotals, sts.hUpDay)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
}

// TestRowBinderMatchesDriver writes the same observations through the C
// path and through database/sql/driver and compares every stored column.
func TestRowBinderMatchesDriver(t *testing.T) {
	var in []ntp.Observation
	add := func(o ntp.Observation) { in = append(in, o) }
	for i := 0; i < 700; i++ { // more than two chunks
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("192.0.2.%d:%d", i%200, 1024+i))
		switch i % 4 {
		case 1:
			o = withOffset(o, ntp.MethodApparent, time.Duration(i)*time.Microsecond, 0)
		case 2:
			o = withOffset(o, ntp.MethodExchange, -time.Duration(i)*time.Microsecond, time.Duration(i)*time.Nanosecond)
		}
		add(o)
	}
	o := obs(t0.Add(time.Second), "[2001:db8::1]:123")
	o.Local = netip.AddrPort{} // unknown local address: NULL
	o.Reference, o.Origin, o.Receive, o.Transmit, o.ServerTransmit = math.MaxUint64, 1<<63, 1<<63-1, 0, 1
	o.RefID, o.RootDelay, o.RootDispersion = math.MaxUint32, math.MaxUint32, 1
	o.Poll, o.Precision, o.Stratum, o.Leap = -128, 127, 255, 3
	o.Drop, o.KoD, o.Interleaved = ntp.DropRateLimit, true, true
	o.Extensions = ntp.Extensions{Fields: 3, MACLength: 20}
	o.Method, o.Offset = ntp.MethodApparent, math.MinInt64
	add(o)
	o = obs(t0.Add(2*time.Second), "[::ffff:198.51.100.7]:5")
	o.Local = netip.MustParseAddrPort("[::ffff:192.0.2.9]:123")
	o.Method, o.Offset, o.Delay = ntp.MethodExchange, math.MaxInt64, math.MaxInt64
	add(o)

	dump := func(binder bool) [][]any {
		saved := rowBinderEnabled
		rowBinderEnabled = binder
		defer func() { rowBinderEnabled = saved }()
		cfg := testConfig(t)
		cfg.Now = fixedNow
		s := openStore(t, cfg)
		for i := range in {
			s.Observe(&in[i])
		}
		closeStore(t, s)
		return dumpTable(t, rawDB(t, cfg.Path), "SELECT * FROM observations ORDER BY time_ns, client_port", 1)
	}
	c, d := dump(true), dump(false)
	if len(c) != len(in) || len(d) != len(in) {
		t.Fatalf("rows: C path %d, driver %d, want %d", len(c), len(d), len(in))
	}
	compareDumps(t, "observations", c, d)
}

// dumpTable reads every row of q, without its first skip columns.
func dumpTable(t *testing.T, db *sql.DB, q string, skip int) [][]any {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals[skip:])
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func compareDumps(t *testing.T, table string, c, d [][]any) {
	t.Helper()
	if len(c) != len(d) {
		t.Errorf("%s: C path %d rows, driver %d", table, len(c), len(d))
		return
	}
	for i := range c {
		if !reflect.DeepEqual(c[i], d[i]) {
			t.Errorf("%s row %d:\nC path %v\ndriver %v", table, i, c[i], d[i])
		}
	}
}

// TestParamsMatchDriver writes hours of traffic, with late rows into hours
// already rolled into days, through the C path of the upserts (params) and
// through database/sql/driver, and compares every summary table.
func TestParamsMatchDriver(t *testing.T) {
	day := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	dump := func(binder bool) map[string][][]any {
		saved := rowBinderEnabled
		rowBinderEnabled = binder
		defer func() { rowBinderEnabled = saved }()
		var now atomic.Int64
		now.Store(day.Add(30 * time.Minute).UnixNano())
		cfg := testConfig(t)
		cfg.Now = func() time.Time { return time.Unix(0, now.Load()) }
		cfg.FlushInterval = 5 * time.Millisecond
		s := openStore(t, cfg)
		db := rawDB(t, cfg.Path)
		n := 0
		write := func(at time.Time, i int) {
			t.Helper()
			o := obs(at, fmt.Sprintf("192.0.2.%d:%d", i%7, 1024+i))
			switch i % 3 {
			case 1:
				o = withOffset(o, ntp.MethodApparent, time.Duration(i-20)*time.Millisecond, 0)
			case 2:
				o = withOffset(o, ntp.MethodExchange, -time.Duration(i)*time.Microsecond, time.Duration(i)*time.Millisecond)
			}
			if i%5 == 0 {
				o.Drop, o.ReplyLength, o.KoD = ntp.DropRateLimit, 0, i%10 == 0
			}
			if i%11 == 0 {
				o.Client = netip.MustParseAddrPort("[2001:db8::7]:123")
			}
			s.Observe(&o)
			n++
		}
		for h := 0; h < 3; h++ {
			now.Store(day.Add(time.Duration(h)*time.Hour + 30*time.Minute).UnixNano())
			for i := 0; i < 40; i++ {
				write(day.Add(time.Duration(h)*time.Hour+time.Duration(i)*time.Minute), i+h)
			}
			waitFor(t, "rows written", func() bool { return s.RowsWritten() == uint64(n) })
		}
		now.Store(day.Add(3*time.Hour + 30*time.Minute).UnixNano())
		waitFor(t, "hours rolled", func() bool {
			return queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_to'") >= day.Add(3*time.Hour).Unix()
		})
		for i := 0; i < 30; i++ { // late rows: into client_days directly
			write(day.Add(time.Hour+time.Duration(i)*time.Minute), 100+i)
		}
		closeStore(t, s)
		if got := queryInt(t, db, "SELECT count(*) FROM client_days"); got == 0 {
			t.Fatal("no client_days rows: the late-row path was not taken")
		}
		return map[string][][]any{
			"clients":      dumpTable(t, db, "SELECT * FROM clients ORDER BY client", 0),
			"client_hours": dumpTable(t, db, "SELECT * FROM client_hours ORDER BY hour, client", 0),
			"hours":        dumpTable(t, db, "SELECT * FROM hours ORDER BY hour", 0),
			"client_days":  dumpTable(t, db, "SELECT * FROM client_days ORDER BY day, client", 0),
		}
	}
	c, d := dump(true), dump(false)
	for _, table := range []string{"clients", "client_hours", "hours", "client_days"} {
		if len(c[table]) == 0 {
			t.Errorf("%s: no rows", table)
		}
		compareDumps(t, table, c[table], d[table])
	}
}

// TestWriterSteadyStateAllocs: once the clients' rollup rows are cached,
// writing a row allocates nothing; what is left is a constant per
// transaction (statements, BEGIN, COMMIT). The whole process's allocations
// per request in `make bench` come from here.
func TestWriterSteadyStateAllocs(t *testing.T) {
	const clients, rows = 500, 5000
	cfg := testConfig(t)
	cfg.Now = fixedNow
	// A transaction per pass, whatever the machine's load: the writer
	// starts one when a whole batch is queued, not on a timer.
	cfg.BatchSize = rows
	fr := &flushRecorder{rows: make([]int, 0, 64)} // appends allocate nothing
	cfg.FlushObserver = fr
	s := openStore(t, cfg)
	batch := make([]ntp.Observation, rows)
	for i := range batch {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("198.51.100.%d:%d", i%250, 1024+i%clients))
		if i%clients >= 250 {
			o.Client = netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i%250)), 123)
		}
		switch i % 3 {
		case 1:
			o = withOffset(o, ntp.MethodApparent, time.Duration(i)*time.Microsecond, 0)
		case 2:
			o = withOffset(o, ntp.MethodExchange, -time.Duration(i)*time.Microsecond, time.Duration(i)*time.Microsecond)
		}
		batch[i] = o
	}
	n := uint64(0)
	pass := func() {
		for i := range batch {
			s.Observe(&batch[i])
		}
		n += rows
		waitFor(t, "rows written", func() bool { return s.RowsWritten() == n })
	}
	pass() // the clients' rows enter the rollup cache
	var before, after runtime.MemStats
	const passes = 4
	txBefore := len(fr.batches())
	runtime.ReadMemStats(&before)
	for i := 0; i < passes; i++ {
		pass()
	}
	runtime.ReadMemStats(&after)
	allocs := after.Mallocs - before.Mallocs
	txs := len(fr.batches()) - txBefore
	t.Logf("%d allocations for %d rows in %d transactions: %.4f per row", allocs, passes*rows, txs, float64(allocs)/(passes*rows))
	// Per transaction: statements, BEGIN, COMMIT, about 50. Per row or
	// per client (500 per pass) would be far above the bound; through
	// database/sql/driver (rowBinderEnabled off) it is about 12 per row.
	if bound := 100*uint64(txs) + passes*rows/100; allocs > bound {
		t.Errorf("%d allocations for %d rows in %d transactions, want at most %d (100 per transaction and one per 100 rows)",
			allocs, passes*rows, txs, bound)
	}
}

// TestParamsCountChecked: a statement given fewer parameters than it has
// fails instead of storing NULL in the missing columns.
func TestParamsCountChecked(t *testing.T) {
	s := openStore(t, testConfig(t))
	err := s.w.withConn(context.Background(), func(c driver.Conn) error {
		st, err := c.Prepare(sqlUpsertTotals)
		if err != nil {
			return err
		}
		defer st.Close()
		h, err := stmtHandle(st)
		if err != nil {
			return err
		}
		var ps params
		ps.int(1)
		ps.int(2)
		return ps.exec(st, h)
	})
	if err == nil || !strings.Contains(err.Error(), "2 parameters for a statement with 15") {
		t.Fatalf("exec with 2 of 15 parameters: %v", err)
	}
	closeStore(t, s)
}

// TestInvalidClientNotStored: an observation without a client address is
// counted as dropped and does not hold up the rows after it.
func TestInvalidClientNotStored(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = fixedNow
	cfg.FlushInterval = time.Millisecond
	s := openStore(t, cfg)
	bad := obs(t0, "192.0.2.1:123")
	bad.Client = netip.AddrPort{}
	s.Observe(&bad)
	good := obs(t0.Add(time.Second), "192.0.2.2:123")
	s.Observe(&good)
	waitFor(t, "valid row written", func() bool { return s.RowsWritten() == 1 })
	if d := s.RowsDropped(); d != 1 {
		t.Errorf("%d dropped, want 1", d)
	}
	closeStore(t, s)
}
