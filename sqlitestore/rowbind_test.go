package sqlitestore

import (
	"context"
	"database/sql/driver"
	"fmt"
	"math"
	"net/netip"
	"reflect"
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
		return err
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
		rows, err := rawDB(t, cfg.Path).Query("SELECT * FROM observations ORDER BY time_ns, client_port")
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
			out = append(out, vals[1:]) // without id
		}
		return out
	}
	c, d := dump(true), dump(false)
	if len(c) != len(in) || len(d) != len(in) {
		t.Fatalf("rows: C path %d, driver %d, want %d", len(c), len(d), len(in))
	}
	for i := range c {
		if !reflect.DeepEqual(c[i], d[i]) {
			t.Errorf("row %d:\nC path %v\ndriver %v", i, c[i], d[i])
		}
	}
}
