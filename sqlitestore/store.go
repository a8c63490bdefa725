// Package sqlitestore keeps ntp.Observations in SQLite: raw rows for a
// short retention, per-client summaries, and hourly per-client rollups kept
// longer. A Store is the single writer (an ntp.Consumer with a bounded
// queue and one writer goroutine); Readers answer queries on read-only
// connections, in the same process or another.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/ntpexp/ntpexp/ntp"
)

// Store writes observations. Create it with Open and stop it with Close.
type Store struct {
	cfg    Config
	path   string
	logger log.Logger
	anon   *Anonymizer
	db     *sql.DB
	lock   *writerLock // released when the writer has closed db

	// The queue: a ring of observation values, preallocated, guarded by mu.
	mu     sync.Mutex
	ring   []ntp.Observation
	head   int
	count  int
	closed bool

	kick  chan struct{} // a batch is ready, or the queue reached full (capacity 1)
	full  int           // queue length at which the writer writes without waiting
	reqs  chan request  // work for the writer goroutine
	stop  chan struct{} // closed by Close
	abort chan struct{} // closed when Close gives up waiting
	done  chan struct{} // closed when the writer goroutine has exited

	closeOnce sync.Once
	abortOnce sync.Once
	closeErr  error

	rowsWritten atomic.Uint64
	rowsDropped atomic.Uint64
	writeErrors atomic.Uint64

	w *writer // owned by the writer goroutine
}

type request struct {
	ctx   context.Context
	fn    func(ctx context.Context) error
	reply chan error
}

// Open opens or creates the database at cfg.Path, migrates its schema and
// starts the writer goroutine. Errors say what to fix: a missing or
// unwritable directory, a database from a newer ntpexp, a locked database.
func Open(ctx context.Context, cfg Config, logger log.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = log.NewNopLogger()
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("database.path %q: %w", cfg.Path, err)
	}
	anon, err := NewAnonymizer(cfg.AddressMode, []byte(cfg.AddressKey))
	if err != nil {
		return nil, fmt.Errorf("database.address_mode: %w", err)
	}
	if err := checkDir(path); err != nil {
		return nil, err
	}
	lock, err := lockWriter(path)
	if err != nil {
		return nil, err
	}
	created, err := createFile(path)
	if err != nil {
		lock.release()
		return nil, err
	}
	if !created {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			level.Warn(logger).Log("msg", "database file is readable by other users; chmod 600 it", "path", path, "mode", st.Mode().Perm().String())
		}
	}
	db, err := sql.Open(writerDriver, writerDSN(path))
	if err != nil {
		lock.release()
		return nil, explain(path, err)
	}
	// One connection: SQLite allows one writer at a time anyway, and a
	// single connection keeps prepared statements and per-connection
	// pragmas in one place.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	fail := func(err error) (*Store, error) {
		db.Close()
		lock.release()
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		return fail(explain(path, err))
	}
	var journal string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
		return fail(explain(path, err))
	}
	if journal != "wal" {
		return fail(fmt.Errorf("database %s: could not switch to WAL mode (journal_mode is %q); is it on a network file system?", path, journal))
	}
	if err := migrate(ctx, db, path); err != nil {
		return fail(err)
	}
	for _, p := range writerPragmas {
		if _, err := db.ExecContext(ctx, p); err != nil {
			return fail(explain(path, err))
		}
	}
	s := &Store{
		cfg:    cfg,
		path:   path,
		logger: logger,
		anon:   anon,
		db:     db,
		lock:   lock,
		ring:   make([]ntp.Observation, cfg.QueueSize),
		kick:   make(chan struct{}, 1),
		reqs:   make(chan request),
		stop:   make(chan struct{}),
		abort:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	w, err := newWriter(ctx, s)
	if err != nil {
		return fail(explain(path, err))
	}
	// Half of what one transaction can take: the writer waits between
	// transactions (defaultTxGap) only while the queue keeps room for
	// bursts.
	s.full = max(cfg.BatchSize, len(w.batch)/2)
	s.w = w
	level.Info(logger).Log("msg", "database opened", "path", path, "schema", SchemaVersion(), "created", created)
	go s.w.run()
	return s, nil
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Observe implements ntp.Consumer. It copies o into the queue, applying
// the address mode, without blocking and without allocating. When the
// queue is full, or the store is closed, it counts a drop instead.
func (s *Store) Observe(o *ntp.Observation) {
	if !o.Client.Addr().IsValid() {
		// No client address (none comes from a socket or a capture): the
		// row could never be stored, and its batch would be retried for
		// ever behind the NOT NULL client key.
		s.rowsDropped.Add(1)
		return
	}
	s.mu.Lock()
	if s.closed || s.count == len(s.ring) {
		s.mu.Unlock()
		s.rowsDropped.Add(1)
		return
	}
	i := s.head + s.count
	if i >= len(s.ring) {
		i -= len(s.ring)
	}
	slot := &s.ring[i]
	*slot = *o
	if s.anon.Mode() != AddressFull || slot.Client.Addr().Is4In6() || slot.Client.Addr().Zone() != "" {
		slot.Client = netip.AddrPortFrom(s.anon.Addr(slot.Client.Addr()), slot.Client.Port())
	}
	s.count++
	n := s.count
	s.mu.Unlock()
	if n == s.cfg.BatchSize || n == s.full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// take moves up to len(dst) queued observations into dst. It copies in
// chunks, releasing the lock in between, so that Observe on the packet
// path never waits for more than a chunk's copy.
func (s *Store) take(dst []ntp.Observation) int {
	const chunk = 512
	n := 0
	for n < len(dst) {
		s.mu.Lock()
		m := min(s.count, len(dst)-n, chunk)
		for i := 0; i < m; i++ {
			dst[n+i] = s.ring[s.head]
			s.ring[s.head] = ntp.Observation{} // drop references for the GC
			s.head++
			if s.head == len(s.ring) {
				s.head = 0
			}
		}
		s.count -= m
		s.mu.Unlock()
		n += m
		if m < chunk {
			break
		}
	}
	return n
}

// QueueLength returns how many observations wait for the writer.
func (s *Store) QueueLength() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// QueueCapacity returns the queue's size.
func (s *Store) QueueCapacity() int { return len(s.ring) }

// RowsWritten returns how many observations have been committed.
func (s *Store) RowsWritten() uint64 { return s.rowsWritten.Load() }

// RowsDropped returns how many observations were not written: queue full,
// store closed, abandoned when Close gave up, or without a client address.
func (s *Store) RowsDropped() uint64 { return s.rowsDropped.Load() }

// WriteErrors returns how many batch writes failed other than by lock
// contention (for example a full disk). Failed batches are retried.
func (s *Store) WriteErrors() uint64 { return s.writeErrors.Load() }

// DatabaseSizeBytes returns the size of the database and its WAL file.
func (s *Store) DatabaseSizeBytes() int64 {
	return fileSize(s.path) + fileSize(s.path+"-wal")
}

// Close stops accepting observations, writes every observation accepted
// before it, and closes the database. If ctx ends first (for example when
// writes keep failing), it abandons what is left, counts it as dropped and
// says so in the error. Close may be called more than once.
func (s *Store) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	select {
	case <-s.done:
	case <-ctx.Done():
		s.abortOnce.Do(func() {
			close(s.abort)
			s.w.end() // interrupts a statement waiting on a lock
		})
		<-s.done
	}
	return s.closeErr
}

// do runs fn in the writer goroutine, so that it never competes with
// batches for the write lock.
func (s *Store) do(ctx context.Context, fn func(ctx context.Context) error) error {
	r := request{ctx: ctx, fn: fn, reply: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.done:
		return ErrClosed
	case <-s.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Vacuum rebuilds the database file (VACUUM), returning free pages to the
// file system. It runs in the writer goroutine: batches wait meanwhile and
// the queue absorbs observations.
func (s *Store) Vacuum(ctx context.Context) error {
	return s.do(ctx, func(ctx context.Context) error {
		_, err := s.db.ExecContext(ctx, "VACUUM")
		return err
	})
}

// Backup writes a consistent copy of the database to dst (created 0600,
// must not exist) with VACUUM INTO on a read-only connection, so the
// writer keeps writing meanwhile.
func (s *Store) Backup(ctx context.Context, dst string) error {
	r, err := OpenReadOnly(s.path)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Backup(ctx, dst)
}

// Cleanup runs a retention and maintenance cycle now and waits for it.
func (s *Store) Cleanup(ctx context.Context) (CleanupResult, error) {
	ch := make(chan CleanupResult, 1)
	err := s.do(ctx, func(context.Context) error {
		s.w.startCleanup(ch)
		return nil
	})
	if err != nil {
		return CleanupResult{}, err
	}
	select {
	case res := <-ch:
		return res, res.err
	case <-ctx.Done():
		return CleanupResult{}, ctx.Err()
	case <-s.done:
		select {
		case res := <-ch:
			return res, res.err
		default:
		}
		return CleanupResult{}, ErrClosed
	}
}

var errAborted = errors.New("sqlitestore: close abandoned pending writes")
