package sqlitestore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ntpexp/ntpexp/ntp"
)

func TestRetentionDeletesInChunks(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = fixedNow
	cfg.cleanupChunk = 1000
	cfg.FlushInterval = 10 * time.Millisecond
	s := openStore(t, cfg)
	feed := func(n int, at time.Time, client string) {
		for i := 0; i < n; i++ {
			o := obs(at.Add(time.Duration(i)*time.Second/4), client)
			s.Observe(&o)
		}
	}
	feed(4500, t0.Add(-40*24*time.Hour), "192.0.2.1:123") // raw expired, rollup kept
	feed(100, t0.Add(-time.Hour), "192.0.2.2:123")        // kept
	feed(10, t0.Add(-500*24*time.Hour), "192.0.2.3:123")  // everything expired
	waitFor(t, "rows written", func() bool { return s.RowsWritten() == 4610 })
	res, err := s.Cleanup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cleanup: %+v", res)
	if res.ObservationsDeleted != 4510 || res.RollupsDeleted != 1 || res.DailyRollupsDeleted != 1 || res.ClientsDeleted != 1 {
		t.Errorf("deleted %+v, want 4510 observations, 1 rollup, 1 daily rollup, 1 client", res)
	}
	if res.Chunks < 5+2 {
		t.Errorf("cleanup used %d chunks, want >= 7 with a 1000-row chunk", res.Chunks)
	}
	db := rawDB(t, cfg.Path)
	if n := queryInt(t, db, "SELECT count(*) FROM observations"); n != 100 {
		t.Errorf("raw rows left = %d, want 100", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM observations WHERE client = ?", addrBlob(netipMust("192.0.2.2"))); n != 100 {
		t.Errorf("recent rows left = %d, want 100", n)
	}
	if n := queryInt(t, db, "SELECT sum(requests) FROM client_hours WHERE client = ?", addrBlob(netipMust("192.0.2.1"))); n != 4500 {
		t.Errorf("rollups of expired raw rows count %d requests, want 4500 (kept longer)", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM client_hours WHERE client = ?", addrBlob(netipMust("192.0.2.3"))); n != 0 {
		t.Errorf("rollups older than rollup retention: %d rows left", n)
	}
	if n := queryInt(t, db, "SELECT sum(requests) FROM client_days WHERE client = ?", addrBlob(netipMust("192.0.2.1"))); n != 4500 {
		t.Errorf("daily rollups of expired raw rows count %d requests, want 4500 (kept longer)", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM client_days WHERE client = ?", addrBlob(netipMust("192.0.2.3"))); n != 0 {
		t.Errorf("daily rollups older than rollup retention: %d rows left", n)
	}
	checkDailyRollups(t, db, false)
	if n := queryInt(t, db, "SELECT count(*) FROM clients"); n != 2 {
		t.Errorf("clients left = %d, want 2", n)
	}
	// Stats still see the expired raw rows through the rollups.
	r := openReader(t, cfg.Path)
	r.SetClock(fixedNow)
	st, err := r.Stats(context.Background(), 45*24)
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != 4600 {
		t.Errorf("Stats over 45 days: %d requests, want 4600", st.Requests)
	}
	// A second cycle finds nothing.
	res, err = s.Cleanup(context.Background())
	if err != nil || res.ObservationsDeleted != 0 {
		t.Errorf("second cleanup = %+v, %v", res, err)
	}
	closeStore(t, s)
}

// The vacuum phase gives back up to vacuumChunkPages pages a step (the
// pragma frees one page per row it returns), and the cycle reports its
// work.
func TestRetentionVacuumSteps(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = fixedNow
	cfg.cleanupChunk = 500
	cfg.FlushInterval = 10 * time.Millisecond
	s := openStore(t, cfg)
	const rows = 20000 // 40 chunks, about 600 pages
	for i := 0; i < rows; i++ {
		o := obs(t0.Add(-40*24*time.Hour+time.Duration(i)*time.Second), fmt.Sprintf("10.1.%d.%d:123", i%1000/250, i%250))
		s.Observe(&o)
	}
	waitFor(t, "rows written", func() bool { return s.RowsWritten() == rows })
	res, err := s.Cleanup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d chunks, %d pages freed in %d steps: %v of work in %v", res.Chunks, res.PagesFreed, res.vacuumSteps, res.work, res.wall)
	if res.ObservationsDeleted != rows || res.Chunks != rows/500 {
		t.Errorf("deleted %d observations in %d chunks, want %d in %d", res.ObservationsDeleted, res.Chunks, rows, rows/500)
	}
	if res.PagesFreed < 200 || res.vacuumSteps > int(res.PagesFreed)/vacuumChunkPages+1 {
		t.Errorf("%d pages freed in %d incremental_vacuum steps of up to %d", res.PagesFreed, res.vacuumSteps, vacuumChunkPages)
	}
	if res.work <= 0 || res.work > res.wall {
		t.Errorf("work %v, wall %v", res.work, res.wall)
	}
	db := rawDB(t, cfg.Path)
	if n := queryInt(t, db, "PRAGMA freelist_count"); n != 0 {
		t.Errorf("%d free pages left after the cycle", n)
	}
	closeStore(t, s)
}

func TestRetentionRunsOnSchedule(t *testing.T) {
	cfg := testConfig(t)
	cfg.Now = fixedNow
	cfg.CleanupInterval = 20 * time.Millisecond
	cfg.firstCleanup = 10 * time.Millisecond
	cfg.FlushInterval = 10 * time.Millisecond
	s := openStore(t, cfg)
	for i := 0; i < 50; i++ {
		o := obs(t0.Add(-40*24*time.Hour+time.Duration(i)*time.Second), "192.0.2.1:123")
		s.Observe(&o)
	}
	o := obs(t0, "192.0.2.2:123")
	s.Observe(&o)
	waitFor(t, "rows written", func() bool { return s.RowsWritten() == 51 })
	db := rawDB(t, cfg.Path)
	waitFor(t, "scheduled retention", func() bool {
		return queryInt(t, db, "SELECT count(*) FROM observations") == 1
	})
	closeStore(t, s)
}

func netipMust(s string) (a netipAddr) { return mustAddr(s) }

func TestConcurrentReadersDoNotStallWriter(t *testing.T) {
	cfg := testConfig(t)
	cfg.FlushInterval = 5 * time.Millisecond
	// A queue far smaller than the rows written (about 0.2 s of them):
	// a writer held up by the readers for longer drops rows, and the test
	// fails. TestExportHeldOpenDoesNotStallWriter holds a reader still.
	cfg.QueueSize = 4096
	s := openStore(t, cfg)
	r := openReader(t, cfg.Path)
	ctx := context.Background()
	const n = 20000
	var wg sync.WaitGroup
	done := make(chan struct{})
	var reads atomic.Int64
	var readErr atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 0; i < n; i++ {
			o := withOffset(obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.2.%d.%d:123", i%7, i%251)),
				ntp.MethodExchange, time.Duration(i)*time.Microsecond, 3*time.Millisecond)
			s.Observe(&o)
			if i%100 == 0 { // at most 20,000 rows/s
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := r.Export(ctx, ExportOptions{Format: FormatJSON}, io.Discard, nil); err != nil {
					readErr.Store(err)
					return
				}
				if _, err := r.ListClients(ctx, ListOptions{}); err != nil {
					readErr.Store(err)
					return
				}
				if _, err := r.Stats(ctx, 0); err != nil {
					readErr.Store(err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	wg.Wait()
	closeStore(t, s)
	if err := readErr.Load(); err != nil {
		t.Fatalf("reader: %v", err)
	}
	if s.RowsDropped() != 0 || s.WriteErrors() != 0 {
		t.Errorf("dropped %d, write errors %d", s.RowsDropped(), s.WriteErrors())
	}
	if got := queryInt(t, rawDB(t, cfg.Path), "SELECT count(*) FROM observations"); got != n {
		t.Errorf("rows = %d, want %d", got, n)
	}
	t.Logf("%d read rounds during the writes", reads.Load())
	if reads.Load() == 0 {
		t.Error("no read completed")
	}
}

// blockingWriter holds an export in the middle of its read transaction:
// its first Write signals started and waits for release.
type blockingWriter struct {
	started, release chan struct{}
	once             sync.Once
	n                int
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() {
		close(b.started)
		<-b.release
	})
	b.n += len(p)
	return len(p), nil
}

// TestExportHeldOpenDoesNotStallWriter: while an export sits in the
// middle of its read transaction (its reader stopped reading), the writer
// commits batch after batch, and the export still sees only its snapshot.
func TestExportHeldOpenDoesNotStallWriter(t *testing.T) {
	cfg := testConfig(t)
	cfg.FlushInterval = 5 * time.Millisecond
	s := openStore(t, cfg)
	const before = 30000
	for i := 0; i < before; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.3.%d.%d:123", i%5, i%199))
		s.Observe(&o)
	}
	waitFor(t, "first rows written", func() bool { return s.RowsWritten() == before })
	r := openReader(t, cfg.Path)
	bw := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(bw.release) }) }
	t.Cleanup(release)
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := r.Export(context.Background(), ExportOptions{Format: FormatNDJSON}, bw, nil)
		done <- result{n, err}
	}()
	select {
	case <-bw.started:
	case <-time.After(30 * time.Second):
		t.Fatal("export never wrote")
	}
	// The export is stuck in its read transaction. 10 more batches:
	for b := 0; b < 10; b++ {
		for i := 0; i < 1000; i++ {
			o := obs(t0.Add(time.Hour+time.Duration(b*1000+i)*time.Millisecond), fmt.Sprintf("10.4.%d.%d:123", b, i%211))
			s.Observe(&o)
		}
		want := uint64(before + (b+1)*1000)
		waitFor(t, "rows written while an export is held open", func() bool { return s.RowsWritten() == want })
	}
	release()
	res := <-done
	if res.err != nil || res.n != before {
		t.Errorf("export: %d rows, %v; want its snapshot's %d", res.n, res.err, before)
	}
	if s.RowsDropped() != 0 || s.WriteErrors() != 0 {
		t.Errorf("dropped %d, write errors %d", s.RowsDropped(), s.WriteErrors())
	}
	closeStore(t, s)
}

func TestBackupWhileWriting(t *testing.T) {
	cfg := testConfig(t)
	cfg.FlushInterval = 5 * time.Millisecond
	s := openStore(t, cfg)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			o := obs(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("10.3.0.%d:123", i%200))
			s.Observe(&o)
			if i%500 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	waitFor(t, "some rows", func() bool { return s.RowsWritten() > 2000 })
	dst := filepath.Join(t.TempDir(), "backup.db")
	if err := s.Backup(context.Background(), dst); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	close(stop)
	wg.Wait()
	closeStore(t, s)
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("backup mode = %v, want 0600", st.Mode().Perm())
	}
	db := rawDB(t, dst)
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check = %q, %v", ok, err)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM observations"); n < 2000 {
		t.Errorf("backup has %d rows", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM observations") - queryInt(t, db, "SELECT sum(requests) FROM client_hours"); n != 0 {
		t.Errorf("backup is not a consistent snapshot: raw and rollups differ by %d", n)
	}
	// The backup is a usable ntpexp database.
	r := openReader(t, dst)
	if _, err := r.ListClients(context.Background(), ListOptions{}); err != nil {
		t.Errorf("reading the backup: %v", err)
	}
	// An existing destination is refused.
	if err := r.Backup(context.Background(), dst); err == nil {
		t.Error("Backup overwrote an existing file")
	}
}

func TestVacuum(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg)
	for i := 0; i < 500; i++ {
		o := obs(t0.Add(time.Duration(i)*time.Second), "192.0.2.9:123")
		s.Observe(&o)
	}
	waitFor(t, "rows", func() bool { return s.RowsWritten() == 500 })
	if err := s.Vacuum(context.Background()); err != nil {
		t.Fatalf("Vacuum: %v", err)
	}
	if s.DatabaseSizeBytes() <= 0 {
		t.Error("DatabaseSizeBytes <= 0")
	}
	closeStore(t, s)
	if err := s.Vacuum(context.Background()); err != ErrClosed {
		t.Errorf("Vacuum after Close = %v, want ErrClosed", err)
	}
}
