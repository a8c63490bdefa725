package sqlitestore

import (
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// checkRollups verifies every derived table against the raw rows: each
// client_hours row (counts, extremes, sums, histograms, tallies, masks),
// each hours row against its client_hours rows, and the clients table's
// extremes and counts.
func checkRollups(t *testing.T, path string) {
	t.Helper()
	db := rawDB(t, path)
	type key struct {
		hour   int64
		client string
	}
	type agg struct {
		requests, drops, rateLimited, kod    int64
		offCount, offMin, offMax, offSum     int64
		delayCount, delayMin, delayMax, dSum int64
		off, delay, tallies                  countPairs
		versions, impls, methods             int64
	}
	raw := map[key]*agg{}
	rows, err := db.Query(`SELECT time_ns, client, drop_reason, kod, method, offset_ns, delay_ns, version, mode, implementation FROM observations`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var tm, drop, kod, method, version, mode, impl int64
		var client []byte
		var off, delay sql.NullInt64
		if err := rows.Scan(&tm, &client, &drop, &kod, &method, &off, &delay, &version, &mode, &impl); err != nil {
			t.Fatal(err)
		}
		k := key{hourOf(tm), string(client)}
		a := raw[k]
		if a == nil {
			a = &agg{}
			raw[k] = a
		}
		a.requests++
		if drop != 0 {
			a.drops++
		}
		if drop == int64(ntp.DropRateLimit) {
			a.rateLimited++
		}
		a.kod += kod
		if off.Valid {
			if a.offCount == 0 || off.Int64 < a.offMin {
				a.offMin = off.Int64
			}
			if a.offCount == 0 || off.Int64 > a.offMax {
				a.offMax = off.Int64
			}
			a.offCount++
			a.offSum += off.Int64
			a.off.add(histBucket(off.Int64), 1)
		}
		if delay.Valid {
			if a.delayCount == 0 || delay.Int64 < a.delayMin {
				a.delayMin = delay.Int64
			}
			if a.delayCount == 0 || delay.Int64 > a.delayMax {
				a.delayMax = delay.Int64
			}
			a.delayCount++
			a.dSum += delay.Int64
			a.delay.add(histBucket(delay.Int64), 1)
		}
		for _, tk := range []int{tallyKey(tallyVersion, uint8(version)), tallyKey(tallyMode, uint8(mode)),
			tallyKey(tallyImplementation, uint8(impl)), tallyKey(tallyDrop, uint8(drop)), tallyKey(tallyMethod, uint8(method))} {
			a.tallies.add(tk, 1)
		}
		a.versions |= 1 << version
		a.impls |= 1 << impl
		a.methods |= 1 << method
	}
	rows.Close()

	type total struct {
		clients, requests, drops, offCount, delayCount int64
		offMin, offMax, absLo, absHi, delayMin, dMax   sql.NullInt64
		off, delay, tallies                            countPairs
	}
	minN := func(p *sql.NullInt64, v int64) {
		if !p.Valid || v < p.Int64 {
			*p = sql.NullInt64{Int64: v, Valid: true}
		}
	}
	maxN := func(p *sql.NullInt64, v int64) {
		if !p.Valid || v > p.Int64 {
			*p = sql.NullInt64{Int64: v, Valid: true}
		}
	}
	totals := map[int64]*total{}
	rows, err = db.Query(`SELECT hour, client, requests, drops, rate_limited, kod,
		offset_count, offset_min_ns, offset_max_ns, offset_sum_ns,
		delay_count, delay_min_ns, delay_max_ns, delay_sum_ns,
		offset_hist, delay_hist, tallies, versions, implementations, methods FROM client_hours`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var hour int64
		var client, oh, dh, th []byte
		var g agg
		var omin, omax, dmin, dmax sql.NullInt64
		var osum, dsum sql.NullFloat64
		if err := rows.Scan(&hour, &client, &g.requests, &g.drops, &g.rateLimited, &g.kod,
			&g.offCount, &omin, &omax, &osum, &g.delayCount, &dmin, &dmax, &dsum,
			&oh, &dh, &th, &g.versions, &g.impls, &g.methods); err != nil {
			t.Fatal(err)
		}
		n++
		k := key{hour, string(client)}
		w := raw[k]
		if w == nil {
			t.Errorf("client_hours %d %x has no raw rows", hour, client)
			continue
		}
		g.offMin, g.offMax, g.delayMin, g.delayMax = omin.Int64, omax.Int64, dmin.Int64, dmax.Int64
		g.offSum, g.dSum = int64(osum.Float64), int64(dsum.Float64)
		g.off.decodeInto(oh)
		g.delay.decodeInto(dh)
		g.tallies.decodeInto(th)
		if fmt.Sprint(g) != fmt.Sprint(*w) {
			t.Errorf("client_hours %d %x:\n got %v\nwant %v", hour, client, g, *w)
		}
		tt := totals[hour]
		if tt == nil {
			tt = &total{}
			totals[hour] = tt
		}
		tt.clients++
		tt.requests += g.requests
		tt.drops += g.drops
		tt.offCount += g.offCount
		tt.delayCount += g.delayCount
		if g.offCount > 0 {
			minN(&tt.offMin, g.offMin)
			maxN(&tt.offMax, g.offMax)
			lo, hi := absBounds(g.offMin, g.offMax)
			minN(&tt.absLo, lo)
			maxN(&tt.absHi, hi)
		}
		if g.delayCount > 0 {
			minN(&tt.delayMin, g.delayMin)
			maxN(&tt.dMax, g.delayMax)
		}
		for _, p := range g.off {
			tt.off.add(p.k, p.n)
		}
		for _, p := range g.delay {
			tt.delay.add(p.k, p.n)
		}
		for _, p := range g.tallies {
			tt.tallies.add(p.k, p.n)
		}
	}
	rows.Close()
	if n != len(raw) {
		t.Errorf("%d client_hours rows, %d (hour, client) groups of raw rows", n, len(raw))
	}

	rows, err = db.Query(`SELECT hour, clients, requests, drops, offset_count, delay_count, offset_min_ns, offset_max_ns,
		abs_offset_lo_ns, abs_offset_hi_ns, delay_min_ns, delay_max_ns, offset_hist, delay_hist, tallies FROM hours`)
	if err != nil {
		t.Fatal(err)
	}
	nh := 0
	for rows.Next() {
		var hour int64
		var g total
		var oh, dh, th []byte
		if err := rows.Scan(&hour, &g.clients, &g.requests, &g.drops, &g.offCount, &g.delayCount, &g.offMin, &g.offMax,
			&g.absLo, &g.absHi, &g.delayMin, &g.dMax, &oh, &dh, &th); err != nil {
			t.Fatal(err)
		}
		nh++
		g.off.decodeInto(oh)
		g.delay.decodeInto(dh)
		g.tallies.decodeInto(th)
		if w := totals[hour]; w == nil || fmt.Sprint(g) != fmt.Sprint(*w) {
			t.Errorf("hours %d:\n got %v\nwant %v", hour, g, w)
		}
	}
	rows.Close()
	if nh != len(totals) {
		t.Errorf("%d hours rows, want %d", nh, len(totals))
	}

	var bad int64
	if err := db.QueryRow(`SELECT count(*) FROM clients c WHERE
		c.requests != (SELECT count(*) FROM observations o WHERE o.client = c.client)
		OR c.rate_limited != (SELECT count(*) FROM observations o WHERE o.client = c.client AND drop_reason = 7)
		OR c.min_offset_ns IS NOT (SELECT min(offset_ns) FROM observations o WHERE o.client = c.client)
		OR c.max_offset_ns IS NOT (SELECT max(offset_ns) FROM observations o WHERE o.client = c.client)
		OR c.max_delay_ns IS NOT (SELECT max(delay_ns) FROM observations o WHERE o.client = c.client)
		OR c.offset_count != (SELECT count(offset_ns) FROM observations o WHERE o.client = c.client)
		OR c.delay_count != (SELECT count(delay_ns) FROM observations o WHERE o.client = c.client)
		OR c.kod != (SELECT sum(kod) FROM observations o WHERE o.client = c.client)`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("%d clients rows disagree with raw rows", bad)
	}
}

func TestRollupsMatchRawAcrossRestarts(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 13
	data := randomObservations(5, 4000)
	for part := 0; part < 4; part++ {
		s := openStore(t, cfg)
		for i := part * 1000; i < (part+1)*1000; i++ {
			s.Observe(&data[i])
		}
		closeStore(t, s)
	}
	checkRollups(t, cfg.Path)
}

func TestRollupsMatchRawWithSmallCache(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 50
	cfg.rollupCacheRows = 3 // evicted after nearly every transaction
	s := openStore(t, cfg)
	data := randomObservations(6, 3000)
	for i := range data {
		s.Observe(&data[i])
	}
	closeStore(t, s)
	checkRollups(t, cfg.Path)
}

// TestRollupCacheSeesOtherWriters: a write by another connection between
// two transactions must not be overwritten by the writer's cached rows.
func TestRollupCacheSeesOtherWriters(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 1
	s := openStore(t, cfg)
	o := obs(t0, "198.51.100.9:123")
	s.Observe(&o)
	waitFor(t, "first row", func() bool { return s.RowsWritten() == 1 })
	db := rawWriteDB(t, cfg.Path)
	if _, err := db.Exec(`UPDATE client_hours SET requests = requests + 1000`); err != nil {
		t.Fatal(err)
	}
	o.Received = o.Received.Add(time.Second)
	s.Observe(&o)
	waitFor(t, "second row", func() bool { return s.RowsWritten() == 2 })
	closeStore(t, s)
	if n := queryInt(t, rawDB(t, cfg.Path), `SELECT requests FROM client_hours`); n != 1002 {
		t.Errorf("requests = %d, want 1002 (the other writer's change kept)", n)
	}
}

// TestRollupCacheAfterFailedWrites: transactions that fail after merging
// into the cache must not leave those merges behind.
func TestRollupCacheAfterFailedWrites(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 40
	cfg.FlushInterval = 20 * time.Millisecond
	var calls atomic.Int64
	cfg.beforeCommit = func() error {
		if calls.Add(1)%2 == 1 {
			return errors.New("injected failure")
		}
		return nil
	}
	s := openStore(t, cfg)
	data := randomObservations(7, 2000)
	for i := range data {
		s.Observe(&data[i])
		if i%200 == 199 {
			waitFor(t, "a chunk", func() bool { return s.RowsWritten() == uint64(i+1) })
		}
	}
	closeStore(t, s)
	if s.RowsWritten() != uint64(len(data)) || s.WriteErrors() == 0 {
		t.Fatalf("wrote %d of %d, %d errors", s.RowsWritten(), len(data), s.WriteErrors())
	}
	checkRollups(t, cfg.Path)
}

// TestRollupCacheAfterRetention: rollups that retention deleted must not
// come back from the cache when a late observation arrives for their hour.
func TestRollupCacheAfterRetention(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = fixedNow
	cfg.BatchSize = 1
	cfg.firstCleanup = 300 * time.Millisecond
	s := openStore(t, cfg)
	old := obs(t0.Add(-500*24*time.Hour), "192.0.2.77:123")
	s.Observe(&old)
	waitFor(t, "old row", func() bool { return s.RowsWritten() == 1 })
	db := rawDB(t, cfg.Path)
	waitFor(t, "retention", func() bool { return queryInt(t, db, "SELECT count(*) FROM clients") == 0 })
	old.Received = old.Received.Add(time.Second)
	s.Observe(&old)
	waitFor(t, "late row", func() bool { return s.RowsWritten() == 2 })
	closeStore(t, s)
	checkRollups(t, cfg.Path)
}

// TestLargeTransactionsWhenBehind: with many batches queued, the writer
// takes them in few transactions of whole batches.
func TestLargeTransactionsWhenBehind(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 100
	fr := &flushRecorder{}
	cfg.FlushObserver = fr
	s := openStore(t, cfg)
	release := blockWriter(t, s)
	for i := 0; i < 5050; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.3.%d.%d:123", i%200/250, i%200))
		s.Observe(&o)
	}
	release()
	waitFor(t, "whole batches", func() bool { return s.RowsWritten() == 5000 })
	if got := fr.batches(); len(got) != 1 || got[0] != 5000 {
		t.Errorf("flushes = %v, want [5000]", got)
	}
	closeStore(t, s)
	if got := fr.batches(); got[len(got)-1] != 50 {
		t.Errorf("flushes after Close = %v, want the 50 left last", got)
	}
	checkRollups(t, cfg.Path)
}
