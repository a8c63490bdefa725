package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

// benchObservations returns n realistic observations from 1000 clients,
// one per millisecond, a third with each offset method.
func benchObservations(n int) []ntp.Observation {
	out := make([]ntp.Observation, n)
	for i := range out {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.%d.%d.%d:123", i%1000/250, i%250, i%7))
		switch i % 3 {
		case 1:
			o = withOffset(o, ntp.MethodApparent, time.Duration(i%5000)*time.Microsecond, 0)
		case 2:
			o = withOffset(o, ntp.MethodExchange, time.Duration(i%3000)*time.Microsecond, time.Duration(i%40)*time.Millisecond)
		}
		out[i] = o
	}
	return out
}

// BenchmarkIngest measures rows/s through the real writer: Observe into
// the queue, batches of 100 with raw rows, client summaries and rollups,
// until Close has written everything. Compare with BenchmarkIngestBaseline.
func BenchmarkIngest(b *testing.B) {
	data := benchObservations(10000)
	cfg := testConfig(b)
	if v := os.Getenv("INGEST_BATCH"); v != "" {
		cfg.BatchSize, _ = strconv.Atoi(v)
	}
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	high := s.QueueCapacity() - 1000
	for i := 0; i < b.N; i++ {
		for s.QueueLength() > high {
			time.Sleep(50 * time.Microsecond)
		}
		o := data[i%len(data)]
		o.Received = o.Received.Add(time.Duration(i/len(data)) * 10 * time.Second)
		s.Observe(&o)
	}
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	if s.RowsDropped() != 0 || s.RowsWritten() != uint64(b.N) {
		b.Fatalf("dropped %d, written %d of %d", s.RowsDropped(), s.RowsWritten(), b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "rows/s")
}

// BenchmarkIngestBaseline is the floor: a plain prepared INSERT of the
// same rows into the same schema, all in one transaction, no rollups.
func BenchmarkIngestBaseline(b *testing.B) {
	data := benchObservations(10000)
	cfg := testConfig(b)
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	s.Close(context.Background())
	db, err := sql.Open("sqlite3", writerDSN(cfg.Path))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ins, err := db.Prepare(sqlInsertObservation)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	b.ResetTimer()
	start := time.Now()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	st := tx.Stmt(ins)
	for i := 0; i < b.N; i++ {
		o := &data[i%len(data)]
		_, err := st.Exec(o.Received.UnixNano()+int64(i/len(data))*int64(10*time.Second), addrBlob(o.Client.Addr()), int64(o.Client.Port()),
			addrBlob(o.Local.Addr()), int64(o.Local.Port()), int64(o.Length), int64(o.ReplyLength),
			int64(o.Leap), int64(o.Version), int64(o.Mode), int64(o.Stratum), int64(o.Poll), int64(o.Precision),
			int64(o.RootDelay), int64(o.RootDispersion), int64(o.RefID), int64(o.Reference), int64(o.Origin),
			int64(o.Receive), int64(o.Transmit), int64(o.ServerTransmit), int64(o.Processing),
			int64(o.Drop), boolInt(o.KoD), int64(o.Method),
			nullInt(int64(o.Offset), o.Method != ntp.MethodNone), nullInt(int64(o.Delay), o.Method == ntp.MethodExchange),
			boolInt(o.Interleaved), int64(o.Implementation), int64(o.Extensions.Fields), int64(o.Extensions.MACLength))
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "rows/s")
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
