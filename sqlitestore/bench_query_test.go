package sqlitestore

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// The benchmarks in this file read large databases that take a while to
// build, so they are built once and kept in os.TempDir(), named after the
// schema version and a generator version (bump benchGenVersion when a
// generator changes), and reused by later runs. Building happens outside
// the timed part. Delete the files to rebuild them:
//
//	ntpexp-bench-export1m-s<schema>-g<gen>.db   1,000,000 raw rows (about 140 MB)
//	ntpexp-bench-rollups-s<schema>-g<gen>.db    30 days × 100,000 clients of hourly and daily rollups (several GB)
//	ntpexp-bench-history-s<schema>-g<gen>.db    3 days of raw rows of 1,000 clients polling every 64 s (about 550 MB)

const benchGenVersion = 5

// benchExportRows is the size of the export benchmark's database.
const benchExportRows = 1000000

// benchDB returns the path of a cached benchmark database, building it
// with gen (into a temporary file, renamed when complete) if needed.
func benchDB(b *testing.B, name string, gen func(path string) error) string {
	b.Helper()
	path := filepath.Join(os.TempDir(), fmt.Sprintf("ntpexp-bench-%s-s%d-g%d.db", name, SchemaVersion(), benchGenVersion))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	tmp := fmt.Sprintf("%s.building-%d", path, os.Getpid())
	cleanup := func() {
		for _, s := range []string{"", "-wal", "-shm", ".lock"} {
			os.Remove(tmp + s)
		}
	}
	cleanup()
	b.Logf("building %s (once; kept for later runs)", path)
	start := time.Now()
	if err := gen(tmp); err != nil {
		cleanup()
		b.Fatalf("building %s: %v", path, err)
	}
	// Every writer is closed, so the WAL has been checkpointed into the
	// database and removed; the file alone is the database.
	if _, err := os.Stat(tmp + "-wal"); err == nil {
		cleanup()
		b.Fatalf("building %s: WAL left behind", path)
	}
	if err := os.Rename(tmp, path); err != nil {
		cleanup()
		b.Fatal(err)
	}
	os.Remove(tmp + ".lock")
	b.Logf("built %s in %v", path, time.Since(start).Round(time.Millisecond))
	return path
}

// exportDB is 1,000,000 rows of the ingest benchmark's load, written by
// the real writer.
func exportDB(b *testing.B) string {
	return benchDB(b, "export1m", func(path string) error {
		s, err := Open(context.Background(), Config{Path: path, FlushInterval: time.Hour}, nil)
		if err != nil {
			return err
		}
		data := benchObservations()
		for i := 0; i < benchExportRows; i++ {
			for s.QueueLength() > s.QueueCapacity()-1000 {
				time.Sleep(100 * time.Microsecond)
			}
			o := data[i%len(data)]
			o.Received = o.Received.Add(time.Duration(i/len(data)) * benchShift)
			s.Observe(&o)
		}
		if err := s.Close(context.Background()); err != nil {
			return err
		}
		if s.RowsWritten() != benchExportRows {
			return fmt.Errorf("wrote %d rows", s.RowsWritten())
		}
		return nil
	})
}

// needSqlite3 returns the sqlite3 command-line shell, skipping loudly
// when it is missing (a failure in CI, CI=true).
func needSqlite3(b *testing.B) string {
	b.Helper()
	p, err := exec.LookPath("sqlite3")
	if err == nil {
		return p
	}
	msg := "sqlite3 command-line shell not installed (Debian package sqlite3): cannot measure the export against it"
	if ci := strings.ToLower(strings.TrimSpace(os.Getenv("CI"))); ci == "true" || ci == "1" {
		b.Fatalf("FAIL (CI=true, sqlite3 must be present): %s", msg)
	}
	b.Skipf("SKIP: %s (in CI, CI=true, this is a failure)", msg)
	return ""
}

func devNull(b *testing.B) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkExportCSV1M exports 1,000,000 rows as CSV (ntpexp export
// --format csv) to /dev/null. Compare with BenchmarkExportSqlite3CLI1M.
func BenchmarkExportCSV1M(b *testing.B) {
	path := exportDB(b)
	r, err := OpenReadOnly(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	out := devNull(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := r.Export(context.Background(), ExportOptions{Format: FormatCSV}, out, nil)
		if err != nil {
			b.Fatal(err)
		}
		if n != benchExportRows {
			b.Fatalf("exported %d rows", n)
		}
	}
	b.ReportMetric(float64(benchExportRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// sqlite3CLIQuery selects what Export selects, in the same order, as the
// shell can print it: raw column values, addresses as hex.
var sqlite3CLIQuery = `SELECT ` + strings.NewReplacer("client,", "hex(client),", "local,", "hex(local),").Replace(observationColumns) +
	` FROM observations WHERE time_ns >= -9223372036854775808 ORDER BY time_ns, id`

// BenchmarkExportSqlite3CLI1M is the peer of BenchmarkExportCSV1M: the
// sqlite3 shell printing the same rows and columns as CSV, raw (no time,
// address or field formatting), to /dev/null, with the same page cache
// size as Export uses.
func BenchmarkExportSqlite3CLI1M(b *testing.B) {
	cli := needSqlite3(b)
	path := exportDB(b)
	// Check once, untimed, that the shell sees every row.
	cmd := exec.Command(cli, "-readonly", "-csv", "-header", "-cmd", exportCachePragma, path, sqlite3CLIQuery)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	lines := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines++
	}
	if err := cmd.Wait(); err != nil || lines != benchExportRows+1 {
		b.Fatalf("sqlite3 printed %d lines (want %d): %v", lines, benchExportRows+1, err)
	}
	out := devNull(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(cli, "-readonly", "-csv", "-header", "-cmd", exportCachePragma, path, sqlite3CLIQuery)
		cmd.Stdout = out
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("sqlite3: %v: %s", err, stderr.String())
		}
	}
	b.ReportMetric(float64(benchExportRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// Rollup benchmark database: benchRollupClients clients, every one with a
// client_hours row in each of the benchRollupHours hours before
// benchRollupNow, plus its clients row. 1% of the clients have clocks
// off by about 200 ms, 0.5% by hours, 2% long delays, 0.5% are rate
// limited; these anomalous clients also have 60 raw rows each in the last
// hour.
const (
	benchRollupClients = 100000
	benchRollupHours   = 30 * 24
)

var benchRollupNow = time.Date(2025, 3, 14, 15, 30, 0, 0, time.UTC)

// rollupVariant is one kind of client hour.
type rollupVariant struct {
	requests, drops, rateLimited, kod int64
	offCount, offMin, offMax          int64
	delayCount, delayMin, delayMax    int64
	offHist, delayHist, tallies       []byte
	versions, impls, methods          int64
}

// benchRollupObs is request i (of 60 in an hour) of a client of kind v.
func benchRollupObs(v, i int) *ntp.Observation {
	o := obs(t0, "192.0.2.1:123")
	o.Version = uint8(3 + v%2)
	switch {
	case v < 80: // hides its clock
	case v < 140: // apparent
		o.Method, o.Offset = ntp.MethodApparent, time.Duration(1+v%20+i%5)*time.Millisecond
	default: // exchange
		o.Method, o.Offset, o.Delay = ntp.MethodExchange, time.Duration(v-170+i%7)*100*time.Microsecond, time.Duration(5+v%40+i%3)*time.Millisecond
	}
	switch v {
	case 0: // 0.5%: rate limited
		if i%4 == 0 {
			o.Drop, o.KoD = ntp.DropRateLimit, i%8 == 0
		}
	case 100, 101: // 1%: 200 ms off
		o.Offset = 200*time.Millisecond + time.Duration(i)*time.Millisecond
	case 102: // 0.5%: hours off
		o.Offset = -3*time.Hour + time.Duration(i)*time.Second
	case 150, 151, 152, 153: // 2%: long delays
		o.Delay = 150*time.Millisecond + time.Duration(i)*time.Millisecond
	}
	return &o
}

// benchRollupVariants returns the 200 kinds of client hour (60 requests,
// poll 2^6), and the hours row of an hour in which each of the
// benchRollupClients clients had one of kind client%200.
func benchRollupVariants() ([]rollupVariant, *hourTotals) {
	var out []rollupVariant
	tot := &hourTotals{}
	for v := 0; v < 200; v++ {
		var h hourState
		var off, delay, tal countPairs
		var scratch hourTotals
		for i := 0; i < 60; i++ {
			h.add(benchRollupObs(v, i), &off, &delay, &tal, &scratch)
		}
		h.encode(off, delay, tal)
		for k := 0; k < benchRollupClients/200; k++ {
			var hk hourState
			var o, d, tl countPairs
			for i := 0; i < 60; i++ {
				hk.add(benchRollupObs(v, i), &o, &d, &tl, tot)
			}
			tot.addRow(&h, true)
		}
		out = append(out, rollupVariant{h.requests, h.drops, h.rateLimited, h.kod,
			h.offCount, h.offMin, h.offMax, h.delayCount, h.delayMin, h.delayMax,
			append([]byte{}, h.offHist()...), append([]byte{}, h.delayHist()...), append([]byte{}, h.tallies()...),
			h.versions, h.impls, h.methods})
	}
	return out, tot
}

// benchRollupClient is client i's address: IPv4 for 90%, IPv6 for the rest.
func benchRollupClient(i int) []byte {
	x := uint32(i)*2654435761 + 0x01000000
	if i%10 == 9 {
		a := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(a[12:], x)
		return a
	}
	a := make([]byte, 4)
	binary.BigEndian.PutUint32(a, x)
	return a
}

// rollupDB builds the rollup benchmark database in SQL: the client and
// variant tables are temporary, the 72 million client_hours rows come
// from one INSERT ... SELECT in primary key order, and the (client, hour)
// index is built afterwards.
func rollupDB(b *testing.B) string {
	return benchDB(b, "rollups", func(path string) error {
		s, err := Open(context.Background(), Config{Path: path}, nil)
		if err != nil {
			return err
		}
		if err := s.Close(context.Background()); err != nil {
			return err
		}
		db, err := sql.Open("sqlite3", writerDSN(path))
		if err != nil {
			return err
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		ctx := context.Background()
		run := func(q string, args ...any) {
			if err == nil {
				_, err = db.ExecContext(ctx, q, args...)
			}
		}
		run(`PRAGMA temp_store = MEMORY`)
		run(`PRAGMA cache_size = -1048576`)
		run(`CREATE TEMP TABLE bc (client BLOB PRIMARY KEY, n INTEGER) WITHOUT ROWID`)
		run(`CREATE TEMP TABLE bv (id INTEGER PRIMARY KEY, requests, drops, rate_limited, kod,
			offset_count, offset_min_ns, offset_max_ns, offset_sum_ns,
			delay_count, delay_min_ns, delay_max_ns, delay_sum_ns,
			offset_hist, delay_hist, tallies, versions, implementations, methods)`)
		run(`BEGIN`)
		for i := 0; i < benchRollupClients; i++ {
			run(`INSERT INTO bc VALUES (?, ?)`, benchRollupClient(i), i)
		}
		variants, tot := benchRollupVariants()
		for i, v := range variants {
			var offMin, offMax, offSum, dMin, dMax, dSum any
			if v.offCount > 0 {
				offMin, offMax, offSum = v.offMin, v.offMax, float64(v.offMin+v.offMax)/2*float64(v.offCount)
			}
			if v.delayCount > 0 {
				dMin, dMax, dSum = v.delayMin, v.delayMax, float64(v.delayMin+v.delayMax)/2*float64(v.delayCount)
			}
			run(`INSERT INTO bv VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, i, v.requests, v.drops, v.rateLimited, v.kod,
				v.offCount, offMin, offMax, offSum, v.delayCount, dMin, dMax, dSum,
				v.offHist, v.delayHist, v.tallies, v.versions, v.impls, v.methods)
		}
		run(`COMMIT`)
		run(`DROP INDEX client_hours_client`)
		first := hourOf(benchRollupNow.UnixNano()) - (benchRollupHours-1)*3600
		run(`INSERT INTO client_hours SELECT h.value, c.client, v.requests, v.drops, v.rate_limited, v.kod,
			v.offset_count, v.offset_min_ns, v.offset_max_ns, v.offset_sum_ns,
			v.delay_count, v.delay_min_ns, v.delay_max_ns, v.delay_sum_ns,
			v.offset_hist, v.delay_hist, v.tallies, v.versions, v.implementations, v.methods
			FROM (WITH RECURSIVE h(value) AS (SELECT ? UNION ALL SELECT value + 3600 FROM h WHERE value < ?) SELECT value FROM h) AS h
			CROSS JOIN bc AS c CROSS JOIN bv AS v
			WHERE v.id = c.n % 200`, first, first+(benchRollupHours-1)*3600)
		run(`CREATE INDEX client_hours_client ON client_hours (client, hour)`)
		// Daily rollups: each client's hours of each day summed.
		run(`DROP INDEX client_days_client`)
		last := first + (benchRollupHours-1)*3600
		// A variant's day of n hours: its hourly histograms times n.
		run(`CREATE TEMP TABLE bvh (id INTEGER PRIMARY KEY, offset_hist, delay_hist)`)
		scale := func(blob []byte, n int64) []byte {
			m := sparseCounts{}
			decodeSparse(blob, func(k int, c uint64) { m[k] = c * uint64(n) })
			out, _ := m.appendEncoded([]byte{}, nil)
			return out
		}
		for d := dayOf(first); d <= last; d += 86400 {
			n := (min(d+86400, last+3600) - max(d, first)) / 3600
			run(`DELETE FROM bvh`)
			for i, v := range variants {
				run(`INSERT INTO bvh VALUES (?, ?, ?)`, i, scale(v.offHist, n), scale(v.delayHist, n))
			}
			run(`INSERT INTO client_days SELECT ?1, c.client, v.requests * ?2, v.drops * ?2, v.rate_limited * ?2, v.kod * ?2,
				v.offset_count * ?2, v.offset_min_ns, v.offset_max_ns, v.delay_count * ?2, v.delay_min_ns, v.delay_max_ns,
				h.offset_hist, h.delay_hist
				FROM bc AS c JOIN bv AS v ON v.id = c.n % 200 JOIN bvh AS h ON h.id = v.id`, d, n)
		}
		run(`CREATE INDEX client_days_client ON client_days (client, day)`)
		enc := func(p countPairs) []byte { return p.appendEncoded([]byte{}) }
		for h := first; h <= first+(benchRollupHours-1)*3600; h += 3600 {
			run(`INSERT INTO hours VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, h, tot.clients, tot.requests, tot.drops,
				tot.offCount, tot.offMin, tot.offMax, tot.absLo, tot.absHi, tot.delayCount, tot.delayMin, tot.delayMax,
				enc(tot.offHist), enc(tot.delayHist), enc(tot.tallies))
		}
		nowNS := benchRollupNow.UnixNano()
		run(`INSERT INTO clients SELECT c.client, ?1, ?2, v.requests * ?4, v.drops * ?4, 4, 3, 6, 1, X'C0000201',
			CASE WHEN v.offset_count > 0 THEN v.offset_max_ns END, CASE WHEN v.offset_count > 0 THEN 1 ELSE 0 END,
			CASE WHEN v.offset_count > 0 THEN ?3 END,
			CASE WHEN v.delay_count > 0 THEN v.delay_max_ns END, CASE WHEN v.delay_count > 0 THEN ?3 END,
			v.offset_min_ns, v.offset_max_ns, v.delay_max_ns,
			v.offset_count * ?4, v.delay_count * ?4, v.rate_limited * ?4, v.kod * ?4
			FROM bc AS c JOIN bv AS v ON v.id = c.n % 200`,
			first*int64(time.Second), nowNS-int64(time.Minute), nowNS-int64(time.Minute), benchRollupHours)
		// Raw rows in the last hour for the anomalous clients, 60 each.
		run(`INSERT INTO observations (time_ns, client, client_port, local, local_port, length, reply_length,
			leap, version, mode, stratum, poll, precision, root_delay, root_dispersion, ref_id, reference,
			origin, receive, transmit, server_transmit, processing_ns, drop_reason, kod, method,
			offset_ns, delay_ns, interleaved, implementation, ext_fields, mac_length)
			SELECT ? + r.value * 60000000000, c.client, 123, X'C0000201', 123, 48, 48, 0, 4, 3, 0, 6, -20, 0, 0, 0, 0,
			0, 0, 0, 0, 20000, 0, 0, CASE WHEN v.offset_count > 0 THEN 1 ELSE 0 END,
			CASE WHEN v.offset_count > 0 THEN v.offset_max_ns END, CASE WHEN v.delay_count > 0 THEN v.delay_max_ns END,
			0, 1, 0, 0
			FROM bc AS c JOIN bv AS v ON v.id = c.n % 200
			CROSS JOIN (WITH RECURSIVE r(value) AS (SELECT 0 UNION ALL SELECT value + 1 FROM r WHERE value < 59) SELECT value FROM r) AS r
			WHERE c.n % 200 IN (0, 100, 101, 102, 150, 151, 152, 153)`, nowNS-int64(time.Hour))
		run(`ANALYZE`)
		return err
	})
}

func rollupReader(b *testing.B) *Reader {
	path := rollupDB(b)
	r, err := OpenReadOnly(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	r.SetClock(func() time.Time { return benchRollupNow })
	return r
}

// BenchmarkStats30Days100kClients is Stats over 720 hours on 72 million
// rollup rows (100,000 clients × 720 hours).
func BenchmarkStats30Days100kClients(b *testing.B) {
	r := rollupReader(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := r.Stats(context.Background(), benchRollupHours)
		if err != nil {
			b.Fatal(err)
		}
		if st.UniqueClients != benchRollupClients {
			b.Fatalf("unique clients %d", st.UniqueClients)
		}
	}
}

// BenchmarkAnomalies30Days100kClients is Anomalies over 720 hours on the
// same database.
func BenchmarkAnomalies30Days100kClients(b *testing.B) {
	r := rollupReader(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		an, err := r.Anomalies(context.Background(), AnomalyOptions{Hours: benchRollupHours})
		if err != nil {
			b.Fatal(err)
		}
		if len(an.Anomalies) == 0 {
			b.Fatal("no anomalies")
		}
	}
}

// BenchmarkAnomalies719Hours100kClients is Anomalies over 719 hours on the
// same database: a window one hour shorter than every client's history,
// so no client's whole history is in it and the candidates' window
// extremes come from their rollups.
func BenchmarkAnomalies719Hours100kClients(b *testing.B) {
	r := rollupReader(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		an, err := r.Anomalies(context.Background(), AnomalyOptions{Hours: benchRollupHours - 1})
		if err != nil {
			b.Fatal(err)
		}
		if len(an.Anomalies) == 0 {
			b.Fatal("no anomalies")
		}
	}
}

// BenchmarkStats24Hours100kClients is Stats over the last 24 hours on the
// same database: 100,000 clients active in each hour, each with 30 days
// of history.
func BenchmarkStats24Hours100kClients(b *testing.B) {
	r := rollupReader(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := r.Stats(context.Background(), 24)
		if err != nil {
			b.Fatal(err)
		}
		if st.UniqueClients != benchRollupClients || len(st.TopTalkers) != topTalkerCount {
			b.Fatalf("unique clients %d, %d top talkers", st.UniqueClients, len(st.TopTalkers))
		}
	}
}

// The history benchmark: historyClients clients polling every 64 s for
// historyHours hours, every observation kept as a raw row, written by the
// real writer a poll round per transaction, so that a client's rows lie
// apart in the table as on a real server. A quarter of them have a bad
// clock: offsets around +80 ms, far beyond the default 50 ms threshold,
// except one in ten of those, around +50 ms (in the threshold's own
// histogram bucket); the rest are within a few milliseconds.
const (
	historyClients = 1000
	historyHours   = 72
	historyPoll    = 64 * time.Second
)

var historyNow = time.Date(2025, 3, 14, 15, 30, 0, 0, time.UTC)

func historyDB(b *testing.B) string {
	return benchDB(b, "history", func(path string) error {
		cfg := Config{Path: path, Now: func() time.Time { return historyNow }, BatchSize: historyClients, txGap: -1}
		s, err := Open(context.Background(), cfg, nil)
		if err != nil {
			return err
		}
		start := historyNow.Add(-historyHours * time.Hour)
		n := 0
		for at := start; at.Before(historyNow); at = at.Add(historyPoll) {
			for c := 0; c < historyClients; c++ {
				o := obs(at.Add(time.Duration(c)*historyPoll/historyClients), "192.0.2.1:123")
				o.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 7, byte(c >> 8), byte(c)}), 123)
				// A deterministic spread of ±12.5 ms.
				spread := time.Duration((n*7919)%25000-12500) * time.Microsecond
				off := spread / 5
				switch {
				case c%40 == 0:
					off = 50*time.Millisecond + spread
				case c%4 == 0:
					off = 80*time.Millisecond + spread
				}
				s.Observe(ptr(withOffset(o, ntp.MethodExchange, off, 2*time.Millisecond)))
				n++
			}
			for s.RowsWritten() < uint64(n) {
				time.Sleep(100 * time.Microsecond)
			}
		}
		if err := s.Close(context.Background()); err != nil {
			return err
		}
		if s.RowsWritten() != uint64(n) {
			return fmt.Errorf("wrote %d of %d rows", s.RowsWritten(), n)
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

func historyReader(b *testing.B) *Reader {
	r, err := OpenReadOnly(historyDB(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	r.SetClock(func() time.Time { return historyNow })
	return r
}

// BenchmarkAnomaliesRawHistory is Anomalies over the history database's
// 72 hours, where every anomalous client has all its raw rows.
func BenchmarkAnomaliesRawHistory(b *testing.B) {
	r := historyReader(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		an, err := r.Anomalies(context.Background(), AnomalyOptions{Hours: historyHours})
		if err != nil {
			b.Fatal(err)
		}
		if len(an.Anomalies) != historyClients/4 {
			b.Fatalf("%d anomalies, want %d", len(an.Anomalies), historyClients/4)
		}
	}
}

// BenchmarkAnomaliesRawCountOnly is what counting every anomalous
// client's raw rows beyond the threshold costs on the same database (how
// Anomaly.Count was computed before beyondCounter): for comparison.
func BenchmarkAnomaliesRawCountOnly(b *testing.B) {
	r := historyReader(b)
	since := historyNow.Add(-historyHours * time.Hour).UnixNano()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var total int64
		for c := 0; c < historyClients; c += 4 {
			var n int64
			if err := r.db.QueryRow(`SELECT count(*) FROM observations WHERE client = ? AND time_ns >= ? AND (offset_ns > ? OR offset_ns < ?)`,
				[]byte{10, 7, byte(c >> 8), byte(c)}, since, int64(50*time.Millisecond), -int64(50*time.Millisecond)).Scan(&n); err != nil {
				b.Fatal(err)
			}
			total += n
		}
		if total == 0 {
			b.Fatal("nothing counted")
		}
	}
}
