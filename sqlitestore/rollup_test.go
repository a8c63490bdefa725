package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// randomObservations returns n observations from a handful of clients over
// about five hours, shuffled (so batches arrive out of time order), with
// unique receive times and a mix of methods, drops and versions.
func randomObservations(seed uint64, n int) []ntp.Observation {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	clients := []string{"198.51.100.1:123", "198.51.100.2:40000", "[2001:db8::5]:123", "203.0.113.9:5555", "[2001:db8:ffff::1]:123"}
	out := make([]ntp.Observation, n)
	perm := rng.Perm(n)
	for i := range out {
		at := t0.Add(-5*time.Hour + time.Duration(perm[i])*(5*time.Hour/time.Duration(n)) + time.Duration(i%1000))
		o := obs(at, clients[rng.IntN(len(clients))])
		o.Version = uint8(2 + rng.IntN(3))
		o.Poll = int8(rng.IntN(10))
		o.Implementation = ntp.Implementation(rng.IntN(5))
		switch rng.IntN(4) {
		case 0:
		case 1:
			o.Method = ntp.MethodApparent
			o.Offset = time.Duration(rng.Int64N(int64(4*time.Second))) - 2*time.Second
		default:
			o.Method = ntp.MethodExchange
			o.Offset = time.Duration(rng.NormFloat64() * float64(time.Millisecond))
			o.Delay = time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		}
		if rng.IntN(10) == 0 {
			o.Drop = ntp.DropReason(1 + rng.IntN(8))
			o.ReplyLength = 0
			if o.Drop == ntp.DropRateLimit && rng.IntN(2) == 0 {
				o.KoD = true
			}
		}
		out[i] = o
	}
	return out
}

func TestRollupsMatchRawRows(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 7 // many batches merge into each (hour, client) row
	s := openStore(t, cfg)
	data := randomObservations(1, 3000)
	// And some across midnight, for the daily rollups.
	for _, o := range randomObservations(2, 2000) {
		o.Received = o.Received.Add(-14 * time.Hour)
		data = append(data, o)
	}
	for i := range data {
		if i%250 == 0 {
			// At least one transaction per 250 rows, whatever the
			// writer's pace, so rows merge into stored rollups.
			waitFor(t, "rows written", func() bool { return s.RowsWritten() >= uint64(i-i%7) })
		}
		s.Observe(&data[i])
	}
	closeStore(t, s)
	db := rawDB(t, cfg.Path)

	type agg struct {
		requests, drops, rateLimited, kod  int64
		offCount, delayCount               int64
		offMin, offMax, delayMin, delayMax sql.NullInt64
		offSum, delaySum                   sql.NullFloat64
	}
	scanAggs := func(q string) map[string]agg {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]agg{}
		for rows.Next() {
			var hour int64
			var client []byte
			var a agg
			if err := rows.Scan(&hour, &client, &a.requests, &a.drops, &a.rateLimited, &a.kod,
				&a.offCount, &a.offMin, &a.offMax, &a.offSum, &a.delayCount, &a.delayMin, &a.delayMax, &a.delaySum); err != nil {
				t.Fatal(err)
			}
			m[fmt.Sprintf("%d %x", hour, client)] = a
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	raw := scanAggs(`SELECT (time_ns / 3600000000000) * 3600 AS hour, client, count(*),
		sum(drop_reason != 0), sum(drop_reason = 7), sum(kod),
		count(offset_ns), min(offset_ns), max(offset_ns), sum(offset_ns),
		count(delay_ns), min(delay_ns), max(delay_ns), sum(delay_ns)
		FROM observations GROUP BY hour, client`)
	roll := scanAggs(`SELECT hour, client, requests, drops, rate_limited, kod,
		offset_count, offset_min_ns, offset_max_ns, offset_sum_ns,
		delay_count, delay_min_ns, delay_max_ns, delay_sum_ns FROM client_hours`)
	if len(raw) < 20 || len(raw) != len(roll) {
		t.Fatalf("%d raw groups, %d rollup rows", len(raw), len(roll))
	}
	for k, want := range raw {
		if got := roll[k]; got != want {
			t.Errorf("rollup %s:\n got %+v\nwant %+v", k, got, want)
		}
	}

	if n := checkDailyRollups(t, db, true); n < 5 {
		t.Errorf("only %d daily rollup rows", n)
	}

	// Histograms, tallies and bitmasks against the observations in Go.
	type detail struct {
		offHist, delayHist, tallies sparseCounts
		versions, impls, methods    int64
	}
	want := map[string]*detail{}
	for i := range data {
		o := &data[i]
		k := fmt.Sprintf("%d %x", hourOf(o.Received.UnixNano()), addrBlob(o.Client.Addr()))
		d := want[k]
		if d == nil {
			d = &detail{offHist: sparseCounts{}, delayHist: sparseCounts{}, tallies: sparseCounts{}}
			want[k] = d
		}
		if o.Method != ntp.MethodNone {
			d.offHist.add(histBucket(int64(o.Offset)), 1)
		}
		if o.Method == ntp.MethodExchange {
			d.delayHist.add(histBucket(int64(o.Delay)), 1)
		}
		d.tallies.add(tallyKey(tallyVersion, o.Version), 1)
		d.tallies.add(tallyKey(tallyMode, o.Mode), 1)
		d.tallies.add(tallyKey(tallyImplementation, uint8(o.Implementation)), 1)
		d.tallies.add(tallyKey(tallyDrop, uint8(o.Drop)), 1)
		d.tallies.add(tallyKey(tallyMethod, uint8(o.Method)), 1)
		d.versions |= 1 << o.Version
		d.impls |= 1 << o.Implementation
		d.methods |= 1 << o.Method
	}
	rows, err := db.Query(`SELECT hour, client, offset_hist, delay_hist, tallies, versions, implementations, methods FROM client_hours`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var hour, versions, impls, methods int64
		var client, oh, dh, th []byte
		if err := rows.Scan(&hour, &client, &oh, &dh, &th, &versions, &impls, &methods); err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("%d %x", hour, client)
		d := want[k]
		if d == nil {
			t.Fatalf("unexpected rollup %s", k)
		}
		n++
		var keys []int
		for _, c := range []struct {
			name string
			got  []byte
			want sparseCounts
		}{{"offset_hist", oh, d.offHist}, {"delay_hist", dh, d.delayHist}, {"tallies", th, d.tallies}} {
			var enc []byte
			enc, keys = c.want.appendEncoded(nil, keys)
			if string(enc) != string(c.got) {
				t.Errorf("%s %s = %x, want %x", k, c.name, c.got, enc)
			}
		}
		if versions != d.versions || impls != d.impls || methods != d.methods {
			t.Errorf("%s bitmasks = %b %b %b, want %b %b %b", k, versions, impls, methods, d.versions, d.impls, d.methods)
		}
	}
	if n != len(want) {
		t.Errorf("%d rollup rows, want %d", n, len(want))
	}

	// The clients table against raw rows.
	crows, err := db.Query(`SELECT c.client, c.requests, c.drops, c.first_seen_ns, c.last_seen_ns, c.last_version,
		c.last_poll, c.last_offset_ns, c.last_method, c.last_delay_ns,
		(SELECT count(*) FROM observations o WHERE o.client = c.client),
		(SELECT count(*) FROM observations o WHERE o.client = c.client AND drop_reason != 0),
		(SELECT min(time_ns) FROM observations o WHERE o.client = c.client),
		(SELECT max(time_ns) FROM observations o WHERE o.client = c.client),
		(SELECT version FROM observations o WHERE o.client = c.client ORDER BY time_ns DESC LIMIT 1),
		(SELECT poll FROM observations o WHERE o.client = c.client ORDER BY time_ns DESC LIMIT 1),
		(SELECT offset_ns FROM observations o WHERE o.client = c.client AND method != 0 ORDER BY time_ns DESC LIMIT 1),
		(SELECT method FROM observations o WHERE o.client = c.client AND method != 0 ORDER BY time_ns DESC LIMIT 1),
		(SELECT delay_ns FROM observations o WHERE o.client = c.client AND method = 2 ORDER BY time_ns DESC LIMIT 1)
		FROM clients c`)
	if err != nil {
		t.Fatal(err)
	}
	defer crows.Close()
	nc := 0
	for crows.Next() {
		var client []byte
		var g, w [9]sql.NullInt64
		args := []any{&client}
		for i := range g {
			args = append(args, &g[i])
		}
		for i := range w {
			args = append(args, &w[i])
		}
		if err := crows.Scan(args...); err != nil {
			t.Fatal(err)
		}
		for i := range g {
			if g[i] != w[i] {
				t.Errorf("client %v column %d = %v, raw rows say %v", netip.AddrFrom16([16]byte(append(make([]byte, 16-len(client)), client...))), i, g[i], w[i])
			}
		}
		nc++
	}
	if nc != 5 {
		t.Errorf("%d clients, want 5", nc)
	}
}

// checkDailyRollups checks that client_days holds exactly the hourly
// rollups, and (withRaw, when retention has not deleted raw rows) the raw
// rows, of the hours in its range [client_days_from, client_days_to),
// summed per client and UTC day, and returns how many rows it has.
func checkDailyRollups(t *testing.T, db *sql.DB, withRaw bool) int {
	t.Helper()
	from := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_from'")
	to := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_to'")
	type agg struct {
		requests, drops, rateLimited, kod  int64
		offCount, delayCount               int64
		offMin, offMax, delayMin, delayMax sql.NullInt64
	}
	scan := func(q string, args ...any) map[string]agg {
		rows, err := db.Query(q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]agg{}
		for rows.Next() {
			var day int64
			var client []byte
			var a agg
			if err := rows.Scan(&day, &client, &a.requests, &a.drops, &a.rateLimited, &a.kod,
				&a.offCount, &a.offMin, &a.offMax, &a.delayCount, &a.delayMin, &a.delayMax); err != nil {
				t.Fatal(err)
			}
			m[fmt.Sprintf("%d %x", day, client)] = a
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	days := scan(`SELECT day, client, requests, drops, rate_limited, kod,
		offset_count, offset_min_ns, offset_max_ns, delay_count, delay_min_ns, delay_max_ns FROM client_days`)
	const hour = `(time_ns / 3600000000000) * 3600`
	wants := map[string]map[string]agg{
		"hourly rollups": scan(`SELECT hour / 86400 * 86400 AS day, client, sum(requests), sum(drops), sum(rate_limited), sum(kod),
			sum(offset_count), min(offset_min_ns), max(offset_max_ns), sum(delay_count), min(delay_min_ns), max(delay_max_ns)
			FROM client_hours WHERE hour >= ? AND hour < ? GROUP BY day, client`, from, to),
	}
	if withRaw {
		wants["raw rows"] = scan(`SELECT time_ns / 86400000000000 * 86400 AS day, client, count(*),
			sum(drop_reason != 0), sum(drop_reason = 7), sum(kod),
			count(offset_ns), min(offset_ns), max(offset_ns), count(delay_ns), min(delay_ns), max(delay_ns)
			FROM observations WHERE `+hour+` >= ? AND `+hour+` < ? GROUP BY day, client`, from, to)
	}
	for name, want := range wants {
		if len(days) != len(want) {
			t.Errorf("%d daily rollup rows, %s of [%d, %d) make %d", len(days), name, from, to, len(want))
		}
		for k, w := range want {
			if got := days[k]; got != w {
				t.Errorf("daily rollup %s:\n got %+v\nwant %+v (%s of [%d, %d))", k, got, w, name, from, to)
			}
		}
	}
	checkDailyHists(t, db, from, to)
	return len(days)
}

// unknownDayHistsOK lets checkDailyHists accept daily rows without
// histograms (a database upgraded from schema 2 has them).
var unknownDayHistsOK bool

// checkDailyHists checks every known (not NULL) histogram of the daily
// rollups against the client's hourly histograms of the day's hours in
// [from, to), merged.
func checkDailyHists(t *testing.T, db *sql.DB, from, to int64) {
	t.Helper()
	if !unknownDayHistsOK {
		if n := queryInt(t, db, `SELECT count(*) FROM client_days WHERE offset_hist IS NULL OR delay_hist IS NULL`); n != 0 {
			t.Errorf("%d daily rows without histograms in a database written by this build", n)
		}
	}
	days := dayHists(t, db, `SELECT day, client, offset_hist, delay_hist FROM client_days WHERE offset_hist IS NOT NULL`)
	hours := hourHistsByDay(t, db, from, to)
	for k, got := range days {
		if want := hours[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("daily histograms %d %x:\n got %v\nwant %v (hourly histograms of [%d, %d))", k.day, k.client, got, want, from, to)
		}
	}
}

// dayClient keys a client's rollups of one day.
type dayClient struct {
	day    int64
	client string
}

// dayHists merges the offset and delay histograms of q's rows (day,
// client, offset_hist, delay_hist) per day and client.
func dayHists(t *testing.T, db *sql.DB, q string, args ...any) map[dayClient][2]sparseCounts {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[dayClient][2]sparseCounts{}
	for rows.Next() {
		var day int64
		var client, off, delay []byte
		if err := rows.Scan(&day, &client, &off, &delay); err != nil {
			t.Fatal(err)
		}
		k := dayClient{day, string(client)}
		h, ok := m[k]
		if !ok {
			h = [2]sparseCounts{{}, {}}
			m[k] = h
		}
		if err := mergeSparse(h[0], off); err != nil {
			t.Fatal(err)
		}
		if err := mergeSparse(h[1], delay); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// hourHistsByDay is the hourly histograms of the hours in [from, to),
// merged per day and client: what a daily row's histograms must be.
func hourHistsByDay(t *testing.T, db *sql.DB, from, to int64) map[dayClient][2]sparseCounts {
	return dayHists(t, db, `SELECT hour - (hour % 86400 + 86400) % 86400, client, offset_hist, delay_hist
		FROM client_hours WHERE hour >= ? AND hour < ?`, from, to)
}

// TestDailyRollupsRollForward moves the clock on while writing: rows of
// the current hour are left to the roll step, which adds each hour once
// it is over; rows arriving later for rolled hours are added as written.
func TestDailyRollupsRollForward(t *testing.T) {
	var now atomic.Int64
	now.Store(t0.Add(-20 * time.Hour).UnixNano()) // 19:30 the day before t0
	cfg := testConfig(t)
	cfg.Now = func() time.Time { return time.Unix(0, now.Load()) }
	s := openStore(t, cfg)
	db := rawDB(t, cfg.Path)
	write := func(data []ntp.Observation) {
		t.Helper()
		w := s.RowsWritten()
		for i := range data {
			s.Observe(&data[i])
		}
		waitFor(t, "rows written", func() bool { return s.RowsWritten() == w+uint64(len(data)) })
	}
	// Rows from 5 hours before the clock to the clock's hour, then the
	// clock moves across midnight, then late rows for the hours before.
	at := func(seed uint64, n int, shift time.Duration) []ntp.Observation {
		data := randomObservations(seed, n)
		for i := range data {
			data[i].Received = data[i].Received.Add(shift)
		}
		return data
	}
	tests := []struct {
		name     string
		clock    time.Duration // from t0
		data     []ntp.Observation
		wantFrom int64
		wantTo   time.Duration // from t0, hour
	}{
		{"before", -20 * time.Hour, at(4, 1500, -20*time.Hour), math.MinInt64, -20*time.Hour - 30*time.Minute},
		{"after midnight", -10 * time.Hour, at(5, 1500, -10*time.Hour), math.MinInt64, -10*time.Hour - 30*time.Minute},
		{"late rows", -10 * time.Hour, at(6, 1500, -17*time.Hour), math.MinInt64, -10*time.Hour - 30*time.Minute},
		{"next hour", -9 * time.Hour, nil, math.MinInt64, -9*time.Hour - 30*time.Minute},
	}
	for _, tc := range tests {
		now.Store(t0.Add(tc.clock).UnixNano())
		write(tc.data)
		if err := s.rollDays(context.Background()); err != nil {
			t.Fatal(err)
		}
		from := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_from'")
		to := queryInt(t, db, "SELECT cutoff FROM retention WHERE name = 'client_days_to'")
		if from != tc.wantFrom || to != t0.Add(tc.wantTo).Unix() {
			t.Errorf("%s: daily rollups of [%d, %d), want [%d, %d)", tc.name, from, to, tc.wantFrom, t0.Add(tc.wantTo).Unix())
		}
		if n := checkDailyRollups(t, db, true); n == 0 {
			t.Errorf("%s: no daily rollups", tc.name)
		}
		if n := queryInt(t, db, "SELECT count(*) FROM observations WHERE time_ns >= ?", to*int64(time.Second)); n == 0 && tc.data != nil {
			t.Errorf("%s: no rows after the daily rollups' range: the test does not test the roll step", tc.name)
		}
	}
}
