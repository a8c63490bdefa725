package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// Benchmark load: benchClients clients, each sending one request every
// benchPeriod (of observation time), in a shuffled order within each round,
// with a realistic mix of implementations, versions and offset methods.
const (
	benchClients = 10000
	benchPeriod  = 4 * time.Second
	benchRounds  = 10
)

// benchObservations returns benchRounds rounds of the benchmark load; the
// loop repeats them shifted by benchShift.
func benchObservations() []ntp.Observation { return benchObservationsFor(benchClients) }

// benchObservationsFor is the benchmark load with n clients (in
// benchRounds rounds of benchClients requests, each client polling every
// benchPeriod*n/benchClients).
func benchObservationsFor(n int) []ntp.Observation {
	rng := rand.New(rand.NewPCG(1, 2))
	clients := make([]netip.AddrPort, n)
	for i := range clients {
		if i%10 == 9 {
			var a [16]byte
			a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
			for j := 8; j < 16; j++ {
				a[j] = byte(rng.Uint32())
			}
			clients[i] = netip.AddrPortFrom(netip.AddrFrom16(a), 123)
		} else {
			clients[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(1 + rng.IntN(223)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}), uint16(1024+rng.IntN(60000)))
		}
	}
	out := make([]ntp.Observation, 0, benchClients*benchRounds)
	step := benchPeriod / benchClients
	for len(out) < benchClients*benchRounds {
		for _, c := range rng.Perm(n) {
			at := t0.Add(time.Duration(len(out)) * step)
			o := obs(at, "192.0.2.1:123")
			o.Client = clients[c]
			o.Poll = int8(6 + c%5)
			o.Version = uint8(3 + c%2)
			switch c % 10 {
			case 0, 1, 2, 3: // chrony: hides its clock
				o.Implementation = ntp.ImplChrony
			case 4, 5, 6: // ntpd-like: apparent offset
				o.Implementation = ntp.ImplNTPd
				o = withOffset(o, ntp.MethodApparent, time.Duration(rng.NormFloat64()*float64(20*time.Millisecond)), 0)
			default: // exchange: full offset and delay
				o.Implementation = ntp.ImplNTPsec
				o = withOffset(o, ntp.MethodExchange, time.Duration(rng.NormFloat64()*float64(2*time.Millisecond)),
					time.Duration(1+rng.IntN(80))*time.Millisecond)
			}
			if rng.IntN(100) == 0 {
				o.Drop, o.ReplyLength, o.KoD = ntp.DropRateLimit, 0, rng.IntN(2) == 0
			}
			out = append(out, o)
		}
	}
	return out[:benchClients*benchRounds]
}

// benchShift is how far each repetition of benchObservations moves in time.
const benchShift = benchRounds * benchPeriod

// BenchmarkIngest measures rows/s through the real writer: Observe into
// the queue, transactions of whole batches with raw rows, client summaries
// and rollups, until Close has written everything. Compare with
// BenchmarkIngestBaseline, or read the ratio of both, interleaved in one
// run, from BenchmarkIngestVsBaseline.
func BenchmarkIngest(b *testing.B) {
	data := benchObservations()
	cfg := testConfig(b)
	cfg.Now = fixedNow // the rows' time: they are current, as a server's are
	if v := os.Getenv("INGEST_BATCH"); v != "" {
		cfg.BatchSize, _ = strconv.Atoi(v)
	}
	b.ResetTimer()
	el := ingestRun(b, cfg, data, b.N)
	b.ReportMetric(float64(b.N)/el.Seconds(), "rows/s")
}

// BenchmarkIngestBaseline is the floor: a plain prepared INSERT of the
// same rows into the same schema on a connection with the writer's
// settings, all in one transaction, no rollups.
func BenchmarkIngestBaseline(b *testing.B) {
	data := benchObservations()
	path := filepath.Join(b.TempDir(), "baseline.db")
	b.ResetTimer()
	el := baselineRun(b, path, data, b.N)
	b.ReportMetric(float64(b.N)/el.Seconds(), "rows/s")
}

// BenchmarkIngestVsBaseline runs both of the above on 200000 rows,
// alternating three times, and reports the median of the writer's rows/s
// over the baseline's: on a shared machine, far steadier than comparing
// the two benchmarks run a minute apart.
func BenchmarkIngestVsBaseline(b *testing.B) {
	data := benchObservations()
	const n = 200000
	for i := 0; i < b.N; i++ {
		var ratios, writer, base []float64
		for r := 0; r < 3; r++ {
			cfg := testConfig(b)
			cfg.Now = fixedNow // the rows' time: they are current, as a server's are
			w := ingestRun(b, cfg, data, n)
			bl := baselineRun(b, filepath.Join(b.TempDir(), "baseline.db"), data, n)
			writer = append(writer, n/w.Seconds())
			base = append(base, n/bl.Seconds())
			ratios = append(ratios, bl.Seconds()/w.Seconds())
		}
		b.ReportMetric(median(writer), "writer-rows/s")
		b.ReportMetric(median(base), "baseline-rows/s")
		b.ReportMetric(median(ratios), "ratio")
	}
}

func median(x []float64) float64 {
	y := append([]float64(nil), x...)
	sort.Float64s(y)
	return y[len(y)/2]
}

// ingestRun writes n rows of data (repeated, shifted in time) through a
// Store and returns the time from the first Observe until Close returned.
func ingestRun(tb testing.TB, cfg Config, data []ntp.Observation, n int) time.Duration {
	// The writer's throughput: it never pauses (it would not with a queue
	// this full anyway).
	cfg.paceDuty = -1
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	high := s.QueueCapacity() - 1000
	for i := 0; i < n; i++ {
		for s.QueueLength() > high {
			time.Sleep(50 * time.Microsecond)
		}
		o := data[i%len(data)]
		o.Received = o.Received.Add(time.Duration(i/len(data)) * benchShift)
		s.Observe(&o)
	}
	if err := s.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
	el := time.Since(start)
	if s.RowsDropped() != 0 || s.RowsWritten() != uint64(n) {
		tb.Fatalf("dropped %d, written %d of %d", s.RowsDropped(), s.RowsWritten(), n)
	}
	return el
}

// baselineRun creates a database at path and inserts n rows of data with
// a plain prepared statement in one transaction, returning the time taken
// from the first insert to the commit.
func baselineRun(tb testing.TB, path string, data []ntp.Observation, n int) time.Duration {
	s, err := Open(context.Background(), Config{Path: path}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s.Close(context.Background())
	db, err := sql.Open("sqlite3", writerDSN(path))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, p := range writerPragmas {
		if _, err := db.Exec(p); err != nil {
			tb.Fatal(err)
		}
	}
	ins, err := db.Prepare(sqlInsertObservation)
	if err != nil {
		tb.Fatal(err)
	}
	defer ins.Close()
	start := time.Now()
	tx, err := db.Begin()
	if err != nil {
		tb.Fatal(err)
	}
	st := tx.Stmt(ins)
	for i := 0; i < n; i++ {
		o := &data[i%len(data)]
		_, err := st.Exec(o.Received.UnixNano()+int64(i/len(data))*int64(benchShift), addrBlob(o.Client.Addr()), int64(o.Client.Port()),
			addrBlob(o.Local.Addr()), int64(o.Local.Port()), int64(o.Length), int64(o.ReplyLength),
			int64(o.Leap), int64(o.Version), int64(o.Mode), int64(o.Stratum), int64(o.Poll), int64(o.Precision),
			int64(o.RootDelay), int64(o.RootDispersion), int64(o.RefID), int64(o.Reference), int64(o.Origin),
			int64(o.Receive), int64(o.Transmit), int64(o.ServerTransmit), int64(o.Processing),
			int64(o.Drop), boolInt(o.KoD), int64(o.Method),
			nullInt(int64(o.Offset), o.Method != ntp.MethodNone), nullInt(int64(o.Delay), o.Method == ntp.MethodExchange),
			boolInt(o.Interleaved), int64(o.Implementation), int64(o.Extensions.Fields), int64(o.Extensions.MACLength))
		if err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkObserve measures the packet-path cost of Observe alone: the
// queue of a Store whose writer is not running, emptied by the benchmark.
func BenchmarkObserve(b *testing.B) {
	for _, mode := range []AddressMode{AddressFull, AddressTruncate, AddressHash} {
		b.Run(string(mode), func(b *testing.B) {
			anon, err := NewAnonymizer(mode, []byte("benchmark key 0123456789"))
			if err != nil {
				b.Fatal(err)
			}
			s := &Store{
				cfg:  Config{BatchSize: 100}.withDefaults(),
				anon: anon,
				ring: make([]ntp.Observation, 1<<16),
				kick: make(chan struct{}, 1),
			}
			o := obs(t0, "198.51.100.1:123")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Observe(&o)
				if s.count == len(s.ring) {
					s.count = 0
				}
			}
		})
	}
}

// BenchmarkIngestPaced offers the benchmark load at a steady
// INGEST_RATE observations/s (default 80000, about ntpexp's saturation
// rate on two cores) from INGEST_CLIENTS clients (default 10000; ntpload
// uses 1024) for INGEST_SECONDS (default 10) and reports what was
// dropped (the target is none) and the deepest the queue got.
func BenchmarkIngestPaced(b *testing.B) {
	rate, secs := 80000, 10
	if v, err := strconv.Atoi(os.Getenv("INGEST_RATE")); err == nil && v > 0 {
		rate = v
	}
	if v, err := strconv.Atoi(os.Getenv("INGEST_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	clients := benchClients
	if v, err := strconv.Atoi(os.Getenv("INGEST_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	data := benchObservationsFor(clients)
	for i := 0; i < b.N; i++ {
		cfg := testConfig(b)
		cfg.Now = fixedNow // the rows' time: they are current, as a server's are
		s, err := Open(context.Background(), cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		total := rate * secs
		var maxQueue int
		start := time.Now()
		for n := 0; n < total; {
			due := min(total, int(time.Since(start).Seconds()*float64(rate)))
			for ; n < due; n++ {
				o := data[n%len(data)]
				o.Received = o.Received.Add(time.Duration(n/len(data)) * benchShift)
				s.Observe(&o)
			}
			maxQueue = max(maxQueue, s.QueueLength())
			time.Sleep(time.Millisecond)
		}
		offered := time.Since(start)
		if err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		if d := s.RowsDropped(); d != 0 {
			b.Logf("DROPPED %d of %d rows at %d/s", d, total, rate)
		}
		b.ReportMetric(float64(total)/offered.Seconds(), "offered/s")
		b.ReportMetric(float64(s.RowsDropped()), "dropped")
		b.ReportMetric(float64(maxQueue), "max-queue")
	}
}

// BenchmarkTakeChunk measures how long the writer holds the queue lock
// (what Observe on the packet path may wait for): one take of up to 512
// observations, take's chunk.
func BenchmarkTakeChunk(b *testing.B) {
	s := &Store{ring: make([]ntp.Observation, 1<<16)}
	dst := make([]ntp.Observation, 512)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.count = len(dst) // a full chunk queued
		if s.take(dst) != len(dst) {
			b.Fatal("short take")
		}
	}
}

// BenchmarkIngestSustained writes INGEST_ROWS rows (default 6,000,000) of
// the benchmark load (INGEST_CLIENTS clients, default 10,000) through the
// writer as fast as it takes them, and reports its rate over each million
// rows: how the rate falls as the database grows. With
// INGEST_DROP_INDEX=name, that index of the observations table is dropped
// first (an experiment: which index pages cost the writer what); with
// INGEST_WAL_PAGES=n, the writer checkpoints the WAL at n pages instead of
// 16384; with INGEST_CACHE_KIB=n, its page cache is n KiB.
func BenchmarkIngestSustained(b *testing.B) {
	saved := writerPragmas
	b.Cleanup(func() { writerPragmas = saved })
	if v, err := strconv.Atoi(os.Getenv("INGEST_WAL_PAGES")); err == nil && v > 0 {
		writerPragmas = append([]string{fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", v),
			fmt.Sprintf("PRAGMA journal_size_limit = %d", v*4096)}, saved[2:]...)
	}
	if v, err := strconv.Atoi(os.Getenv("INGEST_CACHE_KIB")); err == nil && v > 0 {
		writerPragmas = append(append([]string{}, writerPragmas...), fmt.Sprintf("PRAGMA cache_size = -%d", v))
	}
	rows := 6000000
	if v, err := strconv.Atoi(os.Getenv("INGEST_ROWS")); err == nil && v > 0 {
		rows = v
	}
	clients := benchClients
	if v, err := strconv.Atoi(os.Getenv("INGEST_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	data := benchObservationsFor(clients)
	for i := 0; i < b.N; i++ {
		cfg := testConfig(b)
		cfg.Now = fixedNow // the rows' time: they are current, as a server's are
		cfg.paceDuty = -1  // as fast as the writer takes rows
		if idx := os.Getenv("INGEST_DROP_INDEX"); idx != "" {
			s, err := Open(context.Background(), cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			s.Close(context.Background())
			db, err := sql.Open("sqlite3", writerDSN(cfg.Path))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.Exec("DROP INDEX " + idx); err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
		s, err := Open(context.Background(), cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		const segment = 1000000
		high := s.QueueCapacity() - 1000
		start := time.Now()
		segStart := start
		var rates []string
		for n := 0; n < rows; n++ {
			for s.QueueLength() > high {
				time.Sleep(50 * time.Microsecond)
			}
			o := data[n%len(data)]
			o.Received = o.Received.Add(time.Duration(n/len(data)) * benchShift)
			s.Observe(&o)
			if (n+1)%segment == 0 {
				// Rows written by now, over the segment's time: the queue
				// holds at most its capacity, a small part of a segment.
				now := time.Now()
				rate := float64(segment) / now.Sub(segStart).Seconds()
				rates = append(rates, fmt.Sprintf("%dM: %.0f", (n+1)/segment, rate))
				b.ReportMetric(rate, fmt.Sprintf("rows/s-%dM", (n+1)/segment))
				segStart = now
			}
		}
		if err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		if s.RowsDropped() != 0 || s.RowsWritten() != uint64(rows) {
			b.Fatalf("dropped %d, written %d of %d", s.RowsDropped(), s.RowsWritten(), rows)
		}
		b.Logf("rows/s per million rows: %s; overall %.0f; database %d MB", strings.Join(rates, ", "),
			float64(rows)/el.Seconds(), fileSize(cfg.Path)>>20)
	}
}
