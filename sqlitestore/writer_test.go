package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/ntpexp/ntpexp/ntp"
)

func TestBatchBySize(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 10
	fr := &flushRecorder{}
	cfg.FlushObserver = fr
	s := openStore(t, cfg)
	for i := 0; i < 25; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Second), "198.51.100.7:123")
		s.Observe(&o)
	}
	waitFor(t, "two batches", func() bool { return s.RowsWritten() == 20 })
	time.Sleep(50 * time.Millisecond) // the rest must wait for the interval
	if got := s.RowsWritten(); got != 20 {
		t.Errorf("RowsWritten = %d, want 20 (5 below batch size stay queued)", got)
	}
	if got := s.QueueLength(); got != 5 {
		t.Errorf("QueueLength = %d, want 5", got)
	}
	// Whole batches only: [10 10] or, when the writer woke after more
	// than one batch was queued, [20] in one transaction.
	wholeBatches := func(got []int) bool {
		sum := 0
		for _, n := range got {
			if n%10 != 0 {
				return false
			}
			sum += n
		}
		return sum == 20
	}
	if got := fr.batches(); !wholeBatches(got) {
		t.Errorf("flushes = %v, want whole batches of 10 adding up to 20", got)
	}
	closeStore(t, s)
	if got := fr.batches(); len(got) < 2 || got[len(got)-1] != 5 || !wholeBatches(got[:len(got)-1]) {
		t.Errorf("flushes after Close = %v, want whole batches adding up to 20, then 5", got)
	}
	if n := queryInt(t, rawDB(t, cfg.Path), "SELECT count(*) FROM observations"); n != 25 {
		t.Errorf("rows = %d, want 25", n)
	}
}

func TestBatchByInterval(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 1000
	cfg.FlushInterval = 50 * time.Millisecond
	fr := &flushRecorder{}
	cfg.FlushObserver = fr
	s := openStore(t, cfg)
	start := time.Now()
	for i := 0; i < 3; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Second), "198.51.100.7:123")
		s.Observe(&o)
	}
	waitFor(t, "interval flush", func() bool { return s.RowsWritten() == 3 })
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("flush took %v with a 50ms interval", d)
	}
	if got := fr.batches(); len(got) != 1 || got[0] != 3 {
		t.Errorf("flushes = %v, want [3]", got)
	}
	// And again: the interval keeps firing.
	o := obs(t0.Add(time.Minute), "198.51.100.8:123")
	s.Observe(&o)
	waitFor(t, "second interval flush", func() bool { return s.RowsWritten() == 4 })
	closeStore(t, s)
}

func TestCloseDrainsEverything(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	const n = 10000
	for i := 0; i < n; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.0.%d.%d:123", i/250, i%250))
		s.Observe(&o)
	}
	closeStore(t, s)
	if s.RowsDropped() != 0 {
		t.Fatalf("RowsDropped = %d", s.RowsDropped())
	}
	if s.RowsWritten() != n {
		t.Errorf("RowsWritten = %d, want %d", s.RowsWritten(), n)
	}
	db := rawDB(t, cfg.Path)
	if got := queryInt(t, db, "SELECT count(*) FROM observations"); got != n {
		t.Errorf("rows = %d, want %d", got, n)
	}
	if got := queryInt(t, db, "SELECT sum(requests) FROM clients"); got != n {
		t.Errorf("clients requests = %d, want %d", got, n)
	}
	if got := queryInt(t, db, "SELECT sum(requests) FROM client_hours"); got != n {
		t.Errorf("rollup requests = %d, want %d", got, n)
	}
	// Observe after Close counts a drop and does not panic.
	o := obs(t0, "10.9.9.9:123")
	s.Observe(&o)
	if s.RowsDropped() != 1 {
		t.Errorf("RowsDropped after Close = %d, want 1", s.RowsDropped())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// blockWriter parks the writer goroutine until the returned func is called.
func blockWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started := make(chan struct{})
	gate := make(chan struct{})
	go s.do(context.Background(), func(context.Context) error {
		close(started)
		<-gate
		return nil
	})
	<-started
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

func TestQueueFullDropsCounted(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 10
	cfg.BatchSize = 10
	cfg.dropLogPeriod = time.Millisecond
	var logBuf syncBuffer
	s, err := Open(context.Background(), cfg, log.NewLogfmtLogger(&logBuf))
	if err != nil {
		t.Fatal(err)
	}
	release := blockWriter(t, s)
	for i := 0; i < 15; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Second), "198.51.100.7:123")
		s.Observe(&o)
	}
	if got := s.QueueLength(); got != 10 {
		t.Errorf("QueueLength = %d, want 10", got)
	}
	if got := s.QueueCapacity(); got != 10 {
		t.Errorf("QueueCapacity = %d, want 10", got)
	}
	if got := s.RowsDropped(); got != 5 {
		t.Errorf("RowsDropped = %d, want 5", got)
	}
	release()
	closeStore(t, s)
	if n := queryInt(t, rawDB(t, cfg.Path), "SELECT count(*) FROM observations"); n != 10 {
		t.Errorf("rows = %d, want 10", n)
	}
	if out := logBuf.String(); !strings.Contains(out, `msg="observations dropped, database queue full" dropped=5`) {
		t.Errorf("no drop log line in:\n%s", out)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	for _, mode := range []AddressMode{AddressFull, AddressTruncate, AddressHash} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.AddressMode = mode
			cfg.AddressKey = "0123456789abcdef-secret"
			cfg.QueueSize = 1 << 16
			cfg.BatchSize = 1 << 16
			s := openStore(t, cfg)
			o := obs(t0, "[2001:db8::1%eth0]:123")
			allocs := testing.AllocsPerRun(1000, func() { s.Observe(&o) })
			if allocs != 0 {
				t.Errorf("Observe allocates %.1f times per call", allocs)
			}
			closeStore(t, s)
		})
	}
}

func TestWriteErrorsRetriedUntilSpaceReturns(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 50
	cfg.FlushInterval = 20 * time.Millisecond
	s := openStore(t, cfg)
	ctx := context.Background()
	// Simulate a full disk: cap the database at its current size.
	err := s.do(ctx, func(ctx context.Context) error {
		var pages int64
		if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
			return err
		}
		_, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.1.%d.%d:123", i/200, i%200))
		s.Observe(&o)
	}
	waitFor(t, "write errors", func() bool { return s.WriteErrors() >= 3 })
	if s.RowsWritten() >= n {
		t.Fatalf("all rows written despite the full database")
	}
	// Space returns.
	if err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.db.ExecContext(ctx, "PRAGMA max_page_count = 1073741823")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writes to resume", func() bool { return s.RowsWritten() == n })
	closeStore(t, s)
	if s.RowsDropped() != 0 {
		t.Errorf("RowsDropped = %d", s.RowsDropped())
	}
	if got := queryInt(t, rawDB(t, cfg.Path), "SELECT count(*) FROM observations"); got != n {
		t.Errorf("rows = %d, want %d", got, n)
	}
}

func TestCloseGivesUpWhenContextEnds(t *testing.T) {
	cfg := testConfig(t)
	cfg.BatchSize = 3000
	s := openStore(t, cfg)
	ctx := context.Background()
	// max_page_count cannot go below the current size: the database is
	// full as it is, and a batch of 3000 rows does not fit in it.
	if err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.db.ExecContext(ctx, "PRAGMA max_page_count = 1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Second), "198.51.100.7:123")
		s.Observe(&o)
	}
	waitFor(t, "a write error", func() bool { return s.WriteErrors() > 0 })
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := s.Close(cctx)
	if !errors.Is(err, errAborted) || !strings.Contains(err.Error(), "closed without writing 3000 observations") {
		t.Fatalf("Close = %v", err)
	}
	if s.RowsDropped() != 3000 {
		t.Errorf("RowsDropped = %d, want 3000", s.RowsDropped())
	}
}

func TestAddressModeAppliedBeforeStorage(t *testing.T) {
	for _, tc := range []struct {
		mode AddressMode
		in   string
		want func(a netip.Addr) bool
	}{
		{AddressFull, "[::ffff:198.51.100.77]:123", func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.77") }},
		{AddressTruncate, "198.51.100.77:123", func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.0") }},
		{AddressTruncate, "[2001:db8:1:2:3::4]:123", func(a netip.Addr) bool { return a == netip.MustParseAddr("2001:db8:1::") }},
		{AddressHash, "198.51.100.77:123", func(a netip.Addr) bool { return a.Is6() && a.As16()[0] == 0xfd }},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.AddressMode = tc.mode
			cfg.AddressKey = "a key of sixteen bytes or more"
			s := openStore(t, cfg)
			o := obs(t0, tc.in)
			s.Observe(&o)
			closeStore(t, s)
			r := openReader(t, cfg.Path)
			rows, err := r.ListClients(context.Background(), ListOptions{})
			if err != nil || len(rows) != 1 {
				t.Fatalf("ListClients = %v, %v", rows, err)
			}
			if !tc.want(rows[0].ClientIP) {
				t.Errorf("stored %v for %s", rows[0].ClientIP, tc.in)
			}
			// A reader with the same anonymizer finds the client by its real address.
			a, _ := NewAnonymizer(cfg.AddressMode, []byte(cfg.AddressKey))
			r.SetAnonymizer(a)
			if _, err := r.ClientDetail(context.Background(), netip.MustParseAddrPort(tc.in).Addr(), 0, 0); err != nil {
				t.Errorf("ClientDetail by real address: %v", err)
			}
			if n := queryInt(t, rawDB(t, cfg.Path), "SELECT count(*) FROM observations WHERE client = ?", addrBlob(rows[0].ClientIP)); n != 1 {
				t.Errorf("raw rows for stored address = %d", n)
			}
		})
	}
}

var _ ntp.Consumer = (*Store)(nil)

// TestDropLogRateLimited: however many rows a full queue drops, and in
// however many bursts, the drop warning is written at most once per
// period, with the count since the last one.
func TestDropLogRateLimited(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 10
	cfg.BatchSize = 10
	cfg.FlushInterval = 5 * time.Millisecond
	cfg.dropLogPeriod = time.Hour
	var logBuf syncBuffer
	s, err := Open(context.Background(), cfg, log.NewLogfmtLogger(&logBuf))
	if err != nil {
		t.Fatal(err)
	}
	for burst := 0; burst < 5; burst++ {
		release := blockWriter(t, s)
		for i := 0; i < 1000; i++ {
			o := obs(t0.Add(time.Duration(burst*1000+i)*time.Millisecond), "198.51.100.7:123")
			s.Observe(&o)
		}
		release()
		waitFor(t, "queue drained", func() bool { return s.QueueLength() == 0 })
	}
	closeStore(t, s)
	if got := s.RowsDropped(); got != 5*990 {
		t.Errorf("RowsDropped = %d, want %d", got, 5*990)
	}
	if n := strings.Count(logBuf.String(), `msg="observations dropped, database queue full"`); n != 1 {
		t.Errorf("%d drop warnings in an hour, want 1:\n%s", n, logBuf.String())
	}
}
