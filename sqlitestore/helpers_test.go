package sqlitestore

import (
	"context"
	"database/sql"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ntpexp/ntpexp/ntp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the fixed "now" of tests that inject a clock.
var t0 = time.Date(2025, 3, 14, 15, 30, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

func testConfig(t testing.TB) Config {
	return Config{
		Path:          filepath.Join(t.TempDir(), "ntpexp.db"),
		FlushInterval: time.Hour,
		retryMin:      5 * time.Millisecond,
		retryMax:      50 * time.Millisecond,
		firstCleanup:  time.Hour,
	}
}

func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func closeStore(t testing.TB, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// rawDB opens the database read-only for assertions.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", readerDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func queryInt(t testing.TB, db *sql.DB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func openReader(t testing.TB, path string) *Reader {
	t.Helper()
	r, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// obs builds an answered NTPv4 client request.
func obs(at time.Time, client string) ntp.Observation {
	return ntp.Observation{
		Received:       at,
		Client:         netip.MustParseAddrPort(client),
		Local:          netip.MustParseAddrPort("192.0.2.123:123"),
		Length:         48,
		ReplyLength:    48,
		Version:        4,
		Mode:           3,
		Poll:           6,
		Precision:      -20,
		Transmit:       ntp.TimestampFromTime(at),
		ServerTransmit: ntp.TimestampFromTime(at.Add(20 * time.Microsecond)),
		Processing:     20 * time.Microsecond,
		Implementation: ntp.ImplChrony,
	}
}

func withOffset(o ntp.Observation, m ntp.OffsetMethod, off, delay time.Duration) ntp.Observation {
	o.Method, o.Offset = m, off
	if m == ntp.MethodExchange {
		o.Delay = delay
	}
	return o
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// flushRecorder is a FlushObserver.
type flushRecorder struct {
	mu   sync.Mutex
	rows []int
	took []time.Duration
}

func (f *flushRecorder) ObserveFlush(d time.Duration, rows int) {
	f.mu.Lock()
	f.rows = append(f.rows, rows)
	f.took = append(f.took, d)
	f.mu.Unlock()
}

func (f *flushRecorder) durations() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.took...)
}

func (f *flushRecorder) batches() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.rows...)
}

// rawWriteDB opens the database read-write, bypassing the store.
func rawWriteDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=200")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

type netipAddr = netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// rollDays runs the writer's daily rollup steps until they are up to date.
func (s *Store) rollDays(ctx context.Context) error {
	return s.do(ctx, func(ctx context.Context) error {
		for s.w.rollDue() {
			if _, err := s.w.rollStep(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}
